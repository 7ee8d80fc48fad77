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
from shesha.rlm.strategy import APPEARS, HOW_OFTEN, IN_THE_TEXT, MENTIONED, NAMED_TARGET
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
QUOTES = "\"'`\u201c\u201d\u2018\u2019\u201e\u201a\u00ab\u00bb\u2039\u203a"
LEADING = " \t\r\n([" + QUOTES
TRAILING = " \t\r\n)],;:!?" + QUOTES
"""Stripped from the phrase's ends: spaces, quotes (curly and angled too), brackets, and
a sentence's punctuation after it. A leading "." stays (".NET")."""
APOSTROPHES = "'\u2019\u02bc"
"""Counted as one: "don't" matches "don\u2019t" (PDFs often have the curly one)."""
_PRONOUNS = (
    "it its he him his she her hers they them their theirs this that these those one you we i me"
)
PRONOUNS = frozenset(_PRONOUNS.split())
"""Never a phrase to count: in a follow-up ("how many times is she mentioned?") the
words point at an earlier answer, which this strategy does not see."""
_SCAFFOLD = (
    "what which tell me us please give find show can could would you i "
    "how many times often is are was were be been being does do did has have had the a an "
    "in of on across throughout all whole entire total number count counts this these my "
    "our text texts document documents book books novel file files corpus collection data "
    "dataset project source sources context"
)
SCAFFOLD_WORDS = frozenset(_SCAFFOLD.split())
"""Words a counting question holds besides its phrase. Any other word left over (``in
chapter 3``, ``and dogs``, ``than dog``) narrows or changes the question: not a count
of one phrase in every document, so the code loop takes it."""


def named_phrase(reply: str, question: str) -> str | None:
    """The phrase in the model's reply, if the question counts exactly it; else None."""
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
    phrase = _trimmed(lines[0] if lines else "")
    if not phrase or len(phrase) > PHRASE_CHARS or phrase.casefold() == "none":
        return None
    found = _pattern(phrase, any_case=True).search(question)
    if found is None or not _counts_exactly(found, question):
        return None
    phrase = " ".join(found.group().split())  # as the question writes it: its case counts
    if phrase.lower() in PRONOUNS and not phrase.isupper():
        return None
    return phrase


def _trimmed(said: str) -> str:
    phrase = said.lstrip(LEADING)
    while True:
        before = phrase
        phrase = phrase.rstrip(TRAILING)
        if phrase.endswith(".") and "." not in phrase[:-1]:
            phrase = phrase[:-1]  # a full stop, not part of "U.S."
        if phrase == before:
            return phrase


def _counts_exactly(found: re.Match[str], question: str) -> bool:
    """The phrase found in the question is not its counting words, and nothing else in
    the question narrows what is counted."""
    scaffold = [
        m.span()
        for rule in (HOW_OFTEN, MENTIONED, NAMED_TARGET, APPEARS, IN_THE_TEXT)
        for m in rule.finditer(question)
    ]
    if any(a < found.end() and found.start() < b for a, b in scaffold):
        return False  # "mentioned", "the book", "how many times": not what is counted
    rest = _without(question, [found.span(), *scaffold]).lower()
    return all(w in SCAFFOLD_WORDS for w in re.findall(r"\w+", rest))


def _without(text: str, spans: list[tuple[int, int]]) -> str:
    """The text with these spans blanked."""
    chars = list(text)
    for a, b in spans:
        for i in range(a, b):
            chars[i] = " "
    return "".join(chars)


def any_case(phrase: str) -> bool:
    """Whether the count ignores case: only for a phrase written in lower case. "Moscow"
    counts "Moscow" and "MOSCOW"; "US" never counts "us", nor "May" the verb "may"."""
    return phrase == phrase.lower()


def occurrences(phrase: str, text: str) -> int:
    """How many times ``phrase`` appears in ``text``: whole words, any spacing between its
    words, either apostrophe; in any case when the phrase is in lower case, else as
    written or in capitals. The phrase is literal text, never a pattern."""
    if not phrase.split():
        return 0
    if any_case(phrase):
        return sum(1 for _ in _pattern(phrase, any_case=True).finditer(text))
    exact = sum(1 for _ in _pattern(phrase, any_case=False).finditer(text))
    if phrase.upper() == phrase:
        return exact
    return exact + sum(1 for _ in _pattern(phrase.upper(), any_case=False).finditer(text))


def _pattern(phrase: str, *, any_case: bool) -> re.Pattern[str]:
    words = [
        "".join(f"[{APOSTROPHES}]" if ch in APOSTROPHES else re.escape(ch) for ch in word)
        for word in phrase.split()
    ]
    body = r"\s+".join(words)
    head = r"(?<!\w)" if re.match(r"\w", phrase) else ""
    tail = r"(?!\w)" if re.search(r"\w$", phrase) else ""
    return re.compile(head + body + tail, re.IGNORECASE if any_case else 0)


def count_by_document(phrase: str, documents: Sequence[tuple[str, str]]) -> list[tuple[str, int]]:
    """(name, count) for each document that holds the phrase, in the corpus's order."""
    counts = [(name, occurrences(phrase, text)) for name, text in documents]
    return [(name, n) for name, n in counts if n]


async def count_mentions(
    query: QueryState, corpus: Corpus, model: RootModel, prompts: PromptSet
) -> str | None:
    """The count, as the answer; None when the model names no phrase of the question."""
    query.iteration += 1
    prompt = prompts.render("phrase", question=query.question)
    messages: list[Message] = [{"role": "user", "content": prompt}]
    phrase = named_phrase(await model.ask(messages, PHRASE), query.question)
    if phrase is None:
        return None
    documents = await asyncio.to_thread(corpus.documents)
    found = await asyncio.to_thread(count_by_document, phrase, documents)
    total = sum(n for _, n in found)
    answer = str(total)
    if model.problem(answer) is not None:
        return None  # not the typed answer asked for: the code loop tries
    query.emit(
        PhraseCounted(phrase=phrase, total=total, documents=found, any_case=any_case(phrase))
    )
    query.emit(Final(answer=answer, source="count"))
    return answer
