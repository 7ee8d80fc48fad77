"""How the engine runs a query: the models, the limits, and how much output it keeps."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shesha.rlm.prompting import PromptStyle
from shesha.rlm.strategy import StrategyChoice
from shesha.rlm.usage import QueryLimits


class EngineConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    sub_model: str | None = Field(None, description="for llm_query; default: the root model")
    limits: QueryLimits = Field(default_factory=QueryLimits)
    prompts_dir: str | None = None
    prompt_style: PromptStyle = Field("full", description="compact: for small local models")
    max_output_chars: int = Field(20_000, ge=200, description="printed output kept per step")
    subcall_chars: int = Field(100_000, description="chunk size the prompt suggests")
    max_subcall_chars: int | None = Field(
        None, description="larger llm_query content is refused with advice to chunk it"
    )
    keep_full_outputs: int = Field(2, ge=0, description="recent steps whose output stays whole")
    show_whole_chars: int = Field(
        0,
        ge=0,
        description="documents this short (in all) are printed whole before the first step "
        "(0: never; the local profile sets it)",
    )
    first_passages_chars: int = Field(
        0,
        ge=0,
        description="past the window, the first read is of the best passages up to this many "
        "characters; NOT FOUND widens to the window (0: the window at once; the local "
        "profile sets it)",
    )
    old_output_chars: int = Field(1_000, ge=100, description="older outputs are cut to this")
    strategy: StrategyChoice = Field(
        "auto",
        description="read, retrieve, count, map, code, or auto: the engine chooses "
        "(see shesha.rlm.strategy)",
    )
    refuse_unseen: bool = Field(
        False,
        description="refuse an answer typed before any output could show it (a small model's "
        "guess from the prompt's example; the local profile sets it)",
    )

    output_schema: dict[str, Any] | None = Field(
        None, description="a JSON schema the answer must match (a typed answer)"
    )
    verify_citations: bool = Field(
        False, description="ask the sub-model whether each found quote supports the answer"
    )
    cache_salt: str = Field(
        "", description="the settings that change a sub-call's answer, for the cache key"
    )

    @property
    def effective_sub_model(self) -> str:
        return self.sub_model or self.model
