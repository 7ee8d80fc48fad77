"""PDF text with pypdfium2: about 40 times faster than pdfplumber on real filings,
with the same recall on FinanceBench's evidence pages (see benchmarks/ingest.py).

Text is taken within each page's crop box, so off-page text is not duplicated.

A file pdfium cannot open (cut short, broken cross-references) is rebuilt from the
objects that survive (``pdf_repair.py``): the pages that can be read are stored, with a
warning naming what was lost; it fails only when no page survives, and then says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pypdfium2 as pdfium

from shesha.errors import ParseError
from shesha.parser.document import DocumentMeta, ParsedDocument
from shesha.parser.pdf_repair import Rebuilt, rebuild, surviving_objects

_ERR_PASSWORD = 4
MIN_PAGE_CHARS = 8  # fewer non-space characters than this: no text layer
DAMAGED_HINT = (
    "Get the file again (a download cut short?), or re-export it from where it came from."
)
PASSWORD_HINT = "Give the password with `--password` (CLI) or `password=` (Python API)."  # noqa: S105


class _Damaged(Exception):
    """pdfium could not open the file, for a reason other than a password."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _open(data: bytes, name: str, password: str | None) -> pdfium.PdfDocument:
    if not data:
        raise ParseError(f"{name}: the file is empty (0 bytes).", hint="Check the file.")
    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise ParseError(
            f"{name}: not a PDF (no %PDF header).", hint="Check the file or its extension."
        )
    try:
        return pdfium.PdfDocument(data, password=password)
    except pdfium.PdfiumError as e:
        if getattr(e, "err_code", None) == _ERR_PASSWORD:
            if password:
                raise ParseError(
                    f"{name}: the PDF is encrypted and the password given is wrong.",
                    hint=PASSWORD_HINT,
                ) from e
            raise ParseError(f"{name}: the PDF is encrypted.", hint=PASSWORD_HINT) from e
        raise _Damaged(str(e)) from e


def _page_text(page: pdfium.PdfPage) -> str:
    textpage = page.get_textpage()
    try:
        left, bottom, right, top = page.get_cropbox()
        text: str = textpage.get_text_bounded(left=left, bottom=bottom, right=right, top=top)
    finally:
        textpage.close()
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def _ranges(pages: list[int]) -> str:
    spans: list[str] = []
    start = prev = pages[0]
    for p in [*pages[1:], None]:
        if p is not None and p == prev + 1:
            prev = p
            continue
        spans.append(str(start) if start == prev else f"{start}-{prev}")
        if p is not None:
            start = prev = p
    return ", ".join(spans)


@dataclass
class _Pages:
    parts: list[str] = field(default_factory=list)
    empty: list[int] = field(default_factory=list)
    garbled: list[int] = field(default_factory=list)


def _without_glyph_numbers(text: str) -> str:
    """A recovered page's lines, less those read as raw glyph numbers (control characters
    where letters should be: the font's map to text was lost)."""
    kept = []
    for line in text.split("\n"):
        controls = sum(1 for c in line if c < " " and c != "\t")
        if controls < 2 and controls <= 0.05 * len(line):
            kept.append(line)
    return "\n".join(kept).strip()


def _read_pages(pdf: pdfium.PdfDocument, numbers: list[int], drop_garbled: bool) -> _Pages:
    """Each page's text under a ``--- Page N ---`` line, N from ``numbers``."""
    out = _Pages()
    for i, number in enumerate(numbers):
        try:
            page = pdf[i]
        except pdfium.PdfiumError as e:
            out.empty.append(number)
            out.parts.append(f"--- Page {number} ---\n[page could not be read: {e}]")
            continue
        try:
            text = _page_text(page)
        except pdfium.PdfiumError as e:
            out.empty.append(number)
            out.parts.append(f"--- Page {number} ---\n[page could not be read: {e}]")
            continue
        finally:
            page.close()
        if drop_garbled:
            cleaned = _without_glyph_numbers(text)
            if _garbled(text) or (text and not cleaned):
                out.garbled.append(number)
                out.parts.append(f"--- Page {number} ---\n[page recovered without its fonts]")
                continue
            text = cleaned
        if len("".join(text.split())) < MIN_PAGE_CHARS:
            out.empty.append(number)
        out.parts.append(f"--- Page {number} ---\n{text}")
    return out


def _garbled(text: str) -> bool:
    """Control characters where letters should be: a page whose fonts (and their
    mapping to Unicode) were lost, read as raw glyph numbers."""
    visible = [c for c in text if not c.isspace()]
    controls = sum(1 for c in visible if c < " " or "\x7f" <= c < "\xa0")
    return bool(visible) and controls > 0.2 * len(visible)


def _truncated(data: bytes) -> bool:
    return b"%%EOF" not in data[-2048:]


def parse_pdf(data: bytes, name: str, sha256: str, password: str | None = None) -> ParsedDocument:
    warnings: list[str] = []
    rebuilt: Rebuilt | None = None
    try:
        pdf = _open(data, name, password)
    except _Damaged as e:
        rebuilt = rebuild(data)
        if rebuilt is None:
            raise ParseError(_unrecoverable(name, data, e.reason), hint=DAMAGED_HINT) from e
        pdf = pdfium.PdfDocument(rebuilt.data)
    else:
        if _truncated(data) and password is None:
            # pdfium opens some cut files by itself, but may find fewer pages than survive
            candidate = rebuild(data)
            if candidate is not None and _page_count(candidate) > len(pdf):
                pdf.close()
                rebuilt, pdf = candidate, pdfium.PdfDocument(candidate.data)
    try:
        count = len(pdf)
        if count == 0:
            raise ParseError(f"{name}: the PDF has no pages.", hint="Check the file.")
        numbers = rebuilt.page_numbers if rebuilt else None
        if numbers is None or len(numbers) != count:
            numbers = list(range(1, count + 1))
        pages = _read_pages(pdf, numbers, drop_garbled=rebuilt is not None)
    finally:
        pdf.close()
    if rebuilt is not None:
        unsure = [numbers[i] for i in rebuilt.fonts_lost if i < count]
        warnings.append(_recovered_warning(rebuilt, count, pages.garbled, unsure))
    elif _truncated(data):
        warnings.append(
            f"the PDF does not end as a PDF should (no %%EOF), so it may be cut short; "
            f"{_pages(count)} could be read"
        )
    if len(pages.empty) == count:
        warnings.append(
            "no page has a text layer: a scanned document? OCR is not available, "
            "so its text is empty"
        )
    elif pages.empty:
        noun = "page" if len(pages.empty) == 1 else "pages"
        verb = "has" if len(pages.empty) == 1 else "have"
        warnings.append(
            f"{noun} {_ranges(pages.empty)} {verb} no text layer: scanned? OCR is not available"
        )
    text = "\n\n".join(pages.parts) + "\n"
    return ParsedDocument(
        text=text,
        meta=DocumentMeta(
            format="pdf",
            pages=count,
            chars=len(text),
            sha256=sha256,
            source_bytes=len(data),
            parser="pdf:pypdfium2" + ("+rebuilt" if rebuilt else ""),
            warnings=warnings,
        ),
    )


def _page_count(rebuilt: Rebuilt) -> int:
    doc = pdfium.PdfDocument(rebuilt.data)
    try:
        return len(doc)
    finally:
        doc.close()


def _recovered_warning(rebuilt: Rebuilt, count: int, garbled: list[int], unsure: list[int]) -> str:
    said = f"the PDF is damaged (cut short or malformed): {_pages(count)} recovered"
    numbers, original = rebuilt.page_numbers, rebuilt.original_pages
    if numbers is not None and original is not None:
        lost = sorted(set(range(1, original + 1)) - set(numbers))
        said += f" of {original}; pages {_ranges(lost)} are lost" if lost else f" of {original}"
    elif original is not None:
        said += (
            f" of {original}; the page tree is damaged, so pages are numbered in the order "
            "they were found, not as in the original"
        )
    else:
        said += "; the original page count and numbers are not known (pages are in file order)"
    if garbled:
        noun = "page" if len(garbled) == 1 else "pages"
        said += f"; {noun} {_ranges(garbled)} lost their fonts and are left out"
    unsure = [n for n in unsure if n not in garbled]
    if unsure:
        noun = "page" if len(unsure) == 1 else "pages"
        said += (
            f"; {noun} {_ranges(unsure)} lost some of their fonts: lines read as glyph "
            "numbers are left out, and the rest may be in the wrong characters"
        )
    return said + "; a recovered page may miss what it drew from the lost part"


def _pages(n: int) -> str:
    return f"{n} page" if n == 1 else f"{n} pages"


def _unrecoverable(name: str, data: bytes, reason: str) -> str:
    tried = f"tried pdfium's own repair ({reason}) and a rebuild from the objects that survive"
    objects, broken = surviving_objects(data)
    if any(b"/Standard" in o.body and b"/U" in o.body for o in objects.values()):
        return (
            f"{name}: the PDF is encrypted and damaged: the key to its text was in the part "
            f"that is lost, so no page can be read ({tried})."
        )
    if broken or (b"/ObjStm" in data and _truncated(data)):
        return (
            f"{name}: the PDF is damaged and no page can be recovered: it keeps its objects "
            "in compressed object streams, and the file was cut before they were complete, "
            f"so no tool can read its pages ({tried})."
        )
    if _truncated(data):
        return (
            f"{name}: the PDF is damaged: it is cut short, and no page survives in the part "
            "that is left "
            "(PDFs often keep their pages, or the compressed streams that hold them, near "
            f"the end), so no tool can read it ({tried})."
        )
    return f"{name}: the PDF is damaged or malformed and no page can be recovered ({tried})."
