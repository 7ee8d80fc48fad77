"""A rate limit on model calls: at most N calls a minute to each model, evenly spaced.

``Pace`` is the seam: ``wait(model)`` returns when a call to ``model`` may go. ``CallRate``
keeps the schedule in this process (every query of one ``Shesha``, whatever thread or
event loop it runs on); the Ray executor keeps one schedule for a whole cluster behind the
same Protocol. ``PacedModel`` puts a pace in front of any ``ChatModel``.

Calls are spaced, not burst: with 600 calls a minute, one starts every 0.1 s at most. A
provider's own limit is usually counted over a minute, so spacing stays under it without
knowing where its window starts; it costs nothing while calls come slower than the rate.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from shesha.llm.types import ChatModel, Completion, Message, OutputConstraint, SyncCalls


class Pace(Protocol):
    """When a call to a model may go."""

    async def wait(self, model: str) -> None: ...


class CallRate:
    """At most ``calls_per_minute`` calls to each model, one every 60 / N seconds.

    ``reserve`` books the next free moment and says how long to wait for it; it is the
    whole schedule, so a process that serves others (the Ray executor's keeper) can run it
    and hand out the waits.
    """

    def __init__(
        self, calls_per_minute: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not calls_per_minute > 0:
            raise ValueError(f"calls_per_minute must be more than 0, not {calls_per_minute}")
        self.calls_per_minute = calls_per_minute
        self.interval_s = 60.0 / calls_per_minute
        self._clock = clock
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()  # queries of one Shesha may run on several threads

    def reserve(self, model: str) -> float:
        """Book the next moment a call to ``model`` may go: the seconds until then."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next.get(model, now))
            self._next[model] = start + self.interval_s
            return start - now

    async def wait(self, model: str) -> None:
        delay = self.reserve(model)
        if delay > 0:
            await asyncio.sleep(delay)


class PacedModel(SyncCalls):
    """``inner``, with every call waiting for ``pace`` first."""

    def __init__(self, inner: ChatModel, pace: Pace) -> None:
        self.inner = inner
        self.pace = pace
        self.name = str(getattr(inner, "name", "custom"))

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        model: str,
        constraint: OutputConstraint | None = None,
    ) -> Completion:
        await self.pace.wait(model)
        return await self.inner.complete(messages, model=model, constraint=constraint)
