"""Conversations: follow-up questions that see the earlier questions and answers, and run
in the same sandbox namespace, so that what earlier code built (an index, a list of
matches) is still there.

A conversation is recorded in ``<project>/conversations/<id>.json``: its questions,
answers and traces. It survives a restart: the namespace is rebuilt by running the
recorded code again, in order, with sub-calls answered from the traces (never by
unpickling anything).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import threading
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shesha.errors import NotFoundError
from shesha.rlm.engine import SHOW_WHOLE, ExecSession
from shesha.rlm.events import CodeRun, ExecDone, SubcallResponse
from shesha.rlm.history import UNTRUSTED, wrap
from shesha.rlm.prompting import PromptSet
from shesha.rlm.result import QueryResult
from shesha.rlm.trace import prompt_key, read_trace
from shesha.sandbox.execution import ExecResult, SubcallBatch, SubcallItem, ToolOutcome
from shesha.storage.atomic import atomic_write, private_dir
from shesha.sync import run_sync

if TYPE_CHECKING:
    from shesha.api import Project

CONVERSATION_ID = re.compile(r"[0-9a-f]{12}")
NOT_REPLAYED = "[not replayed: this sub-call has no recorded answer]"


@dataclass
class Exchange:
    question: str
    answer: str | None
    status: str
    trace: str | None


@dataclass
class Record:
    id: str
    project: str
    exchanges: list[Exchange] = field(default_factory=list)


class Conversation:
    """Questions about one project, each seeing the ones before. ``close()`` (or the
    ``with`` block) gives its sandbox back; ``Project.chat(id)`` takes it up again."""

    def __init__(self, project: Project, record: Record, *, keep_sandbox: bool = True) -> None:
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
            provider = await asyncio.to_thread(self.project.shesha.sandboxes)
            self._session = await asyncio.to_thread(provider.acquire, self.project.stored)
            if self.record.exchanges:  # taken up again: rebuild the namespace
                await replay(self._session, [e.trace for e in self.record.exchanges if e.trace])
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

    def get(self, project: Project, conversation_id: str | None) -> Conversation:
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


def folder(project_path: Path) -> Path:
    return project_path / "conversations"


def save(project_path: Path, record: Record) -> None:
    path = folder(project_path) / f"{record.id}.json"
    private_dir(path.parent)
    atomic_write(path, json.dumps(asdict(record), indent=1, ensure_ascii=False).encode())


def new_record(project: str) -> Record:
    return Record(id=secrets.token_hex(6), project=project)


def load(project_path: Path, conversation_id: str) -> Record:
    path = folder(project_path) / f"{conversation_id}.json"
    try:
        if not CONVERSATION_ID.fullmatch(conversation_id):
            raise ValueError("not an id")  # so it cannot name a file outside the folder
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise NotFoundError(
            f"No conversation {conversation_id!r} in this project.",
            hint="`shesha chat PROJECT` starts one and prints its id.",
        ) from e
    exchanges = [Exchange(**e) for e in data.get("exchanges", [])]
    return Record(id=data["id"], project=data["project"], exchanges=exchanges)


def listed(project_path: Path) -> list[Record]:
    return [load(project_path, p.stem) for p in sorted(folder(project_path).glob("*.json"))]


async def replay(session: ExecSession, traces: Sequence[str]) -> int:
    """Run the code the traces recorded as having run cleanly, in order, answering its
    sub-calls with the recorded answers: the namespace as it was. Returns the blocks run."""
    prompts = PromptSet.load()
    ran = 0
    for path in traces:
        if not Path(path).is_file():
            continue  # a trace deleted since: what it defined is gone
        events = read_trace(path).events
        answers: dict[str, deque[str]] = {}
        for e in events:
            if isinstance(e, SubcallResponse) and e.text is not None:
                answers.setdefault(e.key, deque()).append(e.text)
        pending: str | None = None
        for e in events:
            if isinstance(e, CodeRun):
                pending = e.code
            elif isinstance(e, ExecDone) and pending is not None:
                if e.status == "ok" and pending != SHOW_WHOLE:
                    await _run_again(session, pending, answers, prompts)
                    ran += 1
                pending = None
    return ran


async def _run_again(
    session: ExecSession, code: str, answers: dict[str, deque[str]], prompts: PromptSet
) -> ExecResult:
    await asyncio.to_thread(session.start, code)
    while not isinstance(step := await asyncio.to_thread(session.next), ExecResult):
        if isinstance(step, SubcallBatch):
            found = [_recorded(item, answers, prompts) for item in step.items]
            await asyncio.to_thread(session.answer, found)
        else:
            outcome = ToolOutcome(ok=False, error="tools are not called again when replaying")
            await asyncio.to_thread(session.answer_tool, outcome)
    return step


def _recorded(item: SubcallItem, answers: dict[str, deque[str]], prompts: PromptSet) -> str:
    user = item.instruction
    if item.content:
        user += "\n\n" + wrap("0" * 32, UNTRUSTED, item.content)
    messages = [
        {"role": "system", "content": prompts.render("subcall_system")},
        {"role": "user", "content": user},
    ]
    queue = answers.get(prompt_key(messages))
    return queue.popleft() if queue else NOT_REPLAYED
