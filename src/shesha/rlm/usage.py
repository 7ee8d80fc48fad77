"""How a query ended (``QueryStatus``), the limits it runs under, and what it used."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shesha.bounds import AtLeastOne, Count, Dollars, Seconds, StepCount, Tokens

QueryStatus = Literal["success", "max_iterations", "stalled", "budget_exceeded", "timeout", "error"]
"""``stalled``: the model repeated one failing step until the loop stopped it, and its
last call gave no FINAL."""


class QueryLimits(BaseModel):
    """Per-query limits. ``None`` means no limit. Every field is also a setting (see
    ``shesha.config.Settings``) and a per-query override."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_iterations: StepCount = Field(20, description="root-model steps")
    max_subcalls: Count | None = Field(1000, description="llm_query calls in all")
    max_tokens: Tokens | None = Field(None, description="root and sub tokens, added up")
    max_cost_usd: Dollars | None = Field(None, description="root and sub cost, added up")
    max_wall_s: Seconds | None = Field(None, description="wall time for the whole query")
    exec_timeout_s: Seconds | None = Field(
        None, description="per code execution (default: the sandbox's, 60 s)"
    )
    subcall_concurrency: AtLeastOne = Field(16, description="llm_query_batched calls at once")
    max_tool_calls: Count | None = Field(100, description="host tool calls in all")


class UsageBucket(BaseModel):
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0
    """None when any call's price was unknown."""

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, prompt: int, completion: int, cost: float | None) -> None:
        self.calls += 1
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        if cost is None or self.cost_usd is None:
            self.cost_usd = None
        else:
            self.cost_usd += cost


class Usage(BaseModel):
    root: UsageBucket = Field(default_factory=UsageBucket)
    sub: UsageBucket = Field(default_factory=UsageBucket)
    known_cost_usd: float = 0.0
    """The cost of the calls whose price is known (what max_cost_usd is checked against)."""
    cached_subcalls: int = 0
    """Sub-calls answered from the project's cache (or by an identical one in flight)."""
    saved_tokens: int = 0
    saved_cost_usd: float = 0.0
    """What the cached sub-calls cost when they were made (a known price only)."""

    def add_cached(self, tokens: int, cost: float | None) -> None:
        self.cached_subcalls += 1
        self.saved_tokens += tokens
        self.saved_cost_usd += cost or 0.0

    @property
    def total_tokens(self) -> int:
        return self.root.tokens + self.sub.tokens

    @property
    def total_cost_usd(self) -> float | None:
        if self.root.cost_usd is None or self.sub.cost_usd is None:
            return None
        return self.root.cost_usd + self.sub.cost_usd
