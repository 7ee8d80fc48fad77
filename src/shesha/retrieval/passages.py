"""A document's text as passages: split on page and paragraph boundaries, each passage
knowing its document, its page and its character offsets, so that it can be cited.

The parsers mark pages as ``--- Page N ---`` (PDF, scans), slides as ``--- Slide N ---``
and sheets as ``--- Sheet: name ---``: a passage never spans one of these marks.
Paragraphs (blank-line separated) are packed into passages of about ``TARGET_CHARS``; a
paragraph longer than ``MAX_CHARS`` is cut at line ends, else at spaces.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

TARGET_CHARS = 300
"""A passage is about this long: a paragraph or a few, a table's few lines. Short
passages rank sharper: on FinanceBench, filling the local model's whole read-whole
threshold, 300 put an evidence page in the window for 72% of questions and 1,200 for
55% (``benchmarks/retrieval.py``; 67% with the 75% the engine fills); the window
joins neighbours back together, so the model still reads whole stretches of text."""
MAX_CHARS = 600
"""No passage is longer than this."""

_MARK = re.compile(r"^--- (?:(?:Page|Slide) (?P<page>\d+)|Sheet: [^\n]*) ---[ \t]*$", re.M)
_PARAGRAPH = re.compile(r"\n[ \t]*\n")


@dataclass(frozen=True)
class Passage:
    document: str
    page: int | None
    """The page (or slide) it is on, when the format has them."""
    start: int
    end: int
    """``text == document_text[start:end]``."""
    text: str

    @property
    def location(self) -> str:
        where = f"page {self.page}, " if self.page is not None else ""
        return f"{self.document}, {where}characters {self.start:,}-{self.end:,}"


def _sections(text: str) -> Iterator[tuple[int | None, int, int]]:
    """(page, start, end) of the text between marks; the mark's own line is left out."""
    page: int | None = None
    start = 0
    for m in _MARK.finditer(text):
        if m.start() > start:
            yield page, start, m.start()
        page = int(m.group("page")) if m.group("page") else None
        start = m.end()
    if start < len(text):
        yield page, start, len(text)


def _pieces(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Paragraph spans within [start, end), trimmed of blank space; long ones cut."""
    at = start
    for m in _PARAGRAPH.finditer(text, start, end):
        yield from _cut(text, at, m.start())
        at = m.end()
    yield from _cut(text, at, end)


def _cut(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    while end - start > MAX_CHARS:
        limit = start + MAX_CHARS
        cut = text.rfind("\n", start + MAX_CHARS // 2, limit)
        if cut < 0:
            cut = text.rfind(" ", start + MAX_CHARS // 2, limit)
        if cut < 0:
            cut = limit
        yield start, cut
        start = cut
        while start < end and text[start].isspace():
            start += 1
    if end > start:
        yield start, end


def split(document: str, text: str) -> list[Passage]:
    """The document's passages, in order."""
    out: list[Passage] = []
    for page, s_start, s_end in _sections(text):
        begin = end = -1
        for p_start, p_end in _pieces(text, s_start, s_end):
            if begin >= 0 and p_end - begin > TARGET_CHARS:
                out.append(Passage(document, page, begin, end, text[begin:end]))
                begin = -1
            if begin < 0:
                begin = p_start
            end = p_end
        if begin >= 0:
            out.append(Passage(document, page, begin, end, text[begin:end]))
    return out
