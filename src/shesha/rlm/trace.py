"""Traces: one JSONL file per query, written and flushed event by event, and replay."""

from __future__ import annotations

import functools
import hashlib
import json
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pydantic import BaseModel, TypeAdapter, ValidationError

from shesha.errors import SheshaError
from shesha.llm.types import Completion, Message, OutputConstraint
from shesha.rlm.events import LLMResponse, SubcallResponse, Summary, TraceEvent, TraceHeader
from shesha.rlm.history import without_boundary
from shesha.rlm.notebook import trace_html
from shesha.storage.atomic import private_dir, private_file

EventCallback = Callable[[TraceEvent], None]


@functools.cache
def _events() -> TypeAdapter[TraceEvent]:
    """Built on first use: a union of every event costs tens of milliseconds."""
    return TypeAdapter(TraceEvent)


def prompt_key(messages: Sequence[Message]) -> str:
    """A key for a sub-call's messages that ignores its random boundary id."""
    text = json.dumps([without_boundary(m.get("content", "")) for m in messages])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class TraceRecorder:
    """Writes the header, then each event as one JSON line, flushed at once."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: IO[str] | None = None
        if path is not None:
            private_dir(path.parent)
            self._file = private_file(path)

    def write(self, record: BaseModel) -> None:
        if self._file is not None:
            self._file.write(record.model_dump_json() + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass
class Trace:
    """A trace as read back: its header (None if it has none) and its events in order."""

    header: TraceHeader | None
    events: list[TraceEvent] = field(default_factory=list)

    @property
    def summary(self) -> Summary | None:
        """The last event, when the query finished."""
        return next((e for e in reversed(self.events) if isinstance(e, Summary)), None)

    def _repr_html_(self) -> str:
        """The question, how it ended and the steps, in a notebook (all text escaped)."""
        return trace_html(self.header.question if self.header else None, self.events)


def read_trace(path: str | Path) -> Trace:
    """A trace file, typed. A trailing line cut off by a crash ends it; a record of a
    kind this version does not know is skipped. Traces of version 1 (fields under
    ``data``) read the same."""
    trace = Trace(header=None)
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break  # the readable prefix ends here
            if not isinstance(record, dict):
                continue
            if isinstance(record.get("data"), dict):  # version 1
                record = {**{k: v for k, v in record.items() if k != "data"}, **record["data"]}
            try:
                if record.get("type") == "header":
                    trace.header = TraceHeader.model_validate(record)
                else:
                    trace.events.append(_events().validate_python(record))
            except ValidationError:
                continue  # a kind (or a field) from another version of shesha
    return trace


class ReplayError(SheshaError):
    """The replayed run asked for something the trace does not hold."""


class ReplayLLM:
    """Answers from a trace's recorded responses, so a run re-plays offline and exactly.

    Root calls are answered in recorded order; sub-calls by their prompt (ignoring the
    random boundary id), since batched sub-calls finish in any order.
    """

    def __init__(self, path: str | Path) -> None:
        trace = read_trace(path)
        self.header = trace.header
        self._root: deque[LLMResponse] = deque()
        self._sub: dict[str, deque[SubcallResponse]] = {}
        for e in trace.events:
            if isinstance(e, LLMResponse):
                self._root.append(e)
            elif isinstance(e, SubcallResponse) and e.text is not None:
                self._sub.setdefault(e.key, deque()).append(e)

    @property
    def question(self) -> str:
        return self.header.question if self.header is not None else ""

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        model: str,
        constraint: OutputConstraint | None = None,
    ) -> Completion:
        queue = self._sub.get(prompt_key(messages))
        recorded: LLMResponse | SubcallResponse
        if queue:
            recorded = queue.popleft()
        elif self._root:
            recorded = self._root.popleft()
        else:
            raise ReplayError("the trace has no more recorded responses for this run")
        return Completion(
            text=recorded.text or "",
            model=model,
            prompt_tokens=recorded.prompt_tokens,
            completion_tokens=recorded.completion_tokens,
            cost_usd=recorded.cost_usd,
            duration_s=0.0,
        )
