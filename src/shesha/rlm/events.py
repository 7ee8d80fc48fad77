"""What a query records, step by step: one pydantic model per kind of event.

``TraceEvent`` is their union, told apart by ``type``. The engine emits them, the trace
file holds them (one JSON object a line, after a ``TraceHeader``), and ``on_event``
callbacks, ``RLMEngine.stream``, the progress display and the trace renderer receive
them. Match on the class::

    match event:
        case LLMResponse(prompt_tokens=n): ...
        case Final(answer=answer): ...
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shesha.rlm.strategy import StrategyName
from shesha.rlm.usage import QueryStatus, Usage

TRACE_VERSION = 2
"""1: each event's fields sat under ``data``; 2: they are the record's own."""


class Event(BaseModel):
    """What every event has: when, in which step, and how long it took (if it took)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ts: float = Field(default_factory=time.time)
    iteration: int = 0
    duration_ms: float | None = None


class LLMRequest(Event):
    """A call to the root model, with the messages sent."""

    type: Literal["llm_request"] = "llm_request"
    model: str
    messages: list[dict[str, str]]


class LLMResponse(Event):
    """The root model's reply."""

    type: Literal["llm_response"] = "llm_response"
    text: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    cached_prompt_tokens: int = 0
    """Of ``prompt_tokens``, those the server reused from its prompt cache (0: none, or
    it does not say)."""


class CodeRun(Event):
    """A block of the reply, about to run in the sandbox."""

    type: Literal["code"] = "code"
    block: int
    code: str


class ExecDone(Event):
    """What running a block gave."""

    type: Literal["exec_result"] = "exec_result"
    block: int
    status: str
    stdout: str
    stderr: str
    error: str | None
    final: str | None
    cpu_s: float
    peak_memory_mb: float
    subcalls: int


class SubcallRequest(Event):
    """One llm_query prompt, sent to the sub-model (the content is previewed, not kept)."""

    type: Literal["subcall_request"] = "subcall_request"
    model: str
    key: str
    instruction: str
    content_chars: int
    content_preview: str


class SubcallResponse(Event):
    """The sub-model's answer to one prompt, or why there is none."""

    type: Literal["subcall_response"] = "subcall_response"
    key: str
    text: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    cached: bool = False
    """Answered from the cache: the tokens and cost are what it cost when it was made,
    and nothing was spent now."""


FinalSource = Literal[
    "reply", "code", "text", "stalled", "max_iterations", "read", "passages", "count", "map"
]


class StrategyChosen(Event):
    """How the engine answers the question: read whole, retrieve then read, count, or
    code."""

    type: Literal["strategy"] = "strategy"
    strategy: StrategyName
    reason: str


class PassageRead(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    document: str
    page: int | None
    start: int
    end: int
    rank: int


class PassagesShown(Event):
    """The passages put in the model's window, in document order (round 2: widened)."""

    type: Literal["passages"] = "passages"
    round: int
    chars: int
    passages: list[PassageRead]


class PhraseCounted(Event):
    """The count strategy's work: the phrase the model named, as the question writes it,
    counted by the host as whole words (in any case when ``any_case``, else as written or
    in capitals); ``documents``: (name, count) where it appears."""

    type: Literal["counted"] = "counted"
    phrase: str
    total: int
    documents: list[tuple[str, int]]
    any_case: bool = True


class RecordsMapped(Event):
    """The map strategy's work: the corpus's records and their fields, the fields the
    sub-model read (``read``), the labels the model named, how many distinct texts the
    sub-model labelled (each once), and the labels' counts, made by code."""

    type: Literal["mapped"] = "mapped"
    records: int
    fields: list[str]
    read: list[str]
    labels: list[str]
    distinct: int
    counts: list[tuple[str, int]]
    unlabelled: int = 0


StrategyWork = StrategyChosen | PassagesShown | PhraseCounted | RecordsMapped
"""The events that say how the engine answered: shown as a line (``strategy_note``)."""


class Final(Event):
    """The answer: from a FINAL in the reply, in code, as text, or the last call's."""

    type: Literal["final"] = "final"
    answer: str | None
    source: FinalSource
    block: int | None = None


class LimitHit(Event):
    """A limit stopped the query (or refused a batch of sub-calls)."""

    type: Literal["limit"] = "limit"
    limit: str
    message: str
    during: str | None = None


class Failed(Event):
    """The query failed: the model, the sandbox or the storage raised."""

    type: Literal["error"] = "error"
    error: str
    kind: str


class Warned(Event):
    """Something the user should know, that did not stop the query."""

    type: Literal["warning"] = "warning"
    message: str


class Nudged(Event):
    """A reply with no code to run: the engine said what to do."""

    type: Literal["nudge"] = "nudge"
    message: str


class UnseenAnswer(Event):
    """An answer typed before any output could have shown it: a guess, sent back."""

    type: Literal["unseen_answer"] = "unseen_answer"
    answer: str
    message: str


class RepeatNudge(Event):
    """The same failure twice: the engine quoted it and showed the line to write."""

    type: Literal["repeat_nudge"] = "repeat_nudge"
    failure: str
    message: str


class Stalled(Event):
    """The same failure three times: the loop asks once for an answer and stops."""

    type: Literal["stalled"] = "stalled"
    repeats: int
    failure: str | None


class SkippedBlocks(Event):
    """Blocks of a reply that did not run (after a failed one, or after a FINAL)."""

    type: Literal["skipped_blocks"] = "skipped_blocks"
    ran: int
    written: int


class IgnoredFinal(Event):
    """A FINAL typed after code whose output the model had not seen."""

    type: Literal["ignored_final"] = "ignored_final"
    block: int
    code: str


class UnfencedCode(Event):
    """A reply that was Python without a code fence, run as one block."""

    type: Literal["unfenced_code"] = "unfenced_code"
    code: str


class ToolCalled(Event):
    """A host tool, called from the code: its arguments and what it gave back."""

    type: Literal["tool_call"] = "tool_call"
    name: str
    arguments: str
    ok: bool
    result: str | None = None
    error: str | None = None


class Cited(Event):
    """The code's citations, as the host checked them."""

    type: Literal["citations"] = "citations"
    citations: list[dict[str, Any]]


def strategy_note(event: StrategyWork) -> str:
    """The strategy chosen, the passages read, or what was counted, in a line."""
    if isinstance(event, StrategyChosen):
        return f"strategy: {event.strategy} ({event.reason})"
    if isinstance(event, RecordsMapped):
        counts = ", ".join(f"{label} {n:,}" for label, n in event.counts)
        unlabelled = f", no label {event.unlabelled:,}" if event.unlabelled else ""
        return (
            f"mapped {event.records:,} records ({', '.join(event.read)} read; "
            f"{event.distinct:,} distinct, each labelled once): {counts}{unlabelled}"
        )
    if isinstance(event, PhraseCounted):
        where = "; ".join(f"{name} {n:,}" for name, n in event.documents[:20])
        more = len(event.documents) - 20
        where += f"; and {more} more" if more > 0 else ""
        how = "any case" if event.any_case else "as written or in capitals"
        return f"counted {event.phrase!r} (whole words, {how}): {event.total:,}" + (
            f" in {len(event.documents)} document(s): {where}" if event.documents else ""
        )
    return (
        f"passages read (round {event.round}, {len(event.passages)} passages, "
        f"{event.chars:,} characters): {passages_read(event)}"
    )


def passages_read(event: PassagesShown, limit: int = 20) -> str:
    """Where the passages came from, in a line: document, page, characters."""
    shown = [
        f"{p.document}" + (f" p.{p.page}" if p.page is not None else "") + f" @{p.start:,}"
        for p in event.passages[:limit]
    ]
    more = len(event.passages) - limit
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


class Summary(Event):
    """The last event: how the query ended, and what it used."""

    type: Literal["summary"] = "summary"
    answer: str | None
    status: QueryStatus
    error: str | None = None
    limit: str | None = None
    iterations: int
    usage: Usage
    subcalls: int
    duration_s: float
    tool_calls: int = 0


TraceEvent = Annotated[
    LLMRequest
    | LLMResponse
    | CodeRun
    | ExecDone
    | SubcallRequest
    | SubcallResponse
    | Final
    | LimitHit
    | Failed
    | Warned
    | Nudged
    | UnseenAnswer
    | RepeatNudge
    | Stalled
    | SkippedBlocks
    | IgnoredFinal
    | UnfencedCode
    | ToolCalled
    | Cited
    | StrategyChosen
    | PassagesShown
    | PhraseCounted
    | RecordsMapped
    | Summary,
    Field(discriminator="type"),
]
"""Any event a query emits."""


class TraceHeader(BaseModel):
    """The first record of a trace: the question and everything the run depended on."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    type: Literal["header"] = "header"
    ts: float = Field(default_factory=time.time)
    trace_version: int = 1
    question: str
    model: str
    sub_model: str
    prompts: str
    prompt_hash: str
    project: str | None = None
    project_version: str | None = None
    documents: list[str] = Field(default_factory=list)
    ocr_pages: dict[str, list[int]] = Field(default_factory=dict)
    """The pages of each document that were read by OCR (a machine's reading)."""
    config: dict[str, Any] = Field(default_factory=dict)
    shesha_version: str
    sandbox: str | None = None
    """Which sandbox ran the code (docker, bwrap...); absent in older traces."""
    isolation: str | None = None
    """What that sandbox enforced."""
