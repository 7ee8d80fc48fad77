"""Conversations: follow-up questions that see the earlier questions and answers, and run
in the same sandbox namespace, so that what earlier code built (an index, a list of
matches) is still there.

A conversation is recorded with its project (``shesha.storage.conversations``). It
survives a restart: the namespace is rebuilt by replaying the recorded code
(``shesha.rlm.replay``).
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

from shesha.rlm.engine import ExecSession
from shesha.rlm.prompting import PromptSet
from shesha.rlm.replay import replay
from shesha.rlm.result import QueryResult
from shesha.storage import StoredProject
from shesha.storage.conversations import Exchange, Record, load, new_record, save
from shesha.sync import run_sync


class ConversedProject(Protocol):
    """What a conversation needs of its project (``shesha.api.Project``)."""

    @property
    def name(self) -> str: ...

    @property
    def stored(self) -> StoredProject: ...

    async def aquery(
        self,
        question: str,
        *,
        session: ExecSession | None = ...,
        earlier: Sequence[tuple[str, str | None]] = ...,
        **overrides: Any,
    ) -> QueryResult: ...

    def open_session(self) -> ExecSession:
        """A sandbox session with the project's documents loaded."""
        ...

    def prompts(self) -> PromptSet:
        """The prompts its queries run with (a replay finds sub-calls by them)."""
        ...


class Conversation:
    """Questions about one project, each seeing the ones before. ``close()`` (or the
    ``with`` block) gives its sandbox back; ``Project.chat(id)`` takes it up again."""

    def __init__(
        self, project: ConversedProject, record: Record, *, keep_sandbox: bool = True
    ) -> None:
        self.project = project
        self.record = record
        self.keep_sandbox = keep_sandbox
        """False (a server's conversations): the sandbox goes back to the pool after each
        question, and the next one rebuilds the namespace by replaying."""
        self._session: ExecSession | None = None
        self._lock = asyncio.Lock()

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def exchanges(self) -> list[Exchange]:
        return list(self.record.exchanges)

    def ask(self, question: str, **overrides: Any) -> QueryResult:
        return run_sync(self.aask(question, **overrides))

    async def aask(self, question: str, **overrides: Any) -> QueryResult:
        """A follow-up: earlier questions and answers are in its prompt, and its code runs
        in the conversation's namespace."""
        async with self._lock:
            session = await self._sandbox()
            losses = session.losses
            earlier = [(e.question, e.answer) for e in self.record.exchanges]
            try:
                result = await self.project.aquery(
                    question, session=session, earlier=earlier, **overrides
                )
            except BaseException:
                self.close()  # cancelled mid-code: the container is gone
                raise
            if session.losses != losses or not self.keep_sandbox:
                # The container was lost (a timeout, out of memory) and replaced with an
                # empty namespace, or is not ours to keep: the next question rebuilds the
                # namespace by replaying.
                self.close()
            self.record.exchanges.append(
                Exchange(question, result.answer, result.status, result.trace_path)
            )
            await asyncio.to_thread(save, self.project.stored.path, self.record)
            return result

    async def _sandbox(self) -> ExecSession:
        if self._session is None:
            self._session = await asyncio.to_thread(self.project.open_session)
            if self.record.exchanges:  # taken up again: rebuild the namespace
                traces = [e.trace for e in self.record.exchanges if e.trace]
                await replay(self._session, traces, self.project.prompts())
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> Conversation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OpenConversations:
    """The conversations a server is holding, shared by its requests so that follow-ups
    to one conversation run one at a time. They hold no sandbox between questions. The
    least recently used are forgotten past ``limit`` (their records stay on disk)."""

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self._open: OrderedDict[tuple[str, str], Conversation] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, project: ConversedProject, conversation_id: str | None) -> Conversation:
        """The conversation ``conversation_id`` of ``project`` (NotFoundError when there
        is none), or a new one for None."""
        with self._lock:
            if conversation_id is not None:
                found = self._open.get((project.name, conversation_id))
                if found is not None:
                    self._open.move_to_end((project.name, conversation_id))
                    return found
                record = load(project.stored.path, conversation_id)
            else:
                record = new_record(project.name)
            conv = Conversation(project, record, keep_sandbox=False)
            self._open[(project.name, record.id)] = conv
            while len(self._open) > self.limit:
                self._open.popitem(last=False)
            return conv
