"""A trace as steps, the way people read a run: what the model wrote, what ran, what it
printed, which sub-calls it made, and what each step cost in tokens, dollars and time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from shesha.rlm.events import (
    CodeRun,
    ExecDone,
    Failed,
    Final,
    LimitHit,
    LLMResponse,
    Nudged,
    PassagesShown,
    PhraseCounted,
    RecordsMapped,
    RepeatNudge,
    StrategyChosen,
    StrategyWork,
    SubcallRequest,
    SubcallResponse,
    TraceEvent,
    UnseenAnswer,
    Warned,
    strategy_note,
)


@dataclass
class Block:
    code: str
    output: str = ""
    status: str = "running"
    seconds: float = 0.0
    subcalls: int = 0


@dataclass
class Sub:
    key: str
    instruction: str
    preview: str
    chars: int
    answer: str | None = None
    error: str | None = None
    tokens: int = 0
    cost: float | None = None


@dataclass
class Step:
    """One root-model call and what came of it (step 0: the engine's own, if any)."""

    number: int
    reply: str = ""
    root_tokens: int = 0
    root_cost: float | None = 0.0
    model_s: float = 0.0
    blocks: list[Block] = field(default_factory=list)
    subs: list[Sub] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    answer: str | None = None
    _first_sub: float | None = None
    _last_sub: float | None = None

    @property
    def sub_tokens(self) -> int:
        return sum(s.tokens for s in self.subs)

    @property
    def sub_cost(self) -> float | None:
        costs = [s.cost for s in self.subs if s.answer is not None]
        return None if any(c is None for c in costs) else sum(c or 0.0 for c in costs)

    @property
    def subcall_s(self) -> float:
        """Wall time with sub-calls out: from the first request to the last answer."""
        if self._first_sub is None or self._last_sub is None:
            return 0.0
        return max(0.0, self._last_sub - self._first_sub)

    @property
    def code_s(self) -> float:
        """Time the code itself ran (its execution, less the time waiting on sub-calls)."""
        return max(0.0, sum(b.seconds for b in self.blocks) - self.subcall_s)


def steps_of(events: Sequence[TraceEvent]) -> list[Step]:
    """A trace's events, grouped by step in order."""
    steps: dict[int, Step] = {}
    for event in events:
        step = steps.setdefault(event.iteration, Step(event.iteration))
        _add(step, event)
    return [steps[k] for k in sorted(steps)]


def _note(e: Nudged | RepeatNudge | UnseenAnswer | Warned | StrategyWork) -> str:
    if isinstance(e, StrategyChosen | PassagesShown | PhraseCounted | RecordsMapped):
        return strategy_note(e)
    return e.message


def _add(step: Step, e: TraceEvent) -> None:
    match e:
        case LLMResponse():
            step.reply = e.text
            step.root_tokens += e.prompt_tokens + e.completion_tokens
            step.root_cost = (
                None
                if e.cost_usd is None or step.root_cost is None
                else (step.root_cost + e.cost_usd)
            )
            step.model_s += (e.duration_ms or 0) / 1000
        case CodeRun():
            step.blocks.append(Block(e.code))
        case ExecDone():
            if step.blocks:
                block = step.blocks[-1]
                block.output = "".join(x or "" for x in (e.stdout, e.stderr, e.error))
                block.status, block.subcalls = e.status, e.subcalls
                block.seconds = (e.duration_ms or 0) / 1000
        case SubcallRequest():
            step.subs.append(Sub(e.key, e.instruction, e.content_preview, e.content_chars))
            step._first_sub = e.ts if step._first_sub is None else min(step._first_sub, e.ts)
        case SubcallResponse():
            pending = next(
                (s for s in step.subs if s.key == e.key and s.answer is None and s.error is None),
                None,
            )
            if pending is None:  # refused before it was sent (too long, or over a limit)
                pending = Sub(e.key, "", "", 0)
                step.subs.append(pending)
            pending.answer, pending.error = e.text, e.error
            pending.tokens, pending.cost = e.prompt_tokens + e.completion_tokens, e.cost_usd
            step._last_sub = e.ts if step._last_sub is None else max(step._last_sub, e.ts)
        case Final():
            step.answer = e.answer
        case (
            Nudged()
            | RepeatNudge()
            | UnseenAnswer()
            | Warned()
            | StrategyChosen()
            | PassagesShown()
            | PhraseCounted()
            | RecordsMapped()
        ):
            step.notes.append(_note(e))
        case LimitHit():
            step.notes.append(f"limit {e.limit}: {e.message}")
        case Failed():
            step.notes.append(f"error: {e.error}")
        case _:
            pass  # requests, headers and the summary are shown elsewhere
