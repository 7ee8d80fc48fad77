"""What one execution in the sandbox returns, and how sub-calls reach the host."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypedDict

ExecStatus = Literal["ok", "error", "timeout", "memory", "crashed", "cancelled"]
"""ok: the code ran; error: it raised (see ``error``); timeout: it passed its limit and
the container was killed; memory: it passed the memory limit and was killed; crashed:
the container died or misbehaved; cancelled: the host stopped it. After all but ok and
error, the namespace is gone: the next execution starts in a fresh container with
``context`` loaded again."""


class ToolSpec(TypedDict):
    """A host tool as the sandbox sees it: a name to call, and its documentation."""

    name: str
    doc: str


SANDBOX_LOST: frozenset[str] = frozenset({"timeout", "memory", "crashed", "cancelled"})


@dataclass(frozen=True, slots=True)
class SubcallItem:
    """One ``llm_query`` prompt from code in the sandbox: untrusted data."""

    instruction: str
    content: str
    choices: tuple[str, ...] = ()
    """When set (``llm_map``'s choices, the host's own checks), the reply is one of these."""
    instruction_last: bool = False
    """The content comes first and the instruction after it (``llm_map``'s items): a small
    model answers about a short item better with the question after the text."""
    noted: bool = False
    """With ``choices``: the reply first says in a few words what the content says, then
    gives the choice on a line of its own (``NotedChoice``)."""


@dataclass(frozen=True, slots=True)
class RawCitation:
    """A passage the code cited: a document name and the quote, with offsets when the code
    gave them. Untrusted until the host has found the quote in that document."""

    document: str
    quote: str
    start: int | None = None
    end: int | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """Running code calls a host tool: its name and JSON arguments (untrusted)."""

    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What a tool call gives back to the code: a JSON value, or an error to raise."""

    ok: bool
    value: Any = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SubcallBatch:
    """Prompts that running code is waiting on; answer them in order."""

    items: Sequence[SubcallItem]


SubcallHandler = Callable[[Sequence[SubcallItem]], list[str]]
"""Answers a batch in order (for ``execute``, which runs code to the end)."""
"""Answers a batch of sub-calls, one string per item and in order."""


@dataclass(frozen=True, slots=True)
class ExecResult:
    status: ExecStatus
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    final: str | None = None
    """The answer, when the code called FINAL(...) or FINAL_VAR(...)."""
    stdout_chars: int = 0
    """How much was printed in all, before truncation."""
    cpu_s: float = 0.0
    wall_s: float = 0.0
    peak_memory_mb: float = 0.0
    subcalls: int = 0
    citations: tuple[RawCitation, ...] = ()
    """What the code cited with ``cite(...)`` in this execution (checked by the host)."""

    @property
    def sandbox_lost(self) -> bool:
        return self.status in SANDBOX_LOST

    @property
    def output(self) -> str:
        """stdout, stderr and the error, as one text for a reader."""
        parts = [self.stdout]
        if self.stderr:
            parts.append(self.stderr)
        if self.error:
            parts.append(self.error)
        return "".join(p if p.endswith("\n") or not p else p + "\n" for p in parts if p)


ExecStep = SubcallBatch | ToolCall | ExecResult
"""What waiting on running code gives: sub-calls or a tool call to answer, or its result."""


class Steps(Protocol):
    """Runs code step by step: ``start``, then ``next`` until it gives the result,
    with ``answer`` after each ``SubcallBatch``."""

    def start(
        self,
        code: str,
        *,
        timeout: float | None = None,
        max_output_chars: int | None = None,
        tools: Sequence[ToolSpec] = (),
    ) -> None: ...

    def next(self) -> ExecStep: ...

    def answer(self, results: Sequence[str]) -> None: ...

    def answer_tool(self, outcome: ToolOutcome) -> None: ...


NO_TOOLS = "no host tools are available in this sandbox session"
NO_SUBCALLS = "[llm_query is not available in this sandbox session]"


AsyncSubcalls = Callable[[Sequence[SubcallItem]], Awaitable[list[str]]]
"""Answers one batch of sub-calls, in order."""
AsyncTool = Callable[[ToolCall], Awaitable[ToolOutcome]]
"""Answers one host tool call."""


async def drive(
    steps: Steps,
    code: str,
    *,
    subcalls: AsyncSubcalls | None = None,
    tool: AsyncTool | None = None,
    timeout: float | None = None,
    max_output_chars: int | None = None,
    tools: Sequence[ToolSpec] = (),
) -> ExecResult:
    """Run code to its result: the one pull loop. The blocking calls run off the event
    loop; each batch is answered by ``subcalls`` (None: every sub-call is refused), each
    tool call by ``tool`` (None: refused)."""
    await asyncio.to_thread(
        steps.start, code, timeout=timeout, max_output_chars=max_output_chars, tools=tools
    )
    while not isinstance(step := await asyncio.to_thread(steps.next), ExecResult):
        if isinstance(step, ToolCall):
            outcome = ToolOutcome(ok=False, error=NO_TOOLS) if tool is None else await tool(step)
            await asyncio.to_thread(steps.answer_tool, outcome)
            continue
        items = step.items
        results = [NO_SUBCALLS] * len(items) if subcalls is None else await subcalls(items)
        await asyncio.to_thread(steps.answer, [str(r) for r in _checked(results, items)])
    return step


def run_to_end(
    steps: Steps,
    code: str,
    *,
    on_subcall: SubcallHandler | None = None,
    timeout: float | None = None,
    max_output_chars: int | None = None,
) -> ExecResult:
    """Run code to its result, answering each batch with ``on_subcall`` (without one,
    every sub-call gets a refusal): ``drive``'s synchronous twin, for scripts and
    benchmarks. It stays a plain loop on the calling thread, so Ctrl-C stops it at once
    (through ``asyncio.run``, the interrupt would wait for the code to end)."""
    steps.start(code, timeout=timeout, max_output_chars=max_output_chars)
    while not isinstance(step := steps.next(), ExecResult):
        if isinstance(step, ToolCall):
            steps.answer_tool(ToolOutcome(ok=False, error=NO_TOOLS))
            continue
        results = [NO_SUBCALLS] * len(step.items) if on_subcall is None else on_subcall(step.items)
        steps.answer([str(r) for r in _checked(results, step.items)])
    return step


def _checked(results: Sequence[str], items: Sequence[SubcallItem]) -> Sequence[str]:
    if len(results) != len(items):
        raise ValueError(
            f"the sub-call handler returned {len(results)} answers for {len(items)} prompts"
        )
    return results
