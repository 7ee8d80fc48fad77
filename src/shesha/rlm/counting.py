"""The count strategy: a question that asks how many times a word or phrase appears is
answered by code on the host, never by the model typing a number. The model only names
the phrase (one call, constrained to a small JSON object); the phrase must be words of the
question, and the host counts it, as whole words in any case, in every document. Anything
else (no phrase, a phrase the question does not hold) gives no answer: the code loop
takes the question."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence

from shesha.llm.types import JsonSchema, Message
from shesha.rlm.events import Final, PhraseCounted
from shesha.rlm.prompting import PromptSet
from shesha.rlm.reading import QueryState, RootModel
from shesha.sandbox.corpus import Corpus

PHRASE_CHARS = 80
PHRASE = JsonSchema(
    {
        "type": "object",
        "properties": {"phrase": {"type": "string", "maxLength": PHRASE_CHARS}},
        "required": ["phrase"],
        "additionalProperties": False,
    }
)
"""What the model replies: the word or phrase the question counts, or NONE."""
EDGES = " \t\r\n\"'`\u201c\u201d\u2018\u2019.,;:!?()[]"
"""Stripped from both ends of the phrase: spaces, quotes (curly too) and punctuation."""


def named_phrase(reply: str, question: str) -> str | None:
    """The phrase in the model's reply, if it is words of the question; else None."""
    said: object = reply
    try:
        said = json.loads(reply)
    except ValueError:
        if reply.lstrip().startswith("{"):
            return None  # a broken object names nothing
    if isinstance(said, dict):
        said = said.get("phrase")
    if not isinstance(said, str):
        return None
    lines = said.strip().splitlines()
    phrase = (lines[0] if lines else "").strip(EDGES)
    if not phrase or len(phrase) > PHRASE_CHARS or phrase.casefold() == "none":
        return None
    return phrase if occurrences(phrase, question) else None


def occurrences(phrase: str, text: str) -> int:
    """How many times ``phrase`` appears in ``text``: whole words, any case, any spacing
    between its words. The phrase is literal text, never a pattern."""
    words = phrase.split()
    if not words:
        return 0
    pattern = r"(?<!\w)" + r"\s+".join(re.escape(w) for w in words) + r"(?!\w)"
    return sum(1 for _ in re.finditer(pattern, text, re.IGNORECASE))


def count_by_document(phrase: str, documents: Sequence[tuple[str, str]]) -> list[tuple[str, int]]:
    """(name, count) for each document that holds the phrase, in the corpus's order."""
    counts = [(name, occurrences(phrase, text)) for name, text in documents]
    return [(name, n) for name, n in counts if n]


async def count_mentions(
    run: QueryState, corpus: Corpus, model: RootModel, prompts: PromptSet
) -> str | None:
    """The count, as the answer; None when the model names no phrase of the question."""
    run.iteration += 1
    prompt = prompts.render("phrase", question=run.question)
    messages: list[Message] = [{"role": "user", "content": prompt}]
    phrase = named_phrase(await model.ask(messages, PHRASE), run.question)
    if phrase is None:
        return None
    documents = await asyncio.to_thread(corpus.documents)
    found = await asyncio.to_thread(count_by_document, phrase, documents)
    total = sum(n for _, n in found)
    answer = str(total)
    if model.problem(answer) is not None:
        return None  # not the typed answer asked for: the code loop tries
    run.emit(PhraseCounted(phrase=phrase, total=total, documents=found))
    run.emit(Final(answer=answer, source="count"))
    return answer
