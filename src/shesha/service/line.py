"""The fair line in front of the sandbox pool: every query a service runs, whatever its
entry point, and every MCP session that holds a sandbox, waits here for one of ``slots``.

Everything here runs on one event loop. First come, first served: more work than
sandboxes never piles up inside the pool (where it would end in ``SandboxBusyError``).
Each entry keeps its events for anyone who follows it; it can be cancelled.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shesha.conversation import Conversation
from shesha.errors import SheshaError
from shesha.rlm.events import LLMRequest, TraceEvent
from shesha.rlm.result import QueryResult

EntryState = Literal["queued", "running", "done", "cancelled", "failed"]
EntryKind = Literal["query", "session"]
Runner = Callable[["QueuedQuery"], Awaitable[QueryResult]]
"""Runs one query to its result, handing each event to ``queued.publish``."""

KEEP_FINISHED = 200
"""Finished entries a line remembers (their results and events), oldest dropped."""


class LineEvent(BaseModel):
    """What the line says about an entry, beside the engine's events in its stream."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    ts: float = Field(default_factory=time.time)


class Queued(LineEvent):
    """Waiting: ``position`` 1 is next."""

    type: Literal["queued"] = "queued"
    position: int
    ahead: int


class Started(LineEvent):
    """A slot is this entry's."""

    type: Literal["started"] = "started"


class Done(LineEvent):
    """The query answered (a session: it was closed)."""

    type: Literal["done"] = "done"
    result: dict[str, Any] | None = None


class Cancelled(LineEvent):
    type: Literal["cancelled"] = "cancelled"


class QueryFailed(LineEvent):
    """The query raised; ``error`` says what, in the CLI's words."""

    type: Literal["failed"] = "failed"
    error: str


Ended = Done | Cancelled | QueryFailed


def event_record(event: TraceEvent | LineEvent) -> dict[str, Any]:
    """An event as a stream sends it: a root call's messages are left out (they repeat
    the whole history each step; the trace keeps them)."""
    if isinstance(event, LLMRequest):
        return event.model_dump(mode="json", exclude={"messages"})
    return event.model_dump(mode="json", exclude_none=isinstance(event, Done))


@dataclass
class QueuedQuery:
    """One entry of the line (a query, or an MCP session holding a sandbox): where it
    stands, and every event so far."""

    id: str
    project: str
    question: str
    overrides: dict[str, Any]
    output: dict[str, Any] | None = None
    """A JSON schema the answer must match."""
    conversation: Conversation | None = None
    """The conversation this question follows up, if any."""
    kind: EntryKind = "query"
    state: EntryState = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    result: QueryResult | None = None
    error: str | None = None
    failure: BaseException | None = None
    """What a failed query raised, for a caller in this process to raise again."""
    events: list[dict[str, Any]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _admitted: asyncio.Event = field(default_factory=asyncio.Event)
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    _ended: asyncio.Event = field(default_factory=asyncio.Event)

    def publish(self, event: TraceEvent | LineEvent) -> None:
        """The engine's ``on_event``: record the event and wake the followers."""
        self.events.append(event_record(event))
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    @property
    def done(self) -> bool:
        return self.state in ("done", "cancelled", "failed")

    async def follow(self, start: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Every event from ``start`` on, as it comes, until the entry has ended."""
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

    async def wait(self) -> QueryResult:
        """The query's result once it has ended; what it raised if it failed."""
        await self._ended.wait()
        if self.result is not None:
            return self.result
        if self.failure is not None:
            raise self.failure
        raise SheshaError(
            f"The query {self.id} was {self.state}.", hint="Ask again to run it anew."
        )

    def summary(self) -> dict[str, Any]:
        """What ``GET /queries/{id}`` shows."""
        return {
            "id": self.id,
            "kind": self.kind,
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


class QueryLine:
    """Starts queries and sessions as slots free up, first come first served."""

    def __init__(self, runner: Runner, slots: int) -> None:
        if slots < 1:
            raise ValueError("a query line needs at least one slot")
        self._runner = runner
        self.slots = slots
        self._waiting: deque[QueuedQuery] = deque()
        self._running = 0
        self._queries: dict[str, QueuedQuery] = {}

    def submit(
        self,
        project: str,
        question: str,
        overrides: dict[str, Any],
        output: dict[str, Any] | None = None,
        conversation: Conversation | None = None,
    ) -> QueuedQuery:
        """Put a query in line; it starts when a slot is free."""
        queued = QueuedQuery(
            secrets.token_hex(8), project, question, overrides, output, conversation
        )
        return self._enter(queued)

    async def hold(self, project: str, what: str) -> QueuedQuery:
        """Wait in line like a query, then hold a slot until ``release``: for an MCP
        session, which keeps a sandbox between its calls. A caller that gives up while
        waiting leaves the line."""
        queued = self._enter(QueuedQuery(secrets.token_hex(8), project, what, {}, kind="session"))
        try:
            await queued._admitted.wait()
        except asyncio.CancelledError:
            self.cancel(queued.id)
            raise
        return queued

    def release(self, queued: QueuedQuery) -> None:
        """Give back a slot that ``hold`` took."""
        queued._released.set()

    def get(self, query_id: str) -> QueuedQuery | None:
        return self._queries.get(query_id)

    def list(self) -> list[QueuedQuery]:
        return list(self._queries.values())

    def waiting(self) -> int:
        return len(self._waiting)

    def running(self) -> int:
        return self._running

    def cancel(self, query_id: str) -> QueuedQuery | None:
        """Stop an entry: take it out of the line, or cancel its task (which stops its
        sandbox code at once). Cancelling a finished entry changes nothing."""
        queued = self._queries.get(query_id)
        if queued is None or queued.done:
            return queued
        if queued in self._waiting:
            self._waiting.remove(queued)
            self._finish(queued, Cancelled())
            self._announce()
        elif queued.task is not None:
            queued.task.cancel()
        return queued

    async def shutdown(self) -> None:
        """Cancel everything still queued or running, and wait for it to end."""
        for queued in list(self._waiting):
            self.cancel(queued.id)
        tasks = [r.task for r in self._queries.values() if r.task is not None and not r.done]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the line -----------------------------------------------------------------------

    def _enter(self, queued: QueuedQuery) -> QueuedQuery:
        self._queries[queued.id] = queued
        self._forget_old()
        self._waiting.append(queued)
        self._pump()
        return queued

    def _pump(self) -> None:
        while self._running < self.slots and self._waiting:
            queued = self._waiting.popleft()
            self._running += 1
            queued.state, queued.started = "running", time.time()
            queued.publish(Started(ts=queued.started))
            queued.task = asyncio.get_running_loop().create_task(self._execute(queued))
        self._announce()

    def _announce(self) -> None:
        for position, queued in enumerate(self._waiting, start=1):
            queued.publish(Queued(position=position, ahead=position - 1))

    async def _execute(self, queued: QueuedQuery) -> None:
        try:
            if queued.kind == "session":
                queued._admitted.set()
                await queued._released.wait()
                self._finish(queued, Done())
            else:
                queued.result = await self._runner(queued)
                self._finish(queued, Done(result=queued.result.model_dump(mode="json")))
        except asyncio.CancelledError:
            self._finish(queued, Cancelled())
        except SheshaError as e:
            queued.error, queued.failure = str(e), e
            self._finish(queued, QueryFailed(error=queued.error))
        except Exception as e:  # noqa: BLE001  one query's bug must not take the server down
            queued.error, queued.failure = f"{type(e).__name__}: {e}", e
            self._finish(queued, QueryFailed(error=queued.error))
        finally:
            self._running -= 1
            self._pump()

    def _finish(self, queued: QueuedQuery, ended: Ended) -> None:
        queued.state, queued.finished = ended.type, ended.ts
        queued.publish(ended)
        queued._ended.set()

    def _forget_old(self) -> None:
        finished = [r for r in self._queries.values() if r.done]
        for queued in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._queries[queued.id]
