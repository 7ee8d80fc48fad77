"""PDF text with pypdfium2: about 40 times faster than pdfplumber on real filings,
with the same recall on FinanceBench's evidence pages (see benchmarks/ingest.py).

Text is taken within each page's crop box, so off-page text is not duplicated.
"""

from __future__ import annotations

import pypdfium2 as pdfium

from shesha.errors import ParseError
from shesha.parser.document import DocumentMeta, ParsedDocument

_ERR_PASSWORD = 4
MIN_PAGE_CHARS = 8  # fewer non-space characters than this: no text layer
PASSWORD_HINT = "Give the password with `--password` (CLI) or `password=` (Python API)."  # noqa: S105


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
        raise ParseError(
            f"{name}: the PDF is damaged, truncated or malformed ({e}).",
            hint="Re-export or repair it (e.g. `qpdf --replace-input`), then add it again.",
        ) from e


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


def parse_pdf(data: bytes, name: str, sha256: str, password: str | None = None) -> ParsedDocument:
    pdf = _open(data, name, password)
    try:
        count = len(pdf)
        if count == 0:
            raise ParseError(f"{name}: the PDF has no pages.", hint="Check the file.")
        parts: list[str] = []
        empty: list[int] = []
        for i in range(count):
            page = pdf[i]
            try:
                text = _page_text(page)
            except pdfium.PdfiumError as e:
                text = ""
                empty.append(i + 1)
                parts.append(f"--- Page {i + 1} ---\n[page could not be read: {e}]")
                continue
            finally:
                page.close()
            if len("".join(text.split())) < MIN_PAGE_CHARS:
                empty.append(i + 1)
            parts.append(f"--- Page {i + 1} ---\n{text}")
    finally:
        pdf.close()
    warnings = []
    if len(empty) == count:
        warnings.append(
            "no page has a text layer: a scanned document? OCR is not available, "
            "so its text is empty"
        )
    elif empty:
        noun = "page" if len(empty) == 1 else "pages"
        verb = "has" if len(empty) == 1 else "have"
        warnings.append(
            f"{noun} {_ranges(empty)} {verb} no text layer: scanned? OCR is not available"
        )
    text = "\n\n".join(parts) + "\n"
    return ParsedDocument(
        text=text,
        meta=DocumentMeta(
            format="pdf",
            pages=count,
            chars=len(text),
            sha256=sha256,
            source_bytes=len(data),
            parser="pdf:pypdfium2",
            warnings=warnings,
        ),
    )
