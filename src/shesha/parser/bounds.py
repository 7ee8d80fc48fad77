"""How much one file may cost to parse, checked before the work is done where it can be.

A small file can be a bomb: a zip member that inflates past a gigabyte, a PDF page whose
content stream does, a GIF whose frames each decode to a 100-megapixel canvas, an e-book
whose spine names one chapter a hundred times. Each bound below is checked as early as
the format allows, and a file past one fails alone, with an error that names the file and
the bound:

- **inflated bytes**: what a zip-based file (DOCX, XLSX, PPTX, EPUB) declares its members
  inflate to (Python's zipfile, which every one of their readers uses, never inflates a
  member past its declared size), and what a PDF's compressed streams other than images
  inflate to, counted by inflating them once, up to the bound, before pdfium reads them;
- **pixels**: one frame or page image, and all the frames of one image file together;
- **frames** and **pages**: of one file;
- **characters**: of text one file produces (``ParseBounds.chars``), and one add
  (``add_chars``, checked by the store).

The parse itself runs in a worker process with a memory limit and a time limit (the
store's ``_parse_all``), so that what no bound foresees still fails alone.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from dataclasses import dataclass

from shesha.errors import ParseError

MB = 1 << 20


@dataclass(frozen=True)
class ParseBounds:
    inflated_mb: int = 512
    """Bytes one file may inflate to (zip members, PDF streams other than images)."""
    pixels: int = 200_000_000
    """One image frame or rendered page."""
    total_pixels: int = 2_000_000_000
    """All the frames of one image file (a 100-page TIFF scan at 300 dpi is 0.9 billion)."""
    frames: int = 1000
    pages: int = 20_000
    chars: int = 100_000_000
    """Characters of text one file may produce."""
    add_chars: int = 1_000_000_000
    """Characters of text one add may produce, all its files together."""


DEFAULT = ParseBounds()
SETTING = {"inflated_mb": "max_inflated_mb", "chars": "max_file_chars"}
"""The bounds a user may raise, and the setting (shesha.toml, SHESHA_*) for each."""


def too_much(name: str, what: str, bound: str, field: str | None = None) -> ParseError:
    setting = SETTING.get(field or "")
    hint = (
        f"If the file is genuine, raise {setting} (shesha.toml, or SHESHA_{setting.upper()}), "
        "or split the file."
        if setting
        else "Check the file: no genuine document needs this much; split or convert it."
    )
    return ParseError(f"{name}: {what} (the bound: {bound}).", hint=hint)


def check_zip(data: bytes, name: str, bounds: ParseBounds = DEFAULT) -> None:
    """Refuse a zip whose members declare more than ``inflated_mb`` in all."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            declared = sum(info.file_size for info in z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a readable zip: its parser says so, in its own words
    if declared > bounds.inflated_mb * MB:
        raise too_much(
            name,
            f"its parts inflate to {declared / MB:,.0f} MB",
            f"{bounds.inflated_mb:,} MB a file",
            "inflated_mb",
        )


_STREAM = re.compile(rb"(?<!end)stream\r?\n")
_OBJECT = re.compile(rb"\d+\s+\d+\s+obj\b")
_DICT_TAIL = 4096
"""How far before a stream keyword its object's dictionary is looked for."""


def check_pdf_streams(data: bytes, name: str, bounds: ParseBounds = DEFAULT) -> None:
    """Inflate each Flate stream of a PDF that is not an image, up to ``inflated_mb`` in
    all, and refuse the file past it. Images are decoded only to render a page for OCR,
    and that has a pixel bound of its own."""
    limit = bounds.inflated_mb * MB
    total = 0
    for match in _STREAM.finditer(data):
        head = data[max(0, match.start() - _DICT_TAIL) : match.start()]
        objects = list(_OBJECT.finditer(head))
        dictionary = head[objects[-1].end() :] if objects else head
        if b"/FlateDecode" not in dictionary and b"/Fl" not in dictionary:
            continue
        if b"/Image" in dictionary:
            continue
        inflater = zlib.decompressobj()
        pos, pending = match.end(), b""
        while not inflater.eof:
            if not pending:
                if pos >= len(data):
                    break
                pending = data[pos : pos + (1 << 16)]
                pos += len(pending)
            try:
                total += len(inflater.decompress(pending, MB))
            except zlib.error:
                break  # a damaged stream: pdfium (or the rebuild) judges it
            pending = inflater.unconsumed_tail
            if total > limit:
                raise too_much(
                    name,
                    f"its compressed streams inflate to more than {bounds.inflated_mb:,} MB",
                    f"{bounds.inflated_mb:,} MB a file",
                    "inflated_mb",
                )


def check_chars(text: str, name: str, bounds: ParseBounds = DEFAULT) -> None:
    if len(text) > bounds.chars:
        raise too_much(
            name,
            f"it gives {len(text):,} characters of text",
            f"{bounds.chars:,} characters a file",
            "chars",
        )


def check_pages(count: int, name: str, bounds: ParseBounds = DEFAULT, unit: str = "pages") -> None:
    if count > bounds.pages:
        raise too_much(name, f"it has {count:,} {unit}", f"{bounds.pages:,} a file")


def check_pixels(
    width: int, height: int, frames: int, name: str, bounds: ParseBounds = DEFAULT
) -> None:
    """One frame of ``width`` x ``height``, and ``frames`` of them in all."""
    if width * height > bounds.pixels:
        raise too_much(
            name,
            f"an image of {width:,} x {height:,} pixels",
            f"{bounds.pixels:,} pixels an image",
        )
    if width * height * frames > bounds.total_pixels:
        raise too_much(
            name,
            f"{frames:,} frames of {width:,} x {height:,} pixels decode to "
            f"{width * height * frames:,} pixels",
            f"{bounds.total_pixels:,} pixels a file",
        )
