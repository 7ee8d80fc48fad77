"""How a question is answered: the engine chooses, the model reads.

- **read**: the documents fit the model's window, so it reads them whole, with the
  direct baseline's wording and the question after the text.
- **retrieve**: they do not fit; the host ranks passages against the question, fills
  the window with the best ones (in document order, each under its location) and the
  model answers from them, or says NOT FOUND. NOT FOUND widens the search once, to the
  next-best passages; a second NOT FOUND falls back to the code loop.
- **count**: the question asks how many times a word or phrase appears; the model names
  the phrase and the host counts it in code (``shesha.rlm.counting``). A phrase the model
  cannot name sends the question to the code loop.
- **map**: the question counts, compares or ranks across records (lines with named
  fields: a table, JSON lines, ``key: value`` lines); the model names the labels, a
  sub-call labels each distinct record, code counts them, and the model reads the counts
  (``shesha.rlm.mapping``). No labels, or more records than the sub-call budget, sends
  the question to the code loop.
- **code**: the free-form RLM loop: the model writes code over ``context``. The default
  for models with no window set (hosted models), for questions that count or list across
  all of the text that is not records, and the fallback for the others.

``choose`` is the rule. ``--strategy`` (the ``strategy`` setting) overrides it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from shesha.rlm.extract import final_in_last_reply, read_reply

StrategyName = Literal["read", "retrieve", "count", "map", "code"]
StrategyChoice = Literal["auto", "read", "retrieve", "count", "map", "code"]
STRATEGIES: tuple[StrategyChoice, ...] = ("auto", "read", "retrieve", "count", "map", "code")

DEFAULT_WINDOW_CHARS = 100_000
"""What ``--strategy read`` or ``retrieve`` fills for a model with no window set."""
PROMPT_RESERVE_CHARS = 600
"""Of the window: the prompt's own words and the reply."""
PASSAGES_SHARE = 0.75
"""Of the read-whole threshold, what passages fill: their location lines and numbers
take more tokens a character than prose (2.6 characters a token, not 3.5, on long
Wikipedia pages with the local model), and the reply needs room."""
NOT_FOUND = re.compile(r"^\W*not\s+found\b", re.I)

ACROSS_THE_TEXT = re.compile(
    r"\b(?:how many times|how often|number of (?:times|occurrences|mentions)|occurrences?"
    r"|count (?:the|all|every|each|how)|list (?:all|every|each)|every (?:time|mention)"
    r"|most (?:common|frequent|frequently|often)|least (?:common|frequent|often))\b",
    re.I,
)
"""Questions that need all of the text (counting, listing every one, the most frequent):
no window of passages can answer them, so code does."""
HOW_MANY = re.compile(r"\b(?:how many|number of)\b", re.I)
"""Questions that may be either: "how many employees" is stated somewhere, "how many
orders were late" is counted. One constrained call to the model tells them apart."""
COMPARES = re.compile(r"\b(?:more|fewer|less)\b(?:\W+\w+){0,6}?\W+than\b", re.I)
"""Over records, "does A have more X than B" may compare two stated figures or two
counts: the same call tells them apart. Over prose it is a question of fact ("more than
20% of revenue"), read as one."""
ROUTES = ("FIND", "COUNT")
HOW_OFTEN = re.compile(
    r"\b(?:how many times|how often"
    r"|(?:the )?number of (?:times|occurrences|mentions|appearances|uses)"
    r"|count (?:the |all (?:the )?)?(?:times|occurrences|mentions|appearances|uses))\b",
    re.I,
)
MENTIONED = re.compile(r"\bmention\w*\b", re.I)
NAMED_TARGET = re.compile(r"\bthe (?:word|words|term|terms|phrase|phrases|name|string)\b", re.I)
QUOTED = re.compile(
    r"(?<!\w)[\"'\u2018\u201c\u201e\u00ab]([^\"'\u2019\u201d\u00bb]{1,80})"
    r"[\"'\u2019\u201d\u00bb](?!\w)"
)
"""A quoted span (not an apostrophe: "Pierre's and Natasha's" holds none)."""
APPEARS = re.compile(r"\b(?:appear\w*|occur\w*|used|written)\b", re.I)
IN_THE_TEXT = re.compile(
    r"\b(?:in|across|throughout) (?:the|these|this|my|our|all(?: the)?) (?:whole |entire )?"
    r"(?:text|texts|document|documents|book|books|novel|file|files|corpus|collection|data"
    r"|dataset|project|sources?|context)\b",
    re.I,
)
"""``counts_mentions``: "how often" with a textual target: "mentioned", "the word X", a
quoted X, or "appears/occurs in the text". "How many times did the outage occur?" and
"how often was she named" count events, not words: they are not counted by phrase."""


@dataclass(frozen=True)
class Choice:
    strategy: StrategyName
    reason: str


def across_the_text(question: str) -> bool | None:
    """True when the question needs all of the text, False when it needs a passage, None
    when the words cannot tell (ask the model: ``route``)."""
    if ACROSS_THE_TEXT.search(question):
        return True
    return None if HOW_MANY.search(question) else False


def counts_mentions(question: str) -> bool:
    """The question asks how many times a word or phrase itself appears in the text."""
    if not HOW_OFTEN.search(question):
        return False
    if MENTIONED.search(question) or NAMED_TARGET.search(question) or QUOTED.search(question):
        return True
    return bool(APPEARS.search(question) and IN_THE_TEXT.search(question))


def route(reply: str) -> bool:
    """The model's answer to the routing prompt: True when it says COUNT and not FIND.
    Anything else is a passage to find (retrieval falls back to code when it finds none)."""
    said = set(re.findall(r"\b(FIND|COUNT)\b", reply.upper()))
    return said == {"COUNT"}


def choose(
    asked: StrategyChoice,
    corpus_chars: int,
    window_chars: int,
    *,
    needs_all: bool = False,
    mentions: bool = False,
    records: bool = False,
) -> Choice:
    """The strategy for a corpus of ``corpus_chars`` and a model that reads
    ``window_chars`` at once (0: not set, as for hosted models); ``needs_all``: the
    question needs all of the text (see ``across_the_text``); ``mentions``: it asks how
    often a phrase appears (see ``counts_mentions``); ``records``: the corpus is records
    (see ``shesha.retrieval.records``)."""
    if asked != "auto":
        return Choice(asked, "asked for")
    if window_chars <= 0:
        return Choice("code", "a model with no window set explores the documents with code")
    if mentions:
        return Choice("count", "the question asks how often a phrase appears: code counts it")
    if needs_all:
        return (
            Choice("map", "the question counts across records: each is labelled, code counts")
            if records
            else Choice("code", "the question counts or lists across all of the text")
        )
    if corpus_chars <= window_chars:
        return Choice(
            "read", f"the documents ({corpus_chars:,} characters) fit the window "
            f"({window_chars:,})",
        )  # fmt: skip
    return Choice(
        "retrieve", f"the documents ({corpus_chars:,} characters) are past the window "
        f"({window_chars:,}): the best passages are read",
    )  # fmt: skip


def passages_budget(window_chars: int, question: str) -> int:
    """The characters of passages (with their location lines) that a window takes."""
    return max(int(window_chars * PASSAGES_SHARE) - PROMPT_RESERVE_CHARS - len(question), 1_000)


def passages_rounds(window_chars: int, question: str, first_chars: int = 0) -> tuple[int, int]:
    """The characters of passages the first read takes, and the widened read after NOT
    FOUND: ``first_chars`` (when set) at most, then the window's ``passages_budget``."""
    budget = passages_budget(window_chars, question)
    return min(first_chars or budget, budget), budget


def documents_text(documents: Sequence[tuple[str, str]]) -> str:
    """The documents as the direct baseline and ``SHOW_WHOLE`` show them."""
    return "\n\n".join(f"=== {name} ===\n{text}" for name, text in documents)


def not_found(reply: str) -> bool:
    """The reply says the passages do not give the answer."""
    return bool(NOT_FOUND.match(reply.strip()))


def wrote_code(reply: str) -> bool:
    """The reply to a reading prompt is a fenced block of code, not an answer."""
    return "```" in reply and bool(read_reply(reply).blocks)


def read_answer(reply: str) -> str | None:
    """The answer in a reply to a reading prompt: a FINAL line's, else the reply's text;
    None when the reply is code to run or empty. Any well-formed answer counts, "no",
    "0" and "none" included."""
    text = reply.strip()
    if wrote_code(text):
        return None  # a fenced block of code: the code loop runs it
    final = final_in_last_reply(text)
    if final is not None:
        return final.strip() or None
    return text or None
