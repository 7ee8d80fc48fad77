"""Conversations: follow-up questions that see the earlier questions and answers, and run
in the same sandbox namespace, so that what earlier code built (an index, a list of
matches) is still there.

A conversation is recorded with its project (``shesha.storage.conversations``). It
survives a restart: the namespace is rebuilt by replaying the recorded code
(``shesha.rlm.replay``).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

from shesha.rlm.engine import LeasedSandbox
from shesha.rlm.prompting import PromptSet
from shesha.rlm.replay import replay
from shesha.rlm.result import QueryResult
from shesha.storage import StoredProject
from shesha.storage.conversations import Exchange, Record, listed, load, new_record, save
from shesha.sync import run_sync

Turn = tuple[str, str]
"""An earlier question and the answer it got, as a client holds them."""
GIVEN = "given"
"""The status of an exchange a client's history brought: asked elsewhere, not replayed."""


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
        lease: LeasedSandbox | None = ...,
        earlier: Sequence[tuple[str, str | None]] = ...,
        **overrides: Any,
    ) -> QueryResult: ...

    def lease_sandbox(self) -> LeasedSandbox:
        """A lease on a sandbox with the project's documents loaded."""
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
        self._lease: LeasedSandbox | None = None
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
            lease = await self._sandbox()
            losses = lease.losses
            earlier = [(e.question, e.answer) for e in self.record.exchanges]
            try:
                result = await self.project.aquery(
                    question, lease=lease, earlier=earlier, **overrides
                )
            except BaseException:
                self.close()  # cancelled mid-code: the container is gone
                raise
            if lease.losses != losses or not self.keep_sandbox:
                # The container was lost (a timeout, out of memory) and replaced with an
                # empty namespace, or is not ours to keep: the next question rebuilds the
                # namespace by replaying.
                self.close()
            self.record.exchanges.append(
                Exchange(question, result.answer, result.status, result.trace_path)
            )
            await asyncio.to_thread(save, self.project.stored.path, self.record)
            return result

    async def _sandbox(self) -> LeasedSandbox:
        if self._lease is None:
            self._lease = await asyncio.to_thread(self.project.lease_sandbox)
            if self.record.exchanges:  # taken up again: rebuild the namespace
                traces = [e.trace for e in self.record.exchanges if e.trace]
                await replay(self._lease, traces, self.project.prompts())
        return self._lease

    def close(self) -> None:
        if self._lease is not None:
            self._lease.close()
            self._lease = None

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
            return self._keep(Conversation(project, record, keep_sandbox=False))

    def _keep(self, conv: Conversation) -> Conversation:
        """Hold ``conv`` open (the caller holds the lock), forgetting the least recently
        used past the limit."""
        self._open[(conv.project.name, conv.id)] = conv
        while len(self._open) > self.limit:
            self._open.popitem(last=False)
        return conv

    def following(self, project: ConversedProject, earlier: Sequence[Turn]) -> Conversation:
        """A new conversation for a client's history (``earlier``: its questions and
        answers, oldest first), and the question that follows it.

        It starts from the longest recorded conversation that begins with those
        exchanges (they keep their traces, so their code is replayed), and holds the rest
        as given. It is always a new record: two requests with the same history, or a
        retried one, never run in one conversation, so neither sees the other's question;
        a history edited or branched, or never asked here, is handled alike."""
        best: Record | None = None
        shared = 0
        for record in listed(project.stored.path) if earlier else []:
            n = _shared_turns(record.exchanges, earlier)
            if n > shared:
                best, shared = record, n
                if n == len(earlier):
                    break
        record = new_record(project.name)
        if best is not None:
            record.exchanges = list(best.exchanges[:shared])
        record.exchanges += [Exchange(q, a, GIVEN, None) for q, a in earlier[shared:]]
        with self._lock:
            return self._keep(Conversation(project, record, keep_sandbox=False))


def _shared_turns(exchanges: Sequence[Exchange], earlier: Sequence[Turn]) -> int:
    """How many of the first exchanges are the first turns of ``earlier``."""
    n = 0
    for exchange, (question, answer) in zip(exchanges, earlier, strict=False):
        if not (same_text(exchange.question, question) and same_text(exchange.answer, answer)):
            break
        n += 1
    return n


def same_text(recorded: str | None, given: str) -> bool:
    """Whether a client's copy of a question or answer is the recorded one: the same
    words (a client may trim or re-wrap them), or the same JSON value (a typed answer,
    which a client receives serialised)."""
    if recorded is None:
        return not given.strip()
    if recorded.split() == given.split():
        return True
    try:
        return bool(json.loads(recorded) == json.loads(given))
    except (ValueError, RecursionError):  # not JSON, or nested past what Python parses
        return False
