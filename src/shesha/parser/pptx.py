"""PowerPoint decks (PPTX) with python-pptx: slides in order, each slide's text (title
first, then text boxes, tables as ``a | b`` rows, grouped shapes), then its speaker notes.
Images, charts and layout are not kept."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Iterator
from typing import Any

from pptx import Presentation
from pptx.enum.shapes import MSO_SHAPE_TYPE
from pptx.exc import PackageNotFoundError

from shesha.errors import ParseError
from shesha.parser.bounds import check_pages
from shesha.parser.document import ParsedDocument

DAMAGED_HINT = "Open it in a presentation program and save it again, then add it again."


def _texts(shapes: Iterable[Any]) -> Iterator[str]:
    for shape in shapes:
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            yield from _texts(shape.shapes)
        elif getattr(shape, "has_table", False) and shape.has_table:
            for row in shape.table.rows:
                yield " | ".join(c.text.replace("\n", " ").strip() for c in row.cells)
        elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            text = shape.text_frame.text.strip()
            if text:
                yield text


def parse_pptx(data: bytes, name: str, sha256: str) -> ParsedDocument:
    try:
        deck = Presentation(io.BytesIO(data))
    except (zipfile.BadZipFile, PackageNotFoundError, KeyError, ValueError) as e:
        raise ParseError(
            f"{name}: the presentation is damaged or not a PPTX file ({e}).", hint=DAMAGED_HINT
        ) from e
    parts: list[str] = []
    empty: list[int] = []
    check_pages(len(deck.slides), name, unit="slides")
    for number, slide in enumerate(deck.slides, start=1):
        title = slide.shapes.title
        lines = [title.text.strip()] if title is not None and title.text.strip() else []
        lines += [t for t in _texts(slide.shapes) if not lines or t != lines[0]]
        if slide.has_notes_slide:
            notes = (
                slide.notes_slide.notes_text_frame.text.strip()
                if slide.notes_slide.notes_text_frame
                else ""
            )
            if notes:
                lines.append(f"Notes: {notes}")
        if not lines:
            empty.append(number)
        parts.append(f"--- Slide {number} ---\n" + "\n".join(lines))
    warnings = [f"slides {', '.join(map(str, empty))} have no text"] if empty else []
    text = "\n\n".join(parts) + "\n"
    return ParsedDocument.of(
        text,
        data,
        sha256,
        fmt="pptx",
        pages=len(parts),
        parser="pptx:python-pptx",
        warnings=warnings,
    )
