"""Helpers every query's code may call, run by the host: ``search`` over the passage
index and ``llm_map``, a sub-call mapped over items. They reach the sandbox as host tools
(the same bridge as the user's tools), so they hold the host's index and the engine's
sub-call line, budget, cache and trace; nothing of them runs in the sandbox.

With them, an aggregation is three lines of code::

    labels = llm_map("Label the record: complaint, praise or question.", records, choices=[...])
    counts = Counter(labels)
    FINAL(counts.most_common(1)[0][0])
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from shesha.llm.types import LABEL_PREFIX, NOTE_PREFIX
from shesha.retrieval.index import PassageIndex
from shesha.sandbox.execution import SubcallItem, ToolCall, ToolOutcome, ToolSpec

SEARCH_DOC = (
    "search(query, k=10): the k passages that best match the words of query, best first, "
    "each a dict with document, page, start, end and text (BM25 over the documents)."
)
MAP_DOC = (
    "llm_map(instruction, items, choices=None): asks the sub-model instruction about each "
    "item (a str), in parallel, and returns the answers in the items' order; with choices "
    "(a list of str), each answer is one of them, or None when the reply names none."
)
SPECS: list[ToolSpec] = [{"name": "search", "doc": SEARCH_DOC}, {"name": "llm_map", "doc": MAP_DOC}]
NAMES = frozenset(spec["name"] for spec in SPECS)
NOTED = (
    "\n\nFirst say in a few words what the text says, then give the label, as:\n"
    + NOTE_PREFIX
    + "<a few words>\n"
    + LABEL_PREFIX
    + "<one of {choices}>"
)
"""How ``llm_map`` asks for a choice: the format ``NotedChoice`` holds a local reply to."""
LABEL_LINE = re.compile(rf"^\s*{LABEL_PREFIX.strip()}\s*(.*)$", re.MULTILINE)
MAX_K = 50
MAX_ITEMS = 5_000
SAMPLE_CHARS = 300


class Helpers:
    """``search`` and ``llm_map`` for one query.

    ``index``: opens (once) the query's passage index; ``subcalls``: the engine's sub-call
    line (budget, concurrency, cache, trace); ``documents``: their names, in order (a
    search that finds nothing shows the start of the first)."""

    def __init__(
        self,
        index: Callable[[], Awaitable[PassageIndex]],
        subcalls: Callable[[Sequence[SubcallItem]], Awaitable[list[str]]],
        documents: Sequence[str],
    ) -> None:
        self._index, self._subcalls, self._documents = index, subcalls, list(documents)

    async def call(self, call: ToolCall) -> ToolOutcome:
        try:
            if call.name == "search":
                return ToolOutcome(ok=True, value=await self.search(*call.args, **call.kwargs))
            if call.name == "llm_map":
                return ToolOutcome(ok=True, value=await self.llm_map(*call.args, **call.kwargs))
        except (TypeError, ValueError) as e:
            return ToolOutcome(ok=False, error=f"{call.name}: {e}")
        return ToolOutcome(ok=False, error=f"there is no helper {call.name!r}")

    async def search(self, query: Any, k: Any = 10) -> list[dict[str, Any]]:
        if not isinstance(query, str) or not query.strip():
            raise TypeError("search(query, k=10) takes the words to look for as a str")
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
            raise ValueError(f"k must be a whole number from 1 to {MAX_K}")
        index = await self._index()
        hits = index.search(query, k)
        if not hits:
            # Never silently empty: say so, and show what the text looks like.
            first = index.passages(self._documents[0]) if self._documents else []
            sample = first[0].text[:SAMPLE_CHARS] if first else ""
            raise ValueError(
                f"no passage has any word of {query!r}. Try other words, or look at the "
                f"text itself; it begins: {sample!r}"
            )
        return [
            {
                "document": h.passage.document,
                "page": h.passage.page,
                "start": h.passage.start,
                "end": h.passage.end,
                "text": h.passage.text,
            }
            for h in hits
        ]

    async def llm_map(self, instruction: Any, items: Any, choices: Any = None) -> list[str | None]:
        if not isinstance(instruction, str) or not instruction.strip():
            raise TypeError(
                "llm_map(instruction, items, choices=None) takes the instruction as a str"
            )
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise TypeError("items must be a list of str")
        if len(items) > MAX_ITEMS:
            raise ValueError(f"{len(items):,} items: at most {MAX_ITEMS:,} at once")
        if choices is not None and (
            not isinstance(choices, list)
            or not choices
            or not all(isinstance(c, str) and c.strip() for c in choices)
        ):
            raise TypeError("choices must be a list of str")
        asked = instruction
        if choices:
            asked += NOTED.format(choices=", ".join(choices))
        unique = list(dict.fromkeys(items))  # each distinct item is asked once
        options = tuple(choices) if choices else ()
        replies = await self._subcalls([_item(asked, item, options) for item in unique])
        answers = dict(zip(unique, replies, strict=True))
        if choices:
            picked = {item: pick(answers[item], choices) for item in unique}
            again = [item for item in unique if picked[item] is None]
            if again:  # one more try for the replies that named no choice
                stricter = asked + " The label is that one word or phrase only."
                retried = await self._subcalls([_item(stricter, item, options) for item in again])
                for item, reply in zip(again, retried, strict=True):
                    picked[item] = pick(reply, choices)
            return [picked[item] for item in items]
        return [answers[item] for item in items]


def _item(instruction: str, item: str, options: tuple[str, ...]) -> SubcallItem:
    """An item is read before the instruction: a small model labels a short record
    better with the question after it (12 of 12 sample records right, against 11). Each
    item is its own sub-call: numbered batches of 4 or 12 under a JSON schema were faster
    but labelled 7 of the 12 right. With choices, the reply says what the item says
    before its label (``NotedChoice``)."""
    return SubcallItem(instruction, item, options, instruction_last=True, noted=bool(options))


def pick(reply: str, choices: Sequence[str]) -> str | None:
    """The one choice a reply names: the whole reply, else the only choice it contains as
    whole words (case-insensitive); None when it names none, or more than one. A reply
    with a ``Label:`` line (a note, then the label) is read from that line alone."""
    labelled = LABEL_LINE.findall(reply)
    if labelled:
        reply = labelled[-1]
    text = reply.strip().strip(".\"'`*").strip()
    for choice in choices:
        if text.casefold() == choice.casefold():
            return choice
    named = [c for c in choices if re.search(rf"(?<!\w){re.escape(c)}(?!\w)", reply, re.IGNORECASE)]
    return named[0] if len(named) == 1 else None
