"""The read and retrieve strategies: the host chooses what the model reads, and the model
reads it. Read: the documents whole, in the direct baseline's wording. Retrieve: the best
passages for the question, in document order with their locations (the first read at most
``first_passages_chars`` of them, when set); NOT FOUND widens the search once, to the
window. Either gives (the answer, None), or (None, the reply) when the model wrote
code instead (the code loop then runs it), or (None, None) when nothing was found."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from shesha.errors import LLMContextWindowError
from shesha.llm.types import Message, OutputConstraint
from shesha.retrieval.index import PassageIndex
from shesha.retrieval.window import Window, fill
from shesha.rlm.config import EngineConfig
from shesha.rlm.events import Final, FinalSource, PassageRead, PassagesShown, TraceEvent, Warned
from shesha.rlm.history import UNTRUSTED, with_earlier, wrap
from shesha.rlm.prompting import PromptSet
from shesha.rlm.strategy import (
    DEFAULT_WINDOW_CHARS,
    StrategyName,
    documents_text,
    not_found,
    passages_rounds,
    read_answer,
    wrote_code,
)
from shesha.sandbox.corpus import Corpus

IndexSource = Callable[[], PassageIndex]
"""Opens the corpus's passage index (a stored project's, kept up to date); the engine
closes it. Without one, the corpus is indexed in memory when it is needed."""


class QueryState(Protocol):
    """What the reading strategies read and keep of a query (the engine's live query)."""

    question: str
    nonce: str
    config: EngineConfig
    docs: list[tuple[str, int]]
    corpus_chars: int
    iteration: int
    tried: set[StrategyName]
    index: PassageIndex | None

    def emit(self, event: TraceEvent) -> None: ...


class RootModel(Protocol):
    """The root model, for one query: a call, the typed-answer check, the schema note."""

    async def ask(
        self, messages: list[Message], constraint: OutputConstraint | None = None
    ) -> str: ...

    def problem(self, answer: str) -> str | None:
        """None when the answer is one the query accepts; else what is wrong with it."""

    def with_schema(self, start: list[Message]) -> list[Message]: ...


class Reader:
    """The reading strategies of one query."""

    def __init__(
        self,
        query: QueryState,
        corpus: Corpus,
        model: RootModel,
        *,
        prompts: PromptSet,
        passages: IndexSource | None,
        earlier: Sequence[tuple[str, str | None]],
    ) -> None:
        self.query, self.corpus, self.model, self.prompts = query, corpus, model, prompts
        self.passages, self.earlier = passages, earlier
        self.window = query.config.show_whole_chars or DEFAULT_WINDOW_CHARS

    async def answer(self, strategy: StrategyName) -> tuple[str | None, str | None]:
        if strategy == "read":
            return await self.read()
        return await self.retrieve(self.window)

    async def fallback(self) -> str | None:
        """A stalled or exhausted code loop answers by reading, never with the model's
        sentence: read whole when the documents fit, else retrieve; not twice."""
        query = self.query
        if query.corpus_chars == 0:
            return None
        strategy: StrategyName = "read" if query.corpus_chars <= self.window else "retrieve"
        if strategy in query.tried:
            return None
        query.emit(
            Warned(message=f"The code loop found no answer: answering by {strategy} instead.")
        )
        answer, _ = await self.answer(strategy)
        return answer

    def _messages(self, system: str, user: str) -> list[Message]:
        start: list[Message] = [
            {"role": "system", "content": self.prompts.render(system)},
            {"role": "user", "content": user},
        ]
        return with_earlier(self.prompts, self.model.with_schema(start), self.earlier)

    async def _ask(self, messages: list[Message], source: FinalSource) -> tuple[str | None, str]:
        query = self.query
        query.iteration += 1
        text = await self.model.ask(messages)
        answer = read_answer(text)
        if answer is not None and source == "passages" and not_found(answer):
            return None, text
        if answer is not None and self.model.problem(answer) is not None:
            return None, text  # not the typed answer asked for: the code loop tries
        if answer is not None:
            query.emit(Final(answer=answer, source=source))
        return answer, text

    async def read(self) -> tuple[str | None, str | None]:
        query = self.query
        query.tried.add("read")
        documents = await asyncio.to_thread(self.corpus.documents)
        text = wrap(query.nonce, UNTRUSTED, documents_text(documents))
        user = self.prompts.render("direct_user", documents=text, question=query.question)
        try:
            answer, reply = await self._ask(self._messages("direct_system", user), "read")
        except LLMContextWindowError as e:
            # The model's tokenizer counts more than estimated: read the best passages.
            share = (e.limit / e.requested) if e.limit and e.requested else 0.5
            query.emit(Warned(message="The documents did not fit the window: retrieving."))
            return await self.retrieve(int(self.window * share * 0.9))
        if answer is not None:
            return answer, None
        return None, reply if wrote_code(reply) else None

    async def retrieve(self, window: int) -> tuple[str | None, str | None]:
        query = self.query
        query.tried.add("retrieve")
        index = await self.index()
        first, budget = passages_rounds(window, query.question, query.config.first_passages_chars)
        shown: set[tuple[str, int]] = set()
        order = [name for name, _ in query.docs]
        for round_ in (1, 2):
            size = first if round_ == 1 else budget
            found = await asyncio.to_thread(fill, index, query.question, size, order, skip=shown)
            self._trace(found, round_)
            if not found.hits:
                return None, None
            shown |= {(h.passage.document, h.passage.start) for h in found.hits}
            passages = wrap(query.nonce, UNTRUSTED, found.text)
            user = self.prompts.render("passages_user", passages=passages, question=query.question)
            try:
                answer, _ = await self._ask(self._messages("passages_system", user), "passages")
            except LLMContextWindowError as e:
                if round_ == 2 or not (e.limit and e.requested):
                    query.emit(Warned(message="The passages did not fit the window: using code."))
                    return None, None
                budget = int(budget * e.limit / e.requested * 0.9)
                shown.clear()
                continue
            if answer is not None:
                return answer, None
        return None, None

    async def index(self) -> PassageIndex:
        """The query's passage index, opened once."""
        if self.query.index is None:
            self.query.index = await asyncio.to_thread(self._open_index)
        return self.query.index

    def _open_index(self) -> PassageIndex:
        if self.passages is not None:
            return self.passages()
        return PassageIndex.in_memory(self.corpus.documents())

    def _trace(self, window: Window, round_: int) -> None:
        read = [
            PassageRead(
                document=h.passage.document,
                page=h.passage.page,
                start=h.passage.start,
                end=h.passage.end,
                rank=h.rank,
            )
            for h in window.hits
        ]
        self.query.emit(PassagesShown(round=round_, chars=len(window.text), passages=read))
