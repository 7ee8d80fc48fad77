"""One query's spending against its limits: tokens, cost, sub-calls and wall time."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from shesha.llm.types import Completion
from shesha.rlm.usage import QueryLimits, QueryStatus, Usage


class LimitReached(Exception):
    """The next call would pass a limit: the query ends with ``status`` and ``limit``."""

    def __init__(self, status: QueryStatus, limit: str, message: str) -> None:
        super().__init__(message)
        self.status, self.limit, self.message = status, limit, message


@dataclass
class Budget:
    """Checked before every root call and every batch of sub-calls. Once a limit is
    reached, every later check raises the same ``LimitReached``."""

    limits: QueryLimits
    started: float = field(default_factory=time.monotonic)
    usage: Usage = field(default_factory=Usage)
    subcalls: int = 0
    reached: LimitReached | None = None
    _unpriced_seen: bool = False

    def check(self, upcoming_subcalls: int = 0) -> None:
        """Raise ``LimitReached`` when the next call(s) would pass a limit."""
        if self.reached is not None:
            raise self.reached
        hit = self._hit(upcoming_subcalls)
        if hit is not None:
            self.reached = hit
            raise hit

    def _hit(self, upcoming_subcalls: int) -> LimitReached | None:
        lim = self.limits
        if lim.max_wall_s is not None and self.elapsed_s >= lim.max_wall_s:
            return LimitReached("timeout", "max_wall_s", f"the query ran {lim.max_wall_s:g} s")
        if lim.max_tokens is not None and self.usage.total_tokens >= lim.max_tokens:
            return LimitReached(
                "budget_exceeded", "max_tokens", f"{self.usage.total_tokens:,} tokens used"
            )
        if lim.max_cost_usd is not None and self.usage.known_cost_usd >= lim.max_cost_usd:
            return LimitReached(
                "budget_exceeded", "max_cost_usd", f"${self.usage.known_cost_usd:.4f} spent"
            )
        if (
            upcoming_subcalls
            and lim.max_subcalls is not None
            and self.subcalls + upcoming_subcalls > lim.max_subcalls
        ):
            return LimitReached(
                "budget_exceeded",
                "max_subcalls",
                f"{self.subcalls} sub-calls made, {upcoming_subcalls} more asked for, "
                f"limit {lim.max_subcalls}",
            )
        return None

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def account(self, bucket: Literal["root", "sub"], c: Completion) -> str | None:
        """Add a call's tokens and cost. Returns a warning, once, when a cost limit is
        set but this model's price is unknown, so its calls cannot count against it."""
        target = self.usage.root if bucket == "root" else self.usage.sub
        target.add(c.prompt_tokens, c.completion_tokens, c.cost_usd)
        if c.cost_usd is not None:
            self.usage.known_cost_usd += c.cost_usd
            return None
        if self.limits.max_cost_usd is None or self._unpriced_seen:
            return None
        self._unpriced_seen = True
        return f"no price is known for {c.model}: max_cost_usd cannot count its calls"
