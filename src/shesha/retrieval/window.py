"""What a model reads past its window: the best-ranked passages that fit a budget of
characters, put back in document order, each under a line saying where it is from."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from shesha.retrieval.index import Hit, PassageIndex
from shesha.retrieval.passages import Passage

CANDIDATES = 400
"""Passages considered, best first, when filling a window."""
_BATCH = 50


ADJACENT = 8
"""Passages of one page this close (characters between them) are shown as one stretch."""


@dataclass(frozen=True)
class Window:
    hits: list[Hit]
    """The passages chosen, in document order."""
    text: str
    """What the model reads: each stretch of adjacent passages under its location line."""


def shown(hit: Hit) -> str:
    return f"[{hit.passage.location}]\n{hit.passage.text}"


def _joined(hits: list[Hit]) -> str:
    """Stretches of adjacent passages, each under one location line."""
    blocks: list[list[Passage]] = []
    for h in hits:
        p = h.passage
        last = blocks[-1][-1] if blocks else None
        if (
            last is not None
            and last.document == p.document
            and last.page == p.page
            and 0 <= p.start - last.end <= ADJACENT
        ):
            blocks[-1].append(p)
        else:
            blocks.append([p])
    out = []
    for block in blocks:
        first, last = block[0], block[-1]
        where = Passage(first.document, first.page, first.start, last.end, "").location
        out.append(f"[{where}]\n" + "\n".join(p.text for p in block))
    return "\n\n".join(out)


def fill(
    index: PassageIndex,
    question: str,
    budget_chars: int,
    order: Sequence[str],
    *,
    skip: Collection[tuple[str, int]] = (),
) -> Window:
    """The best passages for ``question`` that fit in ``budget_chars`` (with their location
    lines), leaving out those in ``skip`` ((document, start) pairs), in the order of the
    documents in ``order`` and of their text."""
    position = {name: i for i, name in enumerate(order)}

    def in_order(hits: list[Hit]) -> list[Hit]:
        return sorted(
            hits, key=lambda h: (position.get(h.passage.document, len(position)), h.passage.start)
        )

    chosen: list[Hit] = []
    used = 0
    for offset in range(0, CANDIDATES, _BATCH):
        batch = index.search(question, _BATCH, skip=offset)
        for hit in batch:
            if (hit.passage.document, hit.passage.start) in skip:
                continue
            if used + len(shown(hit)) + 2 > budget_chars:
                # A neighbour of a chosen passage costs less than its own location line.
                trial = len(_joined(in_order([*chosen, hit])))
                if trial > budget_chars:
                    continue
            chosen.append(hit)
            used = len(_joined(in_order(chosen)))
        if len(batch) < _BATCH or budget_chars - used < 200:
            break
    chosen = in_order(chosen)
    return Window(chosen, _joined(chosen))
