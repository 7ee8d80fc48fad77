"""Traces: one JSONL file per query, written and flushed event by event, and replay."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, Field

from shesha.errors import SheshaError
from shesha.llm.types import Completion, Message

NONCE = re.compile(r'id="[0-9a-f]{32}"')


class TraceEvent(BaseModel):
    """One step of a query, as written to the trace and passed to ``on_event``."""

    type: str
    ts: float = Field(default_factory=time.time)
    iteration: int = 0
    duration_ms: float | None = None
    data: dict[str, Any] = Field(default_factory=dict)


EventCallback = Callable[[TraceEvent], None]


def prompt_key(messages: Sequence[Message]) -> str:
    """A key for a sub-call's messages that ignores the per-query random boundary id."""
    text = json.dumps([NONCE.sub('id=""', m.get("content", "")) for m in messages])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class TraceRecorder:
    """Writes the header, then each event as one JSON line, flushed at once."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115  closed in close()

    def write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            self._file.flush()

    def header(self, **fields: Any) -> None:
        self.write({"type": "header", "ts": time.time(), **fields})

    def event(self, event: TraceEvent) -> None:
        self.write(event.model_dump())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_trace(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a trace; a trailing line cut off by a crash is skipped."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # the readable prefix ends here
    return records


class ReplayError(SheshaError):
    """The replayed run asked for something the trace does not hold."""


class ReplayLLM:
    """Answers from a trace's recorded responses, so a run re-plays offline and exactly.

    Root calls are answered in recorded order; sub-calls by their prompt (ignoring the
    random boundary id), since batched sub-calls finish in any order.
    """

    def __init__(self, path: str | Path) -> None:
        records = read_trace(path)
        self.header = records[0] if records and records[0].get("type") == "header" else {}
        self._root: deque[dict[str, Any]] = deque()
        self._sub: dict[str, deque[dict[str, Any]]] = {}
        for r in records:
            data = r.get("data", {})
            if r.get("type") == "llm_response":
                self._root.append(data)
            elif r.get("type") == "subcall_response" and "key" in data:
                self._sub.setdefault(data["key"], deque()).append(data)

    @property
    def question(self) -> str:
        return str(self.header.get("question", ""))

    async def complete(self, messages: Sequence[Message], *, model: str) -> Completion:
        queue = self._sub.get(prompt_key(messages))
        if queue:
            data = queue.popleft()
        elif self._root:
            data = self._root.popleft()
        else:
            raise ReplayError("the trace has no more recorded responses for this run")
        return Completion(
            text=data["text"],
            model=model,
            prompt_tokens=int(data.get("prompt_tokens", 0)),
            completion_tokens=int(data.get("completion_tokens", 0)),
            cost_usd=data.get("cost_usd"),
            duration_s=0.0,
        )
