"""Citations, checked by the host before a result is returned.

Code supports an answer with ``cite(doc, "exact quote")`` or ``cite(doc, start, end)``.
The host looks for each quote in the stored text of that document. The match is exact
after a documented normalisation of both sides:

- every run of white space (spaces, tabs, line breaks) counts as one space;
- curly quotes count as straight ones (U+2018 to U+201B as ', U+201C to U+201F as "),
  and the en dash, em dash and non-breaking hyphen as -;

and nothing else: case, punctuation and spelling must match. A citation is **verified**
when the quote is found, with the character offset where it starts in the document's
text and, for documents with pages, the page. It is **unverified** when it is not found,
or when no document has that name.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel

from shesha.sandbox.corpus import Corpus
from shesha.sandbox.execution import RawCitation

PAGE_MARK = re.compile(r"^--- Page (\d+) ---$", re.M)
_SAME = str.maketrans(
    {**dict.fromkeys("\u2018\u2019\u201a\u201b", "'"),
     **dict.fromkeys("\u201c\u201d\u201e\u201f", '"'),
     **dict.fromkeys("\u2013\u2014\u2011", "-")}
)  # fmt: skip
_SPACE = re.compile(r"\s+")


class Citation(BaseModel):
    document: str
    quote: str
    status: Literal["verified", "unverified"]
    offset: int | None = None
    """Where the quote starts in the document's text (characters), when found."""
    page: int | None = None
    reason: str | None = None
    """Why it is unverified."""
    supports: bool | None = None
    """With --verify: whether the sub-model judged that the quote supports the answer."""


def normalise(text: str) -> tuple[str, list[int]]:
    """The text as quotes are matched, and for each of its characters the offset of the
    original character it came from."""
    out: list[str] = []
    where: list[int] = []
    in_space = False
    for i, ch in enumerate(text.translate(_SAME)):
        if ch.isspace():
            if not in_space:
                out.append(" ")
                where.append(i)
            in_space = True
            continue
        in_space = False
        out.append(ch)
        where.append(i)
    return "".join(out), where


def page_at(text: str, offset: int) -> int | None:
    """The page an offset falls on, from the ``--- Page N ---`` lines PDFs are stored with."""
    page = None
    for mark in PAGE_MARK.finditer(text):
        if mark.start() > offset:
            break
        page = int(mark.group(1))
    return page


def check(raw: Sequence[RawCitation], corpus: Corpus) -> list[Citation]:
    """Each citation, verified or not, in the order the code made them (repeats once)."""
    texts = dict(corpus.documents()) if raw else {}
    checked: list[Citation] = []
    seen: set[tuple[str, str]] = set()
    for c in raw:
        if (c.document, c.quote) in seen:
            continue
        seen.add((c.document, c.quote))
        text = texts.get(c.document)
        quote = _SPACE.sub(" ", c.quote.translate(_SAME)).strip()
        if text is None:
            checked.append(_unverified(c, f"no document is named {c.document!r}"))
        elif not quote:
            checked.append(_unverified(c, "the quote is empty"))
        else:
            flat, where = normalise(text)
            at = flat.find(quote)
            if at < 0:
                checked.append(_unverified(c, "the quote is not in the document"))
            else:
                offset = where[at]
                checked.append(
                    Citation(
                        document=c.document,
                        quote=c.quote,
                        status="verified",
                        offset=offset,
                        page=page_at(text, offset),
                    )
                )
    return checked


def _unverified(c: RawCitation, reason: str) -> Citation:
    return Citation(document=c.document, quote=c.quote, status="unverified", reason=reason)
