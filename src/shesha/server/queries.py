"""Queries a server runs at once: a fair queue in front of the sandbox pool, each
query's events kept for anyone who follows it, and cancellation.

Everything here runs on the server's event loop. A query waits in line (first come,
first served) until one of ``slots`` is free, so that more queries than containers never
pile up inside the pool; its followers are told where it stands.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from shesha.conversation import Conversation
from shesha.errors import SheshaError
from shesha.rlm.events import LLMRequest, TraceEvent
from shesha.rlm.result import QueryResult

RunState = Literal["queued", "running", "done", "cancelled", "failed"]
Runner = Callable[["QueryRun"], Awaitable[QueryResult]]
"""Runs one query to its result, handing each event to ``run.publish``."""

KEEP_FINISHED = 200
"""Finished queries a manager remembers (their results and events), oldest dropped."""


def event_record(event: TraceEvent) -> dict[str, Any]:
    """An engine event as a stream sends it: a root call's messages are left out (they
    repeat the whole history each step; the trace keeps them)."""
    if isinstance(event, LLMRequest):
        return event.model_dump(mode="json", exclude={"messages"})
    return event.model_dump(mode="json")


@dataclass
class QueryRun:
    """One query the server was asked: where it stands, and every event so far."""

    id: str
    project: str
    question: str
    overrides: dict[str, Any]
    output: dict[str, Any] | None = None
    """A JSON schema the answer must match."""
    conversation: Conversation | None = None
    """The conversation this question follows up, if any."""
    state: RunState = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    result: QueryResult | None = None
    error: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def publish(self, event: TraceEvent) -> None:
        """The engine's ``on_event``: record the event and wake the followers."""
        self._add(event_record(event))

    def _add(self, record: dict[str, Any]) -> None:
        self.events.append(record)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    @property
    def done(self) -> bool:
        return self.state in ("done", "cancelled", "failed")

    async def follow(self, start: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Every event from ``start`` on, as it comes, until the query has ended."""
        index = start
        while True:
            async with self._changed:
                while index >= len(self.events) and not self.done:
                    await self._changed.wait()
            while index < len(self.events):
                yield self.events[index]
                index += 1
            if self.done and index >= len(self.events):
                return

    def summary(self) -> dict[str, Any]:
        """What ``GET /queries/{id}`` shows."""
        return {
            "id": self.id,
            "project": self.project,
            "question": self.question,
            "conversation": self.conversation.id if self.conversation else None,
            "state": self.state,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "events": len(self.events),
            "error": self.error,
            "result": self.result.model_dump(mode="json") if self.result else None,
        }


class QueryManager:
    """Starts queries as slots free up, first come first served."""

    def __init__(self, runner: Runner, slots: int) -> None:
        if slots < 1:
            raise ValueError("a query manager needs at least one slot")
        self._runner = runner
        self.slots = slots
        self._waiting: deque[QueryRun] = deque()
        self._running = 0
        self._runs: dict[str, QueryRun] = {}

    def submit(
        self,
        project: str,
        question: str,
        overrides: dict[str, Any],
        output: dict[str, Any] | None = None,
        conversation: Conversation | None = None,
    ) -> QueryRun:
        run = QueryRun(secrets.token_hex(8), project, question, overrides, output, conversation)
        self._runs[run.id] = run
        self._forget_old()
        self._waiting.append(run)
        self._pump()
        return run

    def get(self, run_id: str) -> QueryRun | None:
        return self._runs.get(run_id)

    def list(self) -> list[QueryRun]:
        return list(self._runs.values())

    def waiting(self) -> int:
        return len(self._waiting)

    def cancel(self, run_id: str) -> QueryRun | None:
        """Stop a query: take it out of the line, or cancel its task (which stops its
        sandbox code at once). Cancelling a finished query changes nothing."""
        run = self._runs.get(run_id)
        if run is None or run.done:
            return run
        if run in self._waiting:
            self._waiting.remove(run)
            self._finish(run, "cancelled")
            self._announce()
        elif run.task is not None:
            run.task.cancel()
        return run

    async def shutdown(self) -> None:
        """Cancel everything still queued or running, and wait for it to end."""
        for run in list(self._waiting):
            self.cancel(run.id)
        tasks = [r.task for r in self._runs.values() if r.task is not None and not r.done]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the line -----------------------------------------------------------------------

    def _pump(self) -> None:
        while self._running < self.slots and self._waiting:
            run = self._waiting.popleft()
            self._running += 1
            run.state, run.started = "running", time.time()
            run._add({"type": "started", "ts": run.started})
            run.task = asyncio.get_running_loop().create_task(self._execute(run))
        self._announce()

    def _announce(self) -> None:
        for position, run in enumerate(self._waiting, start=1):
            run._add(
                {"type": "queued", "ts": time.time(), "position": position, "ahead": position - 1}
            )

    async def _execute(self, run: QueryRun) -> None:
        try:
            run.result = await self._runner(run)
            self._finish(run, "done")
        except asyncio.CancelledError:
            self._finish(run, "cancelled")
        except SheshaError as e:
            run.error = str(e)
            self._finish(run, "failed")
        except Exception as e:  # noqa: BLE001  one query's bug must not take the server down
            run.error = f"{type(e).__name__}: {e}"
            self._finish(run, "failed")
        finally:
            self._running -= 1
            self._pump()

    def _finish(self, run: QueryRun, state: RunState) -> None:
        run.state, run.finished = state, time.time()
        record: dict[str, Any] = {"type": state, "ts": run.finished}
        if run.result is not None:
            record["result"] = run.result.model_dump(mode="json")
        if run.error is not None:
            record["error"] = run.error
        run._add(record)

    def _forget_old(self) -> None:
        finished = [r for r in self._runs.values() if r.done]
        for run in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._runs[run.id]
