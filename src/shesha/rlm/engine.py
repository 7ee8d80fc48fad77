"""The RLM loop: the root model writes code, the sandbox runs it, the host relays
sub-calls in parallel, and every step goes to the trace.

A question travels one way: engine -> (LLM client, sandbox) -> trace.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from shesha import __version__
from shesha.errors import LLMError, SandboxError, SheshaError
from shesha.llm.types import ChatModel, Completion, Message
from shesha.rlm.extract import (
    PLACEHOLDERS,
    failing_line,
    final_argument,
    final_in_last_reply,
    final_source,
    literal_block,
    read_reply,
    short_answer,
    through_block,
    typed_final,
    without_last_statement,
)
from shesha.rlm.prompting import PromptSet, PromptStyle
from shesha.rlm.result import QueryLimits, QueryResult, QueryStatus, Usage
from shesha.rlm.trace import EventCallback, TraceEvent, TraceRecorder, prompt_key
from shesha.sandbox.corpus import Corpus
from shesha.sandbox.execution import ExecResult, ExecStep, SubcallBatch, SubcallItem

MAX_LISTED_DOCS = 100
NO_OUTPUT = (
    "(no output: nothing was printed. If this was a search, it found no match: "
    "try fewer or other words, and ignore case: re.finditer(word, text, re.I), or compare "
    "text.lower() with a lower-case word)"
)
SHORT_CORPUS = (
    "(the documents are only {chars:,} characters: print them whole, "
    "for example with print(context[0]), and read the answer there)"
)
REPEAT_NUDGE_AT = 2
"""The second identical failure in a row gets a nudge that quotes it."""
STALL_AT = 3
"""The third ends the loop with one "answer now" call: no query repeats one error more."""
REPEATED = (
    "(the same code and the same output as your last step: if the output shows the answer, "
    "reply with FINAL(answer); if not, change the code)"
)


class ExecSession(Protocol):
    """One query's hold on a sandbox (``SandboxSession`` in production). Code runs step
    by step, and the engine pulls: ``start``, then ``next`` gives a ``SubcallBatch`` to
    answer with ``answer``, or the ``ExecResult``. The methods block; the engine calls
    them from a worker thread."""

    def start(
        self, code: str, *, timeout: float | None = None, max_output_chars: int | None = None
    ) -> None: ...

    def next(self) -> ExecStep: ...

    def answer(self, results: Sequence[str]) -> None: ...

    def cancel(self) -> None:
        """Stop running code at once; called from any thread."""

    def close(self) -> None: ...


class SandboxProvider(Protocol):
    """Hands out sandboxes holding a corpus (``SandboxPool`` in production)."""

    def acquire(
        self, corpus: Corpus | None = None, timeout: float | None = None
    ) -> ExecSession: ...


class EngineConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    sub_model: str | None = Field(None, description="for llm_query; default: the root model")
    limits: QueryLimits = Field(default_factory=QueryLimits)
    prompts_dir: str | None = None
    prompt_style: PromptStyle = Field("full", description="compact: for small local models")
    max_output_chars: int = Field(20_000, ge=200, description="printed output kept per step")
    subcall_chars: int = Field(100_000, description="chunk size the prompt suggests")
    max_subcall_chars: int | None = Field(
        None, description="larger llm_query content is refused with advice to chunk it"
    )
    keep_full_outputs: int = Field(2, ge=0, description="recent steps whose output stays whole")
    old_output_chars: int = Field(1_000, ge=100, description="older outputs are cut to this")

    @property
    def effective_sub_model(self) -> str:
        return self.sub_model or self.model


class _LimitReached(Exception):
    def __init__(self, status: QueryStatus, limit: str, message: str) -> None:
        super().__init__(message)
        self.status, self.limit, self.message = status, limit, message


@dataclass
class _Turn:
    reply: str
    outputs: list[tuple[str, str]]  # (attributes, text) per block; or a nudge
    nudge: str | None = None
    error: str | None = None  # the failed block's error, when one failed
    failed_code: str | None = None
    escalation: str | None = None  # the engine's word after the output (not output)


def _printed(text: str) -> bool:
    return not text.startswith(NO_OUTPUT)


def _failure(turn: _Turn, earlier: Sequence[_Turn] = ()) -> str | None:
    """How a step failed, comparable across steps; None when it made progress, and ""
    when it neither failed nor printed anything new (an empty search, or output the
    model has already seen)."""
    if turn.nudge is not None:
        return "no code to run: " + turn.reply.strip()[:300]
    if turn.error is not None:
        lines = [ln for ln in turn.error.strip().splitlines() if ln.strip()]
        return lines[-1].strip() if lines else turn.error
    if turn.outputs and turn.outputs[-1][1] == REPEATED:
        return REPEATED
    seen = {text for t in earlier for _, text in t.outputs}
    if not any(_printed(text) and text not in seen for _, text in turn.outputs):
        return ""
    return None


@dataclass
class _Streak:
    """Counts each kind of failure since the last step that made progress, so that two
    failures taking turns (an empty search, a guess, the same search...) add up too."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, failure: str | None) -> int:
        if failure is None:
            self.counts.clear()
            return 0
        if not failure:
            return 0  # nothing printed: not progress, and not a failure to count
        self.counts[failure] = self.counts.get(failure, 0) + 1
        return self.counts[failure]


@dataclass
class _Run:
    """The state of one query. Mutated on the event loop's thread only."""

    question: str
    config: EngineConfig
    nonce: str
    started: float
    recorder: TraceRecorder
    on_event: EventCallback | None
    usage: Usage = field(default_factory=Usage)
    subcalls: int = 0
    iteration: int = 0
    limit_hit: _LimitReached | None = None
    cost_warned: bool = False
    corpus_chars: int = 0

    def emit(self, type_: str, duration_ms: float | None = None, **data: Any) -> None:
        event = TraceEvent(type=type_, iteration=self.iteration, duration_ms=duration_ms, data=data)
        self.recorder.event(event)
        if self.on_event is not None:
            self.on_event(event)

    def check(self, upcoming_subcalls: int = 0) -> None:
        """Raise _LimitReached when the next LLM call(s) would pass a limit."""
        lim = self.config.limits
        if self.limit_hit is not None:
            raise self.limit_hit
        hit = None
        if lim.max_wall_s is not None and time.monotonic() - self.started >= lim.max_wall_s:
            hit = _LimitReached("timeout", "max_wall_s", f"the query ran {lim.max_wall_s:g} s")
        elif lim.max_tokens is not None and self.usage.total_tokens >= lim.max_tokens:
            hit = _LimitReached(
                "budget_exceeded", "max_tokens", f"{self.usage.total_tokens:,} tokens used"
            )
        elif lim.max_cost_usd is not None and self.usage.known_cost_usd >= lim.max_cost_usd:
            hit = _LimitReached(
                "budget_exceeded", "max_cost_usd", f"${self.usage.known_cost_usd:.4f} spent"
            )
        elif (
            upcoming_subcalls
            and lim.max_subcalls is not None
            and self.subcalls + upcoming_subcalls > lim.max_subcalls
        ):
            hit = _LimitReached(
                "budget_exceeded",
                "max_subcalls",
                f"{self.subcalls} sub-calls made, {upcoming_subcalls} more asked for, "
                f"limit {lim.max_subcalls}",
            )
        if hit is not None:
            self.limit_hit = hit
            raise hit

    def account(self, bucket: str, c: Completion) -> None:
        target = self.usage.root if bucket == "root" else self.usage.sub
        target.add(c.prompt_tokens, c.completion_tokens, c.cost_usd)
        if c.cost_usd is not None:
            self.usage.known_cost_usd += c.cost_usd
        elif self.config.limits.max_cost_usd is not None and not self.cost_warned:
            self.cost_warned = True
            self.emit(
                "warning",
                message=f"no price is known for {c.model}: max_cost_usd cannot count its calls",
            )


UNTRUSTED = "untrusted_document_content"
"""The tag around sub-call content; REPL output is ``<repl_output type="{UNTRUSTED}">``."""


def _wrap(nonce: str, tag: str, text: str, attrs: str = "", *, typed: bool = False) -> str:
    """Text between an opening and a closing tag that both carry the query's random id:
    a closing tag forged inside the text lacks the id, so it stays data."""
    kind = f' type="{UNTRUSTED}"' if typed else ""
    return f'<{tag}{kind} id="{nonce}"{attrs}>\n{text}\n</{tag} id="{nonce}">'


def _joined(*parts: str | None) -> str:
    return "\n\n".join(p for p in parts if p)


def _supported(guess: str | None, turns: list[_Turn]) -> str | None:
    """The guess, if REPL output the model has seen shows it; a guess it has not is made up.

    Output of a block that failed does not count: its traceback quotes the code itself.
    """
    if guess is None or guess.strip().casefold() in PLACEHOLDERS:
        return None
    needle = guess.casefold()
    for turn in turns:
        for attrs, text in turn.outputs:
            if 'status="ok"' in attrs and needle in text.casefold():
                return guess
    return None


_NUMBER_ONLY = re.compile(r"[-+]?[$€£]?\d[\d,]*(?:\.\d+)?%?")


def _unseen(answer: str, turns: list[_Turn]) -> bool:
    """A typed answer no REPL output can have shown: before any code printed anything, or
    a bare number that no output holds. Small models answer so from a prompt's example."""
    printed = any(
        'status="ok"' in attrs and _printed(text) for turn in turns for attrs, text in turn.outputs
    )
    if not printed:
        return True
    return bool(_NUMBER_ONLY.fullmatch(answer.strip())) and _supported(answer, turns) is None


def _typed_answer(answer: str | None, blocks: list[str]) -> str | None:
    """The answer a reply types: a text FINAL, or a block that is only FINAL(literal)."""
    if answer is None and len(blocks) == 1 and not without_last_statement(blocks[0]):
        return typed_final(blocks[0])
    return answer


def _same_step(before: _Turn, now: _Turn) -> bool:
    """The same code as an earlier step, with the same output."""
    return (
        before.reply == now.reply and [o for o in before.outputs if o[1] != REPEATED] == now.outputs
    )


class RLMEngine:
    """Runs queries: ``await engine.run(question, corpus)``."""

    def __init__(
        self,
        llm: ChatModel,
        sandboxes: SandboxProvider,
        config: EngineConfig,
        *,
        sub_llm: ChatModel | None = None,
    ) -> None:
        self.llm = llm
        self.sub_llm = sub_llm or llm
        self.sandboxes = sandboxes
        self.config = config
        self.prompts = PromptSet.load(config.prompts_dir, config.prompt_style)

    # -- public -----------------------------------------------------------------------

    async def run(
        self,
        question: str,
        corpus: Corpus,
        *,
        trace_dir: str | Path | None = None,
        project: str | None = None,
        on_event: EventCallback | None = None,
        config: EngineConfig | None = None,
    ) -> QueryResult:
        cfg = config or self.config
        trace_path = None
        if trace_dir is not None:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            trace_path = Path(trace_dir) / f"{stamp}-{uuid.uuid4().hex[:8]}.jsonl"
        recorder = TraceRecorder(trace_path)
        run = _Run(
            question=question,
            config=cfg,
            nonce=secrets.token_hex(16),
            started=time.monotonic(),
            recorder=recorder,
            on_event=on_event,
        )
        try:
            result = await self._run(run, corpus, project, trace_path)
        finally:
            recorder.close()
        return result

    async def stream(
        self, question: str, corpus: Corpus, **kwargs: Any
    ) -> AsyncIterator[TraceEvent | QueryResult]:
        """The same events as ``on_event``, as an async iterator; the result comes last."""
        queue: asyncio.Queue[TraceEvent | None] = asyncio.Queue()
        task = asyncio.create_task(self.run(question, corpus, on_event=queue.put_nowait, **kwargs))
        task.add_done_callback(lambda _: queue.put_nowait(None))
        while (event := await queue.get()) is not None:
            yield event
        yield await task

    # -- the loop -----------------------------------------------------------------------

    async def _run(
        self, run: _Run, corpus: Corpus, project: str | None, trace_path: Path | None
    ) -> QueryResult:
        cfg = run.config
        docs = corpus.sizes()
        run.corpus_chars = sum(chars for _, chars in docs)
        run.recorder.header(
            question=run.question,
            model=cfg.model,
            sub_model=cfg.effective_sub_model,
            prompts=self.prompts.source,
            prompt_hash=self.prompts.hash,
            project=project,
            project_version=corpus.version,
            documents=[name for name, _ in docs],
            config=cfg.model_dump(mode="json"),
            shesha_version=__version__,
        )
        answer: str | None = None
        status: QueryStatus = "success"
        error: str | None = None
        limit: str | None = None
        session: ExecSession | None = None
        try:
            session = await asyncio.to_thread(self.sandboxes.acquire, corpus)
            messages = self._opening(run, docs)
            answer, status = await self._loop(run, session, messages)
        except _LimitReached as hit:
            status, limit, error = hit.status, hit.limit, f"limit reached: {hit.message}"
            run.emit("limit", limit=hit.limit, message=hit.message)
        except (LLMError, SandboxError, SheshaError) as e:
            status, error = "error", str(e)
            run.emit("error", error=error, kind=type(e).__name__)
        except asyncio.CancelledError:
            if session is not None:
                session.cancel()  # stop its code now; the container is replaced
            raise
        finally:
            if session is not None:
                await asyncio.to_thread(session.close)
        if answer is None and run.limit_hit is not None and status == "success":
            status, limit = run.limit_hit.status, run.limit_hit.limit
        result = QueryResult(
            answer=answer,
            status=status,
            error=error,
            limit=limit,
            iterations=run.iteration,
            usage=run.usage,
            subcalls=run.subcalls,
            duration_s=round(time.monotonic() - run.started, 4),
            trace_path=str(trace_path) if trace_path else None,
        )
        run.iteration = result.iterations
        run.emit("summary", **result.model_dump(mode="json", exclude={"trace_path"}))
        return result

    def _opening(self, run: _Run, docs: Sequence[tuple[str, int]]) -> list[Message]:
        listed = [
            f"  [{i}] {name} ({chars:,} chars)"
            for i, (name, chars) in enumerate(docs[:MAX_LISTED_DOCS])
        ]
        if len(docs) > MAX_LISTED_DOCS:
            listed.append(f"  ... and {len(docs) - MAX_LISTED_DOCS:,} more (see doc_names)")
        system = self.prompts.render(
            "system",
            doc_count=len(docs),
            total_chars=f"{sum(chars for _, chars in docs):,}",
            doc_list="\n".join(listed) or "  (no documents)",
            subcall_chars=f"{run.config.subcall_chars:,}",
            max_output_chars=f"{run.config.max_output_chars:,}",
        )
        user = self.prompts.render("user", question=run.question)
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def _history(self, run: _Run, opening: list[Message], turns: list[_Turn]) -> list[Message]:
        """Old REPL outputs are shortened so long runs fit the model's window."""
        messages = list(opening)
        keep_from = len(turns) - run.config.keep_full_outputs
        note = self.prompts.render("output_note", nonce=run.nonce)
        for i, turn in enumerate(turns):
            messages.append({"role": "assistant", "content": turn.reply})
            if turn.nudge is not None:
                messages.append({"role": "user", "content": _joined(turn.nudge, turn.escalation)})
                continue
            parts = [note]
            for attrs, full in turn.outputs:
                text = full
                if i < keep_from and len(full) > run.config.old_output_chars:
                    cut = len(full) - run.config.old_output_chars
                    text = (
                        full[: run.config.old_output_chars]
                        + f"\n... [{cut:,} characters of this older output shortened; "
                        "variables still hold full results]"
                    )
                parts.append(_wrap(run.nonce, "repl_output", text, attrs, typed=True))
            messages.append({"role": "user", "content": _joined(*parts, turn.escalation)})
        return messages

    async def _root_call(self, run: _Run, messages: list[Message]) -> str:
        run.check()
        run.emit("llm_request", model=run.config.model, messages=messages)
        started = time.perf_counter()
        c = await self.llm.complete(messages, model=run.config.model)
        run.account("root", c)
        run.emit(
            "llm_response",
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            text=c.text,
            prompt_tokens=c.prompt_tokens,
            completion_tokens=c.completion_tokens,
            cost_usd=c.cost_usd,
        )
        return c.text

    async def _loop(
        self, run: _Run, session: ExecSession, opening: list[Message]
    ) -> tuple[str | None, QueryStatus]:
        cfg = run.config
        turns: list[_Turn] = []
        streak = _Streak()
        while run.iteration < cfg.limits.max_iterations:
            run.iteration += 1
            text = await self._root_call(run, self._history(run, opening, turns))
            reply = read_reply(text)
            blocks = list(reply.blocks)
            seen_output = any(t.outputs for t in turns)
            typed = literal_block(blocks[0]) if len(blocks) == 1 and seen_output else None
            answer = _typed_answer(reply.answer, blocks)
            if answer is not None and _unseen(answer, turns):
                turn = self._unseen_nudge(run, text, answer)
            elif reply.answer is not None:
                run.emit("final", answer=reply.answer, source="reply")
                return reply.answer, "success"
            elif typed is not None:
                # Only a number or a string, after output: the model is answering.
                turn = self._nudge(run, text, _supported(typed, turns))
            elif not blocks and reply.mentioned:
                # FINAL(...) inside a sentence: ask for it on a line of its own.
                turn = self._nudge(run, text, reply.mentioned[-1])
            elif not blocks:
                turn = self._nudge(run, text, _supported(short_answer(text), turns))
            else:
                if reply.unfenced:
                    run.emit("unfenced_code", code=blocks[0])
                found, done = await self._run_blocks(run, session, text, blocks, turns=turns)
                if done is None:
                    return found, "success"
                turn = done
                ran_before = [t for t in turns if t.outputs]
                if ran_before and _same_step(ran_before[-1], turn):
                    turn.outputs.append(("", REPEATED))
            failures = streak.add(_failure(turn, turns))
            turns.append(turn)
            if failures == REPEAT_NUDGE_AT:
                turn.escalation = self._repeat_nudge(run, turn)  # it says more than a note
            elif failures >= STALL_AT:
                return await self._answer_now(run, opening, turns, stalled=True)
        return await self._answer_now(run, opening, turns, stalled=False)

    async def _answer_now(
        self, run: _Run, opening: list[Message], turns: list[_Turn], *, stalled: bool
    ) -> tuple[str | None, QueryStatus]:
        """One last call to answer from what has been found: out of steps, or stuck."""
        messages = self._history(run, opening, turns)
        if stalled:
            prompt = self.prompts.render("stalled", repeats=STALL_AT)
            run.emit("stalled", repeats=STALL_AT, failure=_failure(turns[-1]))
        else:
            prompt = self.prompts.render("final", max_iterations=run.config.limits.max_iterations)
        messages.append({"role": "user", "content": prompt})
        text = await self._root_call(run, messages)
        # Nothing runs after this call, so a FINAL inside a code block counts too.
        answer = final_in_last_reply(text)
        source = "stalled" if stalled else "max_iterations"
        if answer is not None and answer != "None":
            run.emit("final", answer=answer, source=source)
            # A stuck model's last answer counts only if output could have shown it.
            if not stalled:
                return answer, "max_iterations"
            return answer, "stalled" if _unseen(answer, turns) else "success"
        fallback = None if answer == "None" else (text.strip() or None)
        run.emit("final", answer=fallback, source=source)
        return fallback, "stalled" if stalled else "max_iterations"

    def _repeat_nudge(self, run: _Run, turn: _Turn) -> str:
        """The second identical failure: quote it, and show the line to write."""
        failure = _failure(turn) or ""
        code = turn.failed_code or ""
        line = failing_line(code, turn.error or "")
        final = final_argument(line) if line else None
        if final is not None:
            advice = (
                f"If {final} is the answer itself, write exactly this line and nothing else:\n"
                f"FINAL({json.dumps(final, ensure_ascii=False)})"
            )
        elif turn.nudge is not None:
            advice = (
                "Reply with one ```repl block of Python that prints something new, or, if "
                'REPL output has shown the answer, with the line FINAL("your answer").'
            )
        else:
            where = f"The error is in this line: {line}\n" if line else ""
            advice = (
                f"{where}Change the code, or try another way. If REPL output has already "
                'shown the answer, write the line FINAL("your answer") instead.'
            )
        message = self.prompts.render("repeat_nudge", failure=failure, advice=advice)
        run.emit("repeat_nudge", failure=failure, message=message)
        return message

    def _no_output(self, run: _Run) -> str:
        """What an empty step is told; for documents that fit the output, to print them."""
        if 0 < run.corpus_chars <= run.config.max_output_chars:
            return f"{NO_OUTPUT}\n{SHORT_CORPUS.format(chars=run.corpus_chars)}"
        return NO_OUTPUT

    def _unseen_nudge(self, run: _Run, reply: str, answer: str) -> _Turn:
        """An answer typed before any output could have shown it: a guess."""
        nudge = self.prompts.render("unseen_answer", answer=answer)
        run.emit("unseen_answer", answer=answer, message=nudge)
        return _Turn(reply, [], nudge=nudge)

    def _nudge(self, run: _Run, reply: str, guess: str | None) -> _Turn:
        """A reply with no code to run; ``guess`` is what looks like its answer, if any."""
        if guess is not None:
            nudge = self.prompts.render("answer_nudge", answer=guess)
        else:
            nudge = self.prompts.render("nudge")
        run.emit("nudge", message=nudge)
        return _Turn(reply, [], nudge=nudge)

    async def _run_blocks(
        self,
        run: _Run,
        session: ExecSession,
        reply: str,
        blocks: list[str],
        *,
        turns: list[_Turn],
    ) -> tuple[str | None, _Turn | None]:
        """Run a reply's blocks in order: (the answer, None) on FINAL, else (None, the turn)."""
        outputs: list[tuple[str, str]] = []
        ran = 0
        error: str | None = None
        failed: str | None = None
        note: str | None = None
        for index, written in enumerate(blocks, start=1):
            code, stop_after = written, False
            typed = typed_final(code)
            after_code = index > 1 or (typed is not None and bool(without_last_statement(code)))
            if typed is not None and after_code and _supported(typed, turns) is None:
                # An answer typed after code whose output the model has not seen: a guess.
                run.emit("ignored_final", block=index, code=code)
                if index > 1:
                    break
                code, stop_after = without_last_statement(code), True
            result = await self._execute(run, session, code, index)
            ran = index
            attrs = f' block="{index}" status="{result.status}"'
            outputs.append((attrs, result.output.rstrip("\n") or self._no_output(run)))
            if result.final is not None:
                run.emit("final", answer=result.final, source="code", block=index)
                return result.final, None
            words = final_source(code)
            if words is not None and "NameError" in (result.error or ""):
                if _supported(words, turns) is not None:
                    # FINAL(Paris), FINAL(10-K): names nothing defined; text output showed.
                    run.emit("final", answer=words, source="text", block=index)
                    return words, None
                note = (
                    f"If {words} is the answer itself, not a variable, write it as text: "
                    f"FINAL({json.dumps(words, ensure_ascii=False)})"
                )
            if run.limit_hit is not None:
                raise run.limit_hit
            if result.status != "ok":
                error, failed = result.error or result.status, code
                break  # later blocks counted on this one
            if stop_after:
                break
        if ran < len(blocks):
            run.emit("skipped_blocks", ran=ran, written=len(blocks))
        # The history shows only what ran: text after it (made-up output, a typed FINAL,
        # blocks never run) would mislead the model next to the real output.
        turn = _Turn(through_block(reply, ran), outputs, error=error, failed_code=failed)
        turn.escalation = note
        return None, turn

    async def _execute(
        self,
        run: _Run,
        session: ExecSession,
        code: str,
        index: int,
    ) -> ExecResult:
        run.emit("code", block=index, code=code)
        started = time.perf_counter()
        try:
            result = await self._pull(run, session, code)
        except SandboxError as e:  # the container misbehaved; the session restarts it
            result = ExecResult(status="crashed", error=f"SandboxError: {e}")
        run.emit(
            "exec_result",
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            block=index,
            status=result.status,
            stdout=result.stdout,
            stderr=result.stderr,
            error=result.error,
            final=result.final,
            cpu_s=result.cpu_s,
            peak_memory_mb=result.peak_memory_mb,
            subcalls=result.subcalls,
        )
        return result

    async def _pull(self, run: _Run, session: ExecSession, code: str) -> ExecResult:
        """Run code, relaying each batch of sub-calls it asks for on this event loop."""
        await asyncio.to_thread(
            session.start,
            code,
            timeout=run.config.limits.exec_timeout_s,
            max_output_chars=run.config.max_output_chars,
        )
        while isinstance(step := await asyncio.to_thread(session.next), SubcallBatch):
            answers = await self._subcalls(run, step.items)
            await asyncio.to_thread(session.answer, answers)
        return step

    # -- sub-calls ----------------------------------------------------------------------

    async def _subcalls(self, run: _Run, items: Sequence[SubcallItem]) -> list[str]:
        try:
            run.check(upcoming_subcalls=len(items))
        except _LimitReached as hit:
            run.emit("limit", limit=hit.limit, message=hit.message, during="subcalls")
            return [f"[llm_query refused: limit reached: {hit.message}]"] * len(items)
        run.subcalls += len(items)
        semaphore = asyncio.Semaphore(run.config.limits.subcall_concurrency)

        async def one(item: SubcallItem) -> str:
            async with semaphore:
                return await self._subcall(run, item)

        return list(await asyncio.gather(*(one(item) for item in items)))

    async def _subcall(self, run: _Run, item: SubcallItem) -> str:
        model = run.config.effective_sub_model
        user = item.instruction
        if item.content:
            user += "\n\n" + _wrap(run.nonce, UNTRUSTED, item.content)
        messages: list[Message] = [
            {"role": "system", "content": self.prompts.render("subcall_system")},
            {"role": "user", "content": user},
        ]
        key = prompt_key(messages)
        limit = run.config.max_subcall_chars
        if limit is not None and len(item.content) + len(item.instruction) > limit:
            message = (
                f"[llm_query error: the content is {len(item.content):,} characters; the "
                f"sub-model reads at most {limit:,}. Split it into chunks, e.g. "
                f"[text[i:i + {limit // 2}] for i in range(0, len(text), {limit // 2})], "
                "or find the relevant part with code first.]"
            )
            run.emit("subcall_response", key=key, error=message)
            return message
        run.emit(
            "subcall_request",
            model=model,
            key=key,
            instruction=item.instruction,
            content_chars=len(item.content),
            content_preview=item.content[:500],
        )
        started = time.perf_counter()
        try:
            c = await self.sub_llm.complete(messages, model=model)
        except LLMError as e:
            run.emit("subcall_response", key=key, error=str(e))
            return f"[llm_query error: {str(e).splitlines()[0]}]"
        run.account("sub", c)
        run.emit(
            "subcall_response",
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            key=key,
            text=c.text,
            prompt_tokens=c.prompt_tokens,
            completion_tokens=c.completion_tokens,
            cost_usd=c.cost_usd,
        )
        return c.text
