"""The RLM loop: the root model writes code, the sandbox runs it, the host relays
sub-calls in parallel, and every step goes to the trace.

A question goes down: engine -> LLM (root and sub-calls) and sandbox; the engine pulls
from the sandbox (a batch of sub-calls, or a result), so nothing below calls back up.
Events go out to the trace and to the caller's ``on_event``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from shesha import __version__
from shesha.errors import (
    ConfigError,
    LLMContextWindowError,
    LLMError,
    SandboxError,
    SheshaError,
)
from shesha.llm.types import (
    ChatModel,
    Choices,
    Completion,
    Message,
    NotedChoice,
    OutputConstraint,
)
from shesha.retrieval.index import PassageIndex
from shesha.retrieval.records import Records, parse_records
from shesha.rlm import helpers
from shesha.rlm.budget import Budget, LimitReached
from shesha.rlm.cache import CachedAnswer, SubcallCache, cache_key
from shesha.rlm.citations import Citation, check
from shesha.rlm.config import EngineConfig
from shesha.rlm.counting import count_mentions
from shesha.rlm.events import (
    TRACE_VERSION,
    Cited,
    CodeRun,
    ExecDone,
    Failed,
    Final,
    FinalSource,
    IgnoredFinal,
    LimitHit,
    LLMRequest,
    LLMResponse,
    Nudged,
    RepeatNudge,
    SkippedBlocks,
    Stalled,
    StrategyChosen,
    SubcallRequest,
    SubcallResponse,
    Summary,
    ToolCalled,
    TraceEvent,
    TraceHeader,
    UnfencedCode,
    UnseenAnswer,
    Warned,
)
from shesha.rlm.extract import (
    ParsedReply,
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
from shesha.rlm.helpers import Helpers
from shesha.rlm.history import (
    PREVIEW_DOCS,
    UNTRUSTED,
    Preview,
    Turn,
    history,
    opening,
    preview,
    reading,
    subcall_messages,
    with_earlier,
    wrap,
)
from shesha.rlm.mapping import map_records
from shesha.rlm.progress import (
    EMPTY_SEARCH,
    NO_OUTPUT,
    NOT_AN_ANSWER,
    NOTHING_FOUND,
    NOTHING_FOUND_NOTE,
    REPEAT_NUDGE_AT,
    REPEATED,
    SHORT_CORPUS,
    STALL_AT,
    Streak,
    failure,
    last_value,
    no_answer,
    same_step,
    supported,
    typed_answer,
    unseen,
)
from shesha.rlm.prompting import PromptSet
from shesha.rlm.reading import IndexSource, Reader
from shesha.rlm.result import QueryResult
from shesha.rlm.strategy import (
    COMPARES,
    DEFAULT_WINDOW_CHARS,
    ROUTES,
    Choice,
    StrategyName,
    across_the_text,
    choose,
    counts_mentions,
    route,
)
from shesha.rlm.tools import HostTools
from shesha.rlm.trace import EventCallback, TraceRecorder, prompt_key
from shesha.rlm.usage import QueryStatus
from shesha.sandbox.corpus import Corpus
from shesha.sandbox.execution import (
    ExecResult,
    RawCitation,
    Steps,
    SubcallItem,
    ToolCall,
    ToolOutcome,
    drive,
)

TOOLS_NOTE = (
    "Host tools you may call from code, by name; arguments and results are JSON (a tool "
    "that fails raises an error in your code):\n"
)
OUTPUT_NOTE = (
    "Give the answer as FINAL(value), where value is a dict (or JSON text) that matches "
    "this JSON schema:\n"
)
SHOW_WHOLE = """for name, text in zip(doc_names, context):
    print(f"=== {name} ===")
    print(text)"""
"""What the engine runs first when the documents are short enough to read whole."""


SAMPLE_CHARS = 400
"""Of the first document, shown when a step prints nothing."""

OutputCheck = Callable[[str], Any]
"""Parses and validates an answer into the typed output; raises ValueError if it cannot."""


class LeasedSandbox(Steps, Protocol):
    """One query's hold on a sandbox (``SandboxLease`` in production). Code runs step
    by step (``Steps``), and the engine pulls (``drive``). The methods block; the engine
    calls them from a worker thread."""

    losses: int
    """Times the sandbox was lost (timeout, out of memory, cancel) and the namespace with
    it; the next ``start`` gets a fresh one with the documents loaded."""

    def cancel(self) -> None:
        """Stop running code at once; called from any thread."""

    def reset(self) -> None:
        """A fresh namespace; the documents stay loaded."""

    def close(self) -> None: ...


class SandboxProvider(Protocol):
    """Hands out sandboxes holding a corpus (``SandboxPool`` in production)."""

    kind: str
    """Which sandbox: docker, bwrap, process..."""
    isolation: str
    """What it enforces, in a line."""

    def acquire(
        self, corpus: Corpus | None = None, timeout: float | None = None
    ) -> LeasedSandbox: ...


@dataclass
class _LiveQuery:
    """The state of one query. Mutated on the event loop's thread only."""

    question: str
    config: EngineConfig
    nonce: str
    recorder: TraceRecorder
    on_event: EventCallback | None
    budget: Budget
    iteration: int = 0
    corpus_chars: int = 0
    docs: list[tuple[str, int]] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    inflight: dict[str, asyncio.Future[CachedAnswer | None]] = field(default_factory=dict)
    """Sub-calls out now, by cache key: an identical one waits for the same answer."""
    reading: bool = False
    """The documents were read whole: a first reply with no code is the answer."""
    plain_start: list[Message] = field(default_factory=list)
    """The usual opening (documents described, not shown), should reading whole fail."""
    citations: list[RawCitation] = field(default_factory=list)
    tool_calls: int = 0
    ocr_pages: dict[str, list[int]] = field(default_factory=dict)
    output: Any = None
    """The typed answer, when one was asked for and the answer passed its check."""
    sample: str = ""
    """The start of the first document, wrapped as untrusted: what an empty search shows."""
    helpers: Helpers | None = None
    """search and llm_map, for the code."""
    tried: set[StrategyName] = field(default_factory=set)
    """The reading strategies tried already (a stall does not try one twice)."""
    index: PassageIndex | None = None
    records: Records | None = None
    """The corpus as records, when choosing the strategy read it so (the map strategy's)."""

    def emit(self, event: TraceEvent) -> None:
        event = event.model_copy(update={"iteration": self.iteration})
        self.recorder.write(event)
        if self.on_event is not None:
            self.on_event(event)

    def check(self, upcoming_subcalls: int = 0) -> None:
        self.budget.check(upcoming_subcalls)

    def account(self, bucket: Literal["root", "sub"], c: Completion) -> None:
        warning = self.budget.account(bucket, c)
        if warning is not None:
            self.emit(Warned(message=warning))


async def _no_tools(call: ToolCall) -> ToolOutcome:
    return ToolOutcome(ok=False, error=f"there is no tool {call.name!r}: this query has none")


def _preview(value: Any, limit: int = 500) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def _previews(corpus: Corpus) -> tuple[list[Preview], str]:
    """The first documents' line counts and first lines, for the opening; and the start
    of the first, for an empty search."""
    documents = corpus.documents()
    sample = documents[0][1][:SAMPLE_CHARS] if documents else ""
    return [preview(text) for _, text in documents[:PREVIEW_DOCS]], sample


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


@dataclass(frozen=True)
class _Model:
    """The root model as the reading strategies call it, for one query."""

    engine: RLMEngine
    query: _LiveQuery

    async def ask(self, messages: list[Message], constraint: OutputConstraint | None = None) -> str:
        return await self.engine._root_call(self.query, messages, constraint)

    def problem(self, answer: str) -> str | None:
        return self.engine._typed(self.query, answer)

    def with_schema(self, start: list[Message]) -> list[Message]:
        if self.engine.config.output_schema is None:
            return start
        return self.engine._with_extras(start)


class RLMEngine:
    """Runs queries: ``await engine.run(question, corpus)``."""

    def __init__(
        self,
        llm: ChatModel,
        sandboxes: SandboxProvider,
        config: EngineConfig,
        *,
        sub_llm: ChatModel | None = None,
        cache: SubcallCache | None = None,
        tools: HostTools | None = None,
        check_output: OutputCheck | None = None,
    ) -> None:
        """``cache``: sub-call answers to reuse and to keep (give one only when the
        sub-model is deterministic; see ``shesha.rlm.cache``). ``tools``: host functions
        the code may call. ``check_output``: turns an answer into the typed value asked
        for, or raises ValueError saying what is wrong (the model then tries again)."""
        self.llm = llm
        self.sub_llm = sub_llm or llm
        self.cache = cache
        self.tools = tools
        self.check_output = check_output
        if tools and (taken := sorted(helpers.NAMES & set(tools.tools))):
            raise ConfigError(
                f"A tool may not be named {', '.join(taken)}: the engine's own helper is.",
                hint="Rename the function.",
            )
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
        lease: LeasedSandbox | None = None,
        earlier: Sequence[tuple[str, str | None]] = (),
        ocr_pages: Mapping[str, Sequence[int]] | None = None,
        passages: IndexSource | None = None,
    ) -> QueryResult:
        """Ask ``question`` of ``corpus``. A conversation passes its own ``lease`` (kept
        open, with its namespace, between questions) and its ``earlier`` questions and
        answers. ``ocr_pages`` names the pages of each document that were read by OCR
        (recorded in the trace's header). ``passages`` opens the corpus's passage index,
        for the retrieve strategy."""
        trace_path = None
        if trace_dir is not None:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            trace_path = Path(trace_dir) / f"{stamp}-{uuid.uuid4().hex[:8]}.jsonl"
        recorder = TraceRecorder(trace_path)
        query = _LiveQuery(
            question=question,
            config=self.config,
            nonce=secrets.token_hex(16),
            recorder=recorder,
            on_event=on_event,
            budget=Budget(self.config.limits),
            ocr_pages={name: list(pages) for name, pages in (ocr_pages or {}).items() if pages},
        )
        try:
            result = await self._run(
                query, corpus, project, trace_path, given=lease, earlier=earlier,
                passages=passages,
            )  # fmt: skip
        finally:
            recorder.close()
            if query.index is not None:
                query.index.close()
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
        self,
        query: _LiveQuery,
        corpus: Corpus,
        project: str | None,
        trace_path: Path | None,
        *,
        given: LeasedSandbox | None,
        earlier: Sequence[tuple[str, str | None]],
        passages: IndexSource | None,
    ) -> QueryResult:
        docs = list(corpus.sizes())
        query.docs, query.corpus_chars = docs, sum(chars for _, chars in docs)
        query.recorder.write(self._header(query, corpus, project))
        answer: str | None = None
        status: QueryStatus = "success"
        error: str | None = None
        limit: str | None = None
        reader = Reader(
            query,
            corpus,
            _Model(self, query),
            prompts=self.prompts,
            passages=passages,
            earlier=earlier,
        )

        async def subcalls(items: Sequence[SubcallItem]) -> list[str]:
            return await self._subcalls(query, items)

        query.helpers = Helpers(reader.index, subcalls, [name for name, _ in docs])
        try:
            answer, status = await self._answer(query, corpus, reader, given, earlier)
        except LimitReached as hit:
            status, limit, error = hit.status, hit.limit, f"limit reached: {hit.message}"
            query.emit(LimitHit(limit=hit.limit, message=hit.message))
        except (LLMError, SandboxError, SheshaError) as e:
            status, error = "error", str(e)
            query.emit(Failed(error=error, kind=type(e).__name__))
        reached = query.budget.reached
        if answer is None and reached is not None and status == "success":
            status, limit = reached.status, reached.limit
        citations = await self._citations(query, corpus, answer)
        if status == "error" and error is None:
            error = "the answer does not match the output schema"
        result = QueryResult(
            answer=answer,
            status=status,
            error=error,
            limit=limit,
            iterations=query.iteration,
            usage=query.budget.usage,
            subcalls=query.budget.subcalls,
            duration_s=round(query.budget.elapsed_s, 4),
            trace_path=str(trace_path) if trace_path else None,
            citations=citations,
            output=query.output,
            tool_calls=query.tool_calls,
            sandbox=self.sandboxes.kind,
            isolation=self.sandboxes.isolation,
        )
        shown = {"trace_path", "citations", "output", "sandbox", "isolation"}
        query.emit(Summary(**result.model_dump(exclude=shown)))
        return result

    def _header(self, query: _LiveQuery, corpus: Corpus, project: str | None) -> TraceHeader:
        cfg = query.config
        return TraceHeader(
            trace_version=TRACE_VERSION,
            question=query.question,
            model=cfg.model,
            sub_model=cfg.effective_sub_model,
            prompts=self.prompts.source,
            prompt_hash=self.prompts.hash,
            project=project,
            project_version=corpus.version,
            documents=[name for name, _ in query.docs],
            config=cfg.model_dump(mode="json"),
            shesha_version=__version__,
            sandbox=self.sandboxes.kind,
            isolation=self.sandboxes.isolation,
            ocr_pages=query.ocr_pages,
        )

    async def _answer(
        self,
        query: _LiveQuery,
        corpus: Corpus,
        reader: Reader,
        given: LeasedSandbox | None,
        earlier: Sequence[tuple[str, str | None]],
    ) -> tuple[str | None, QueryStatus]:
        """The strategy the engine chooses; the code loop when it finds nothing (or is the
        choice), and reading again when the code loop stalls."""
        choice = await self._choose(query, corpus)
        query.emit(StrategyChosen(strategy=choice.strategy, reason=choice.reason))
        answer, first = await self._strategy(query, choice.strategy, corpus, reader, earlier)
        if answer is not None:
            return answer, "success"
        lease = given
        try:
            if lease is None:
                lease = await asyncio.to_thread(self.sandboxes.acquire, corpus)
            answer, status = await self._code_loop(query, lease, corpus, earlier, first=first)
        except asyncio.CancelledError:
            if lease is not None:
                lease.cancel()  # stop its code now; the container is replaced
            raise
        finally:
            if lease is not None and given is None:
                await asyncio.to_thread(lease.close)
        stuck = status == "stalled" or (answer is None and status == "max_iterations")
        if stuck and query.config.strategy == "auto":
            # Stuck, or out of steps with nothing: answer by reading instead.
            read = await reader.fallback()
            if read is not None:
                return read, "success"
        return answer, status

    async def _strategy(
        self,
        query: _LiveQuery,
        strategy: StrategyName,
        corpus: Corpus,
        reader: Reader,
        earlier: Sequence[tuple[str, str | None]],
    ) -> tuple[str | None, str | None]:
        """The chosen strategy's (answer, None); (None, code the model wrote instead of a
        reading's answer); (None, None) when it found nothing: the code loop goes on."""
        if strategy == "code":
            return None, None
        if strategy in ("count", "map"):
            query.tried.add(strategy)
            if strategy == "count":
                return await count_mentions(query, corpus, _Model(self, query), self.prompts), None
            return await self._map(query, corpus, earlier), None
        return await reader.answer(strategy)

    async def _choose(self, query: _LiveQuery, corpus: Corpus) -> Choice:
        cfg = query.config
        if cfg.strategy == "auto" and self.tools:
            return Choice("code", "host tools are called from code")
        window = cfg.show_whole_chars
        if cfg.strategy != "auto" and window <= 0:
            window = DEFAULT_WINDOW_CHARS
        mentions = counts_mentions(query.question)
        needs_all = True if mentions else across_the_text(query.question)
        records: Records | None = None
        compares = bool(COMPARES.search(query.question))
        if (
            cfg.strategy == "auto"
            and window > 0
            and not mentions
            and (needs_all is not False or compares)
        ):
            documents = await asyncio.to_thread(corpus.documents)
            records = query.records = await asyncio.to_thread(parse_records, documents)
            if needs_all is False and records is not None and compares:
                needs_all = None  # over records, "more ... than" may be counted
        if needs_all is None:
            # Past the window, or over records, it matters; prose that fits is read.
            past = window < query.corpus_chars or records is not None
            ask = cfg.strategy == "auto" and window > 0 and past
            needs_all = await self._route(query, records) if ask else False
        return choose(
            cfg.strategy, query.corpus_chars, window, needs_all=needs_all, mentions=mentions,
            records=records is not None,
        )  # fmt: skip

    async def _map(
        self, query: _LiveQuery, corpus: Corpus, earlier: Sequence[tuple[str, str | None]]
    ) -> str | None:
        """The map strategy, with ``llm_map`` as the code's own: the same budget, line,
        cache and trace."""
        if query.helpers is None:
            return None  # set before any strategy runs; a query without them cannot map
        limit = query.config.limits.max_subcalls
        room = None if limit is None else max(limit - query.budget.subcalls, 0)
        helpers = query.helpers
        records = query.records
        if records is None:  # asked for with --strategy map: the choice did not read them
            documents = await asyncio.to_thread(corpus.documents)
            records = await asyncio.to_thread(parse_records, documents)
        if records is None:
            return None

        async def llm_map(ask: str, items: list[str], labels: list[str]) -> list[str | None]:
            return await helpers.llm_map(ask, items, labels)

        return await map_records(
            query, records, _Model(self, query), self.prompts, llm_map, room=room, earlier=earlier
        )

    async def _route(self, query: _LiveQuery, records: Records | None) -> bool:
        """Where the words cannot tell, one call: is the answer stated somewhere, or
        counted across the text (across the records, when it is records)? One word out
        of ``ROUTES``."""
        prompt = (
            self.prompts.render("route", question=query.question)
            if records is None
            else self.prompts.render(
                "route_records",
                question=query.question,
                records=f"{len(records.rows):,}",
                fields=wrap(query.nonce, UNTRUSTED, ", ".join(records.fields)),
            )
        )
        messages: list[Message] = [{"role": "user", "content": prompt}]
        text = await self._root_call(query, messages, Choices(ROUTES))
        return route(text)

    async def _code_loop(
        self,
        query: _LiveQuery,
        lease: LeasedSandbox,
        corpus: Corpus,
        earlier: Sequence[tuple[str, str | None]],
        *,
        first: str | None,
    ) -> tuple[str | None, QueryStatus]:
        """The free-form loop. ``first``: the model's reply to the reading prompt, when it
        wrote code instead of an answer: it is run as the first step, with the documents
        shown as they were."""
        previews, sample = await asyncio.to_thread(_previews, corpus)
        query.sample = wrap(query.nonce, UNTRUSTED, sample) if sample else "(an empty text)"
        plain = opening(
            self.prompts,
            query.config,
            query.question,
            query.docs,
            previews=previews,
            nonce=query.nonce,
        )
        start = plain
        if first is not None or (self._whole(query) and "read" not in query.tried):
            start = await self._read_whole(query, lease) or start
        if start is plain:
            first = None
        start = with_earlier(self.prompts, self._with_extras(start), earlier)
        query.plain_start = with_earlier(self.prompts, self._with_extras(plain), earlier)
        return await self._loop(query, lease, start, first=first)

    async def _root_call(
        self, query: _LiveQuery, messages: list[Message], constraint: OutputConstraint | None = None
    ) -> str:
        query.check()
        query.emit(LLMRequest(model=query.config.model, messages=messages))
        started = time.perf_counter()
        c = await self.llm.complete(messages, model=query.config.model, constraint=constraint)
        query.account("root", c)
        query.emit(
            LLMResponse(
                duration_ms=_ms_since(started),
                text=c.text,
                prompt_tokens=c.prompt_tokens,
                completion_tokens=c.completion_tokens,
                cost_usd=c.cost_usd,
                cached_prompt_tokens=c.cached_prompt_tokens,
            )
        )
        return c.text

    def _messages(self, query: _LiveQuery, start: list[Message]) -> list[Message]:
        return history(self.prompts, query.config, query.nonce, start, query.turns)

    async def _citations(
        self, query: _LiveQuery, corpus: Corpus, answer: str | None
    ) -> list[Citation]:
        """The code's citations, checked against the stored text; with verify_citations,
        the sub-model also says whether each found quote supports the answer."""
        if not query.citations:
            return []
        checked = await asyncio.to_thread(check, query.citations, corpus)
        if query.config.verify_citations and answer is not None:
            found = [c for c in checked if c.status == "verified"]
            verdicts = await self._subcalls(
                query,
                [
                    SubcallItem(
                        f"Does this passage support the answer {answer!r}? Answer yes or no.",
                        c.quote,
                        ("yes", "no"),
                    )
                    for c in found
                ],
            )
            for c, verdict in zip(found, verdicts, strict=True):
                c.supports = verdict.strip().lower().startswith("yes")
        query.emit(Cited(citations=[c.model_dump(mode="json") for c in checked]))
        return checked

    def _with_extras(self, start: list[Message]) -> list[Message]:
        """The system prompt, with the host tools and the answer's schema when there are."""
        extras = []
        if self.tools:
            extras.append(TOOLS_NOTE + self.tools.describe())
        if self.config.output_schema is not None:
            schema = json.dumps(self.config.output_schema, ensure_ascii=False)
            extras.append(OUTPUT_NOTE + schema)
        if not extras:
            return start
        system = {**start[0], "content": "\n\n".join([start[0]["content"], *extras])}
        return [system, *start[1:]]

    def _whole(self, query: _LiveQuery) -> bool:
        """Whether the documents are short enough to be shown whole."""
        return 0 < query.corpus_chars <= query.config.show_whole_chars

    async def _read_whole(self, query: _LiveQuery, lease: LeasedSandbox) -> list[Message] | None:
        """Documents short enough to read are printed whole by the sandbox and put in the
        opening message, with the question after them: a small model reads them better
        than it searches them. The step is the engine's (iteration 0). None when they
        could not be printed."""
        limit = query.config.show_whole_chars
        result = await self._execute(query, lease, SHOW_WHOLE, 1, max_output_chars=limit + 4_000)
        if result.status != "ok":
            return None
        text = result.output.rstrip("\n")
        query.turns.append(Turn("", [(' block="1" status="ok"', text)], shown=True))
        query.reading = True
        return reading(self.prompts, query.nonce, query.question, query.docs, text)

    def _stop_reading(self, query: _LiveQuery, error: LLMContextWindowError) -> list[Message]:
        """The documents shown whole did not fit the model's window after all (its
        tokenizer counts more than estimated): go on as a usual query, with the documents
        described, not shown. The namespace stays; the turns so far are dropped, since
        they showed the documents."""
        query.reading = False
        query.turns.clear()
        query.emit(
            Warned(
                message="The documents were too long to read whole for this model "
                f"({error.requested or 'more'} tokens asked, {error.limit or 'fewer'} fit): "
                "answering with code instead."
            )
        )
        return query.plain_start

    async def _loop(
        self,
        query: _LiveQuery,
        lease: LeasedSandbox,
        start: list[Message],
        *,
        first: str | None = None,
    ) -> tuple[str | None, QueryStatus]:
        turns = query.turns
        streak = Streak()
        while query.iteration < query.config.limits.max_iterations:
            try:
                if first is not None:  # already asked: the reply to the reading prompt
                    text, first = first, None
                else:
                    query.iteration += 1
                    text = await self._root_call(query, self._messages(query, start))
            except LLMContextWindowError as e:
                if not query.reading:
                    raise
                start = self._stop_reading(query, e)
                text = await self._root_call(query, self._messages(query, start))
            found, turn = await self._step(query, lease, text)
            if turn is None:
                problem = self._typed(query, found)
                if problem is None:
                    return found, "success"
                turn = Turn(text, [], nudge=problem)
                query.emit(Nudged(message=problem))
            failures = streak.add(failure(turn, turns))
            turns.append(turn)
            if failures == REPEAT_NUDGE_AT:
                turn.escalation = self._repeat_nudge(query, turn)  # it says more than a note
            elif failures >= STALL_AT:
                return await self._answer_now(query, start, stalled=True)
        return await self._answer_now(query, start, stalled=False)

    async def _step(
        self, query: _LiveQuery, lease: LeasedSandbox, text: str
    ) -> tuple[str | None, Turn | None]:
        """What one reply does: (the answer, None) when it ends the query, else (None, the
        turn the history shows next)."""
        reply = read_reply(text)
        blocks = list(reply.blocks)
        answer = self._answer_in(query, text, reply, blocks)
        if answer is not None:
            query.emit(Final(answer=answer, source="reply"))
            return answer, None
        nudged = self._without_code(query, text, reply, blocks)
        if nudged is not None:
            return None, nudged
        if reply.unfenced:
            query.emit(UnfencedCode(code=blocks[0]))
        found, turn = await self._run_blocks(query, lease, text, blocks)
        if turn is not None:
            ran_before = [t for t in query.turns if t.outputs and not t.shown]
            if ran_before and same_step(ran_before[-1], turn):
                turn.outputs.append(("", REPEATED))
        return found, turn

    def _answer_in(
        self, query: _LiveQuery, text: str, reply: ParsedReply, blocks: list[str]
    ) -> str | None:
        """The answer a reply gives as text, if it counts: a FINAL line no output has to
        back (see ``unseen``), or, having read the documents whole, a first plain reply."""
        if query.reading and query.iteration == 1 and not blocks:
            said = reply.answer or short_answer(text) or text.strip()
            return None if no_answer(said) else said
        typed = typed_answer(reply.answer, blocks)
        if reply.answer is not None and not (typed is not None and self._guess(query, typed)):
            return reply.answer
        return None

    def _without_code(
        self, query: _LiveQuery, text: str, reply: ParsedReply, blocks: list[str]
    ) -> Turn | None:
        """The nudge for a reply with nothing to run (a guess, a bare answer, prose)."""
        turns = query.turns
        answer = typed_answer(reply.answer, blocks)
        if answer is not None and self._guess(query, answer):
            return self._unseen_nudge(query, text, answer)
        if len(blocks) == 1 and any(t.outputs for t in turns):
            typed = literal_block(blocks[0])
            if typed is not None:  # only a number or a string, after output: an answer
                return self._nudge(query, text, supported(typed, turns))
        if not blocks and reply.mentioned:
            # FINAL(...) inside a sentence: ask for it on a line of its own.
            return self._nudge(query, text, reply.mentioned[-1])
        if not blocks:
            return self._nudge(query, text, supported(short_answer(text), turns))
        return None

    def _typed(self, query: _LiveQuery, answer: str | None) -> str | None:
        """None when the answer is fine (and, with a schema, its typed value is kept);
        else what to tell the model."""
        if self.check_output is None or answer is None:
            return None
        try:
            query.output = self.check_output(answer)
        except ValueError as e:
            return (
                f"That answer does not match the output schema: {e}\n"
                "Give FINAL(value) again, with a value that matches the schema."
            )
        return None

    async def _answer_now(
        self, query: _LiveQuery, start: list[Message], *, stalled: bool
    ) -> tuple[str | None, QueryStatus]:
        """One last call to answer from what has been found: out of steps, or stuck."""
        messages = self._messages(query, start)
        if stalled:
            prompt = self.prompts.render("stalled", repeats=STALL_AT)
            query.emit(Stalled(repeats=STALL_AT, failure=failure(query.turns[-1])))
        else:
            prompt = self.prompts.render("final", max_iterations=query.config.limits.max_iterations)
        messages.append({"role": "user", "content": prompt})
        text = await self._root_call(query, messages)
        # Nothing runs after this call, so a FINAL inside a code block counts too.
        answer = final_in_last_reply(text)
        source: FinalSource = "stalled" if stalled else "max_iterations"
        if answer is not None and not no_answer(answer):
            query.emit(Final(answer=answer, source=source))
            # A stuck model's last answer counts only if output could have shown it.
            problem = self._typed(query, answer)
            if problem is not None:
                query.emit(Failed(error=problem, kind="OutputError"))
                return answer, "error"
            if not stalled:
                return answer, "max_iterations"
            return answer, "stalled" if self._guess(query, answer) else "success"
        # No answer: never the model's sentence. The caller reads the documents instead.
        query.emit(Final(answer=None, source=source))
        return None, "stalled" if stalled else "max_iterations"

    @staticmethod
    def _guess(query: _LiveQuery, answer: str) -> bool:
        """An answer typed before any output could have shown it, for a model that guesses
        so (the local profile): refused, and asked again. Other models' answers stand."""
        return query.config.refuse_unseen and unseen(answer, query.turns)

    def _repeat_nudge(self, query: _LiveQuery, turn: Turn) -> str:
        """The second identical failure: quote it, and show the line to write."""
        failed = failure(turn) or ""
        code = turn.failed_code or ""
        line = failing_line(code, turn.error or "")
        final = final_argument(line) if line else None
        if final is not None and final != "None" and not no_answer(final):  # not FINAL(None)
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
        message = self.prompts.render("repeat_nudge", failure=failed, advice=advice)
        query.emit(RepeatNudge(failure=failed, message=message))
        return message

    def _no_output(self, query: _LiveQuery) -> str:
        """What an empty step is told; for documents that fit the output, to print them."""
        if 0 < query.corpus_chars <= query.config.max_output_chars:
            return f"{NO_OUTPUT})\n{SHORT_CORPUS.format(chars=query.corpus_chars)}"
        return NO_OUTPUT + EMPTY_SEARCH.format(sample=query.sample)

    def _unseen_nudge(self, query: _LiveQuery, reply: str, answer: str) -> Turn:
        """An answer typed before any output could have shown it: a guess."""
        nudge = self.prompts.render("unseen_answer", answer=answer)
        printed = last_value(query.turns)
        if printed is not None and printed != answer:
            # Value handoff: the model retyped another value than the one its code printed.
            nudge += (
                f"\nYour last output was {printed}. If that is the answer, write exactly: "
                f"FINAL({json.dumps(printed, ensure_ascii=False)})"
            )
        query.emit(UnseenAnswer(answer=answer, message=nudge))
        return Turn(reply, [], nudge=nudge)

    def _nudge(self, query: _LiveQuery, reply: str, guess: str | None) -> Turn:
        """A reply with no code to run; ``guess`` is what looks like its answer, if any."""
        if guess is not None:
            nudge = self.prompts.render("answer_nudge", answer=guess)
        else:
            nudge = self.prompts.render("nudge")
        query.emit(Nudged(message=nudge))
        return Turn(reply, [], nudge=nudge)

    async def _run_blocks(
        self, query: _LiveQuery, lease: LeasedSandbox, reply: str, blocks: list[str]
    ) -> tuple[str | None, Turn | None]:
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
            guessed = typed is not None and supported(typed, query.turns) is None
            if after_code and guessed and query.config.refuse_unseen:
                # An answer typed after code whose output the model has not seen: a guess
                # (the local profile's check; other models' answers stand).
                query.emit(IgnoredFinal(block=index, code=code))
                if index > 1:
                    break
                code, stop_after = without_last_statement(code), True
            result = await self._execute(query, lease, code, index)
            ran = index
            attrs = f' block="{index}" status="{result.status}"'
            printed = result.output.rstrip("\n")
            if result.status == "ok" and printed.strip() in NOTHING_FOUND:
                printed += "\n" + NOTHING_FOUND_NOTE
            outputs.append((attrs, printed or self._no_output(query)))
            if result.final is not None and no_answer(result.final):
                # FINAL("None") after FINAL(None) was refused: still no answer.
                error, failed = NOT_AN_ANSWER.format(answer=result.final), code
                outputs[-1] = (attrs.replace('"ok"', '"error"'), error)
                break
            if result.final is not None:
                query.emit(Final(answer=result.final, source="code", block=index))
                return result.final, None
            words = final_source(code)
            if words is not None and "NameError" in (result.error or ""):
                if supported(words, query.turns) is not None:
                    # FINAL(Paris), FINAL(10-K): names nothing defined; text output showed.
                    query.emit(Final(answer=words, source="text", block=index))
                    return words, None
                note = (
                    f"If {words} is the answer itself, not a variable, write it as text: "
                    f"FINAL({json.dumps(words, ensure_ascii=False)})"
                )
            if query.budget.reached is not None:
                raise query.budget.reached
            if result.status != "ok":
                error, failed = result.error or result.status, code
                break  # later blocks counted on this one
            if stop_after:
                break
        if ran < len(blocks):
            query.emit(SkippedBlocks(ran=ran, written=len(blocks)))
        # The history shows only what ran: text after it (made-up output, a typed FINAL,
        # blocks never run) would mislead the model next to the real output.
        turn = Turn(through_block(reply, ran), outputs, error=error, failed_code=failed)
        turn.escalation = note
        return None, turn

    async def _execute(
        self,
        query: _LiveQuery,
        lease: LeasedSandbox,
        code: str,
        index: int,
        *,
        max_output_chars: int | None = None,
    ) -> ExecResult:
        query.emit(CodeRun(block=index, code=code))
        started = time.perf_counter()
        try:
            result = await self._pull(query, lease, code, max_output_chars)
        except SandboxError as e:  # the container misbehaved; the lease restarts it
            result = ExecResult(status="crashed", error=f"SandboxError: {e}")
        query.emit(
            ExecDone(
                duration_ms=_ms_since(started),
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
        )
        return result

    async def _pull(
        self, query: _LiveQuery, lease: LeasedSandbox, code: str, max_output_chars: int | None
    ) -> ExecResult:
        """Run code, relaying each batch of sub-calls it asks for on this event loop."""

        async def subcalls(items: Sequence[SubcallItem]) -> list[str]:
            return await self._subcalls(query, items)

        async def tool(call: ToolCall) -> ToolOutcome:
            return await self._tool(query, call)

        result = await drive(
            lease,
            code,
            subcalls=subcalls,
            tool=tool,
            timeout=query.config.limits.exec_timeout_s,
            max_output_chars=max_output_chars or query.config.max_output_chars,
            tools=[*helpers.SPECS, *(self.tools.specs() if self.tools else ())],
        )
        query.citations.extend(result.citations)
        return result

    async def _tool(self, query: _LiveQuery, call: ToolCall) -> ToolOutcome:
        """A host tool, called from the sandbox: checked against the budget, traced."""
        limit = query.config.limits.max_tool_calls
        if limit is not None and query.tool_calls >= limit:
            message = f"{query.tool_calls} tool calls made, limit {limit}"
            query.emit(LimitHit(limit="max_tool_calls", message=message, during="tools"))
            return ToolOutcome(ok=False, error=f"refused: limit reached: {message}")
        query.tool_calls += 1
        started = time.perf_counter()
        if call.name in helpers.NAMES and query.helpers is not None:
            outcome = await query.helpers.call(call)
        else:
            outcome = await (self.tools.call(call) if self.tools else _no_tools(call))
        query.emit(
            ToolCalled(
                duration_ms=_ms_since(started),
                name=call.name,
                arguments=_preview([list(call.args), call.kwargs]),
                ok=outcome.ok,
                result=_preview(outcome.value) if outcome.ok else None,
                error=outcome.error,
            )
        )
        return outcome

    # -- sub-calls ----------------------------------------------------------------------

    async def _subcalls(self, query: _LiveQuery, items: Sequence[SubcallItem]) -> list[str]:
        try:
            query.check(upcoming_subcalls=len(items))
        except LimitReached as hit:
            query.emit(LimitHit(limit=hit.limit, message=hit.message, during="subcalls"))
            return [f"[llm_query refused: limit reached: {hit.message}]"] * len(items)
        query.budget.subcalls += len(items)
        semaphore = asyncio.Semaphore(query.config.limits.subcall_concurrency)

        async def one(item: SubcallItem) -> str:
            async with semaphore:
                return await self._subcall(query, item)

        return list(await asyncio.gather(*(one(item) for item in items)))

    async def _subcall(self, query: _LiveQuery, item: SubcallItem) -> str:
        """One sub-call's answer, for the code. Its content sits between tags with an id
        of its own (not the REPL output's), and neither id reaches the code: a sub-model
        that echoes its prompt hands the code no boundary to forge."""
        boundary = secrets.token_hex(16)
        answer = await self._subcall_answer(query, item, boundary)
        return answer.replace(boundary, "").replace(query.nonce, "")

    async def _subcall_answer(self, query: _LiveQuery, item: SubcallItem, boundary: str) -> str:
        model = query.config.effective_sub_model
        messages = subcall_messages(self.prompts, item, boundary)
        key = prompt_key(messages)
        constraint = _constraint(item)
        limit = query.config.max_subcall_chars
        if limit is not None and len(item.content) + len(item.instruction) > limit:
            message = (
                f"[llm_query error: the content is {len(item.content):,} characters; the "
                f"sub-model reads at most {limit:,}. Split it into chunks, e.g. "
                f"[text[i:i + {limit // 2}] for i in range(0, len(text), {limit // 2})], "
                "or find the relevant part with code first.]"
            )
            query.emit(SubcallResponse(key=key, error=message))
            return message
        query.emit(
            SubcallRequest(
                model=model,
                key=key,
                instruction=item.instruction,
                content_chars=len(item.content),
                content_preview=item.content[:500],
            )
        )
        if self.cache is None:
            return await self._ask_sub_model(query, model, messages, key, constraint)
        salt = query.config.cache_salt
        if item.choices:  # a constrained reply is another answer than a free one
            salt += ("|noted" if item.noted else "") + "|choices=" + "\x1f".join(item.choices)
        ckey = cache_key(model, messages, salt)
        pending = query.inflight.get(ckey)
        if pending is not None:  # the same prompt is out already, in this query
            same = await asyncio.shield(pending)
            if same is None:  # it failed: ask for this one
                return await self._ask_sub_model(query, model, messages, key, constraint)
            return self._reuse(query, key, same)
        future: asyncio.Future[CachedAnswer | None] = asyncio.get_running_loop().create_future()
        query.inflight[ckey] = future  # before any await: identical prompts wait on this one
        try:
            found = await asyncio.to_thread(self.cache.get, ckey)
            if found is not None:
                future.set_result(found)
                return self._reuse(query, key, found)
            text = await self._ask_sub_model(query, model, messages, key, constraint, into=future)
        finally:
            query.inflight.pop(ckey, None)
            if not future.done():
                future.set_result(None)  # it failed: whoever waits asks for itself
        made = future.result()
        if found is None and made is not None:
            await asyncio.to_thread(self.cache.put, ckey, made)
        return text

    async def _ask_sub_model(
        self,
        query: _LiveQuery,
        model: str,
        messages: list[Message],
        key: str,
        constraint: OutputConstraint | None,
        *,
        into: asyncio.Future[CachedAnswer | None] | None = None,
    ) -> str:
        started = time.perf_counter()
        try:
            c = await self.sub_llm.complete(messages, model=model, constraint=constraint)
        except LLMError as e:
            query.emit(SubcallResponse(key=key, error=str(e)))
            return f"[llm_query error: {str(e).splitlines()[0]}]"
        query.account("sub", c)
        query.emit(
            SubcallResponse(
                duration_ms=_ms_since(started),
                key=key,
                text=c.text,
                prompt_tokens=c.prompt_tokens,
                completion_tokens=c.completion_tokens,
                cost_usd=c.cost_usd,
            )
        )
        if into is not None:
            into.set_result(
                CachedAnswer(c.text, c.model, c.prompt_tokens, c.completion_tokens, c.cost_usd)
            )
        return c.text

    @staticmethod
    def _reuse(query: _LiveQuery, key: str, found: CachedAnswer) -> str:
        """An answer already paid for: traced as cached, counted as saved, not spent."""
        query.budget.usage.add_cached(found.prompt_tokens + found.completion_tokens, found.cost_usd)
        query.emit(
            SubcallResponse(
                key=key,
                text=found.text,
                prompt_tokens=found.prompt_tokens,
                completion_tokens=found.completion_tokens,
                cost_usd=found.cost_usd,
                cached=True,
            )
        )
        return found.text


def _constraint(item: SubcallItem) -> OutputConstraint | None:
    """What a sub-call's reply is held to: its choices, bare or after a note; or nothing."""
    if not item.choices:
        return None
    return NotedChoice(item.choices) if item.noted else Choices(item.choices)
