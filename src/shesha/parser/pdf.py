"""PDF text with pypdfium2: about 40 times faster than pdfplumber on real filings,
with the same recall on FinanceBench's evidence pages (see benchmarks/ingest.py).

Text is taken within each page's crop box, so off-page text is not duplicated.

A file pdfium cannot open (cut short, broken cross-references) is rebuilt from the
objects that survive (``pdf_repair.py``): the pages that can be read are stored, with a
warning naming what was lost; it fails only when no page survives, and then says why.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field, replace

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from shesha.errors import ParseError
from shesha.parser.bounds import check_pages
from shesha.parser.document import ParsedDocument
from shesha.parser.ocr import OCR_DPI, OcrSettings, ocr_problem, read_pages
from shesha.parser.pdf_repair import Rebuilt, rebuild, surviving_objects

_ERR_PASSWORD = 4
MAX_RENDER_PIXELS = 40_000_000
"""About A2 at 300 dpi; larger pages are rendered at less."""
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
    ocr: list[int] = field(default_factory=list)
    """Pages read by OCR."""
    scanned: list[int] = field(default_factory=list)
    """Pages with images and no text layer (scans), whether OCR read them or not."""
    ocr_problem: str | None = None


def _without_glyph_numbers(text: str) -> str:
    """A recovered page's lines, less those read as raw glyph numbers (control characters
    where letters should be: the font's map to text was lost)."""
    kept = []
    for line in text.split("\n"):
        controls = sum(1 for c in line if c < " " and c != "\t")
        if controls < 2 and controls <= 0.05 * len(line):
            kept.append(line)
    return "\n".join(kept).strip()


def _has_images(page: pdfium.PdfPage) -> bool:
    return any(True for _ in page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,), max_depth=3))


def _render(pdf: pdfium.PdfDocument, index: int) -> bytes:
    """The page as a greyscale PNG at OCR_DPI, or less for a page so large that it would
    pass MAX_RENDER_PIXELS (a poster, or a hostile file)."""
    page = pdf[index]
    try:
        width, height = page.get_size()
        scale = min(OCR_DPI / 72, (MAX_RENDER_PIXELS / max(width * height, 1.0)) ** 0.5)
        image = page.render(scale=scale, grayscale=True).to_pil()
    finally:
        page.close()
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _read_pages(
    pdf: pdfium.PdfDocument, numbers: list[int], drop_garbled: bool, ocr: OcrSettings | None
) -> _Pages:
    """Each page's text under a ``--- Page N ---`` line, N from ``numbers``; pages with
    no text layer but images are read by OCR when ``ocr`` allows."""
    out = _Pages()
    texts: list[str | None] = []
    scans: list[int] = []
    for i, number in enumerate(numbers):
        try:
            page = pdf[i]
            try:
                text = _page_text(page)
                scanned = len("".join(text.split())) < MIN_PAGE_CHARS and _has_images(page)
            finally:
                page.close()
        except pdfium.PdfiumError as e:  # the page will not load, or its text will not
            texts.append(f"[page could not be read: {e}]")
            out.empty.append(number)
            continue
        if drop_garbled:
            cleaned = _without_glyph_numbers(text)
            if _garbled(text) or (text and not cleaned):
                out.garbled.append(number)
                texts.append("[page recovered without its fonts]")
                continue
            text = cleaned
        if scanned:
            scans.append(i)
            out.scanned.append(number)
        texts.append(text)
    if scans and ocr is not None and ocr.enabled:
        _ocr_pages(pdf, [(i, numbers[i]) for i in scans], texts, ocr, out)
    for i, number in enumerate(numbers):
        text = texts[i] or ""
        if number not in out.empty and len("".join(text.split())) < MIN_PAGE_CHARS:
            out.empty.append(number)
        out.parts.append(f"--- Page {number} ---\n{text}")
    out.empty.sort()
    return out


def _ocr_pages(
    pdf: pdfium.PdfDocument,
    scans: list[tuple[int, int]],
    texts: list[str | None],
    ocr: OcrSettings,
    out: _Pages,
) -> None:
    """OCR the scanned pages, a batch at a time (rendered pages are large)."""
    problem = ocr_problem(ocr.languages)
    if problem is not None:
        out.ocr_problem = problem
        return
    batch = 4 * (ocr.workers or os.cpu_count() or 1)
    done_before = 0
    for start in range(0, len(scans), batch):
        chunk = scans[start : start + batch]
        images = []
        for i, _ in chunk:
            try:
                images.append(_render(pdf, i))
            except pdfium.PdfiumError:
                images.append(b"")  # this page cannot be drawn: it stays empty
        offset = done_before

        def told(done: int, _: int, offset: int = offset) -> None:
            if ocr.on_page is not None:
                ocr.on_page(offset + done, len(scans))

        read = read_pages(images, replace(ocr, on_page=told))
        done_before += len(chunk)
        for (i, number), text in zip(chunk, read, strict=True):
            texts[i] = text
            out.ocr.append(number)


def _garbled(text: str) -> bool:
    """Control characters where letters should be: a page whose fonts (and their
    mapping to Unicode) were lost, read as raw glyph numbers."""
    visible = [c for c in text if not c.isspace()]
    controls = sum(1 for c in visible if c < " " or "\x7f" <= c < "\xa0")
    return bool(visible) and controls > 0.2 * len(visible)


def _truncated(data: bytes) -> bool:
    return b"%%EOF" not in data[-2048:]


def parse_pdf(
    data: bytes,
    name: str,
    sha256: str,
    password: str | None = None,
    ocr: OcrSettings | None = None,
) -> ParsedDocument:
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
            if candidate is not None and candidate.pages > len(pdf):
                pdf.close()
                rebuilt, pdf = candidate, pdfium.PdfDocument(candidate.data)
    try:
        count = len(pdf)
        if count == 0:
            raise ParseError(f"{name}: the PDF has no pages.", hint="Check the file.")
        check_pages(count, name)
        numbers = rebuilt.page_numbers if rebuilt else None
        if numbers is None or len(numbers) != count:
            numbers = list(range(1, count + 1))
        pages = _read_pages(pdf, numbers, drop_garbled=rebuilt is not None, ocr=ocr)
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
    warnings += _text_layer_warnings(pages, count, ocr)
    text = "\n\n".join(pages.parts) + "\n"
    return ParsedDocument.of(
        text,
        data,
        sha256,
        fmt="pdf",
        pages=count,
        parser="pdf:pypdfium2"
        + ("+rebuilt" if rebuilt else "")
        + ("+tesseract" if pages.ocr else ""),
        ocr_pages=pages.ocr,
        warnings=warnings,
    )


def _text_layer_warnings(pages: _Pages, count: int, ocr: OcrSettings | None) -> list[str]:
    """What the reader should know about pages without text: read by OCR (a machine's
    reading, so check what matters), scans left unread (OCR off or missing), blank."""
    said = []
    if pages.ocr:
        said.append(
            f"{_noun(len(pages.ocr))} {_ranges(pages.ocr)} read by OCR (no text layer): "
            "a machine's reading, check names and numbers that matter"
        )
    empty = [n for n in pages.empty if n not in pages.ocr]
    unread = [n for n in empty if n in pages.scanned]
    if ocr is None or not ocr.enabled:
        why = "OCR is off"
    elif pages.ocr_problem is not None:
        why = f"OCR could not run: {pages.ocr_problem}"
    else:
        why = "OCR found no text on them"
    if len(empty) == count and unread:
        said.append(f"no page has a text layer: a scanned document? {why}, so its text is empty")
        return said
    if unread:
        verb = "is" if len(unread) == 1 else "are"
        said.append(f"{_noun(len(unread))} {_ranges(unread)} {verb} scanned (no text layer): {why}")
    blank = [n for n in empty if n not in pages.scanned]
    if blank and len(blank) == count:
        said.append("no page has any text (and no image to OCR)")
    elif blank:
        verb = "has" if len(blank) == 1 else "have"
        said.append(f"{_noun(len(blank))} {_ranges(blank)} {verb} no text")
    return said


def _noun(count: int) -> str:
    return "page" if count == 1 else "pages"


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
        said += f"; {_noun(len(garbled))} {_ranges(garbled)} lost their fonts and are left out"
    unsure = [n for n in unsure if n not in garbled]
    if unsure:
        said += (
            f"; {_noun(len(unsure))} {_ranges(unsure)} lost some of their fonts: lines read as "
            "glyph numbers are left out, and the rest may be in the wrong characters"
        )
    return said + "; a recovered page may miss what it drew from the lost part"


def _pages(n: int) -> str:
    return f"{n} {_noun(n)}"


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
