"""The LLM types the engine depends on. Importing this does not import LiteLLM."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

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
    cached_prompt_tokens: int = 0
    """Of ``prompt_tokens``, those the server had read before and reused (its prompt
    cache); 0 when it does not say."""


@dataclass(frozen=True)
class Choices:
    """The reply is exactly one of ``options``."""

    options: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.options or not all(o.strip() for o in self.options):
            raise ValueError("Choices needs at least one option, and no empty one")


@dataclass(frozen=True)
class NotedChoice:
    """The reply is a short note on the content, then one of ``options``, as two lines:
    ``Says: <a few words>`` and ``Label: <option>``. A small model chooses better having
    first said what it read (the local model labelled 9 of 10 short messages right,
    against 5 of 10 asked for the bare label)."""

    options: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.options or not all(o.strip() for o in self.options):
            raise ValueError("NotedChoice needs at least one option, and no empty one")


NOTE_PREFIX = "Says: "
LABEL_PREFIX = "Label: "
MAX_NOTE_CHARS = 160


@dataclass(frozen=True)
class JsonSchema:
    """The reply is one JSON value that validates against ``schema``."""

    schema: Mapping[str, Any] = field(hash=False)
    name: str = "reply"


@dataclass(frozen=True)
class Grammar:
    """The reply is a sentence of a GBNF grammar (llama.cpp's format; root rule ``root``)."""

    gbnf: str


OutputConstraint = Choices | NotedChoice | JsonSchema | Grammar
"""What a call may ask the reply to be. A server that can enforce it does (llama.cpp:
a grammar; providers with structured output: ``response_format``); one that cannot is
asked plainly, and the caller still checks the reply."""

ConstraintDialect = Literal["llama.cpp", "response_format", "none"]
"""How an endpoint is told a constraint: llama.cpp's own ``grammar`` and JSON-schema
fields, the OpenAI-style ``response_format`` (for a schema, where LiteLLM says the model
supports it), or not at all."""


class ChatModel(Protocol):
    """What the engine needs of an LLM: one chat completion, for a given model, with an
    optional constraint on the reply."""

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        model: str,
        constraint: OutputConstraint | None = None,
    ) -> Completion: ...


class SyncCalls:
    """``complete_sync``: a client's ``complete``, for code that is not async."""

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        model: str,
        constraint: OutputConstraint | None = None,
    ) -> Completion:
        raise NotImplementedError

    def complete_sync(
        self,
        messages: Sequence[Message],
        *,
        model: str,
        constraint: OutputConstraint | None = None,
    ) -> Completion:
        """The same call, for code that is not async."""
        return asyncio.run(self.complete(messages, model=model, constraint=constraint))


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
    constraints: ConstraintDialect = Field(
        "response_format", description="how the endpoint is told an output constraint"
    )
