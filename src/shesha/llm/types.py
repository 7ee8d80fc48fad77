"""The LLM types the engine depends on. Importing this does not import LiteLLM."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from shesha.bounds import Count, Seconds, Temperature

Message = dict[str, str]
DEFAULT_LLM_TIMEOUT_S = 120.0
DEFAULT_RETRIES = 3


class Price(BaseModel):
    """A user's price for a model that LiteLLM does not know, in USD per million tokens."""

    model_config = ConfigDict(frozen=True)

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    """None when the model has no known price: unknown, not zero."""
    duration_s: float


class ChatModel(Protocol):
    """What the engine needs of an LLM: one chat completion, for a given model."""

    async def complete(self, messages: Sequence[Message], *, model: str) -> Completion: ...


class LLMSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    api_base: str | None = None
    api_key: SecretStr | None = None
    timeout_s: Seconds = Field(DEFAULT_LLM_TIMEOUT_S, description="per call")
    num_retries: Count = Field(DEFAULT_RETRIES, description="on rate limits and transient errors")
    temperature: Temperature | None = None
    max_output_tokens: int | None = None
    prices: dict[str, Price] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict, description="passed to LiteLLM")
