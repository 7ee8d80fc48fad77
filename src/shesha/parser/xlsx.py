"""Excel workbooks (XLSX) with openpyxl: each sheet as a table, rows as ``a | b | c``.

Cells are read as Excel last computed them (``data_only``): a formula shows its value.
A workbook written by a program that does not compute formulas stores no value for
them, and those cells come out empty. Charts, images, formatting and comments are not
kept.
"""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from typing import Any

from openpyxl import load_workbook
from openpyxl.utils.exceptions import InvalidFileException

from shesha.errors import ParseError
from shesha.parser.document import ParsedDocument

DAMAGED_HINT = "Open it in a spreadsheet program and save it again, then add it again."


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime) and value.time() == dt.time(0):
        return value.date().isoformat()
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).replace("\n", " ").strip()


def parse_xlsx(data: bytes, name: str, sha256: str) -> ParsedDocument:
    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError, ValueError) as e:
        raise ParseError(
            f"{name}: the workbook is damaged or not an XLSX file ({e}).", hint=DAMAGED_HINT
        ) from e
    parts: list[str] = []
    warnings: list[str] = []
    try:
        for sheet in book.worksheets:
            rows = []
            for row in sheet.iter_rows(values_only=True):
                cells = [_cell(v) for v in row]
                while cells and not cells[-1]:
                    cells.pop()
                if cells:
                    rows.append(" | ".join(cells))
            parts.append(f"--- Sheet: {sheet.title} ---\n" + "\n".join(rows))
            if not rows:
                warnings.append(f"sheet {sheet.title!r} is empty")
    finally:
        book.close()
    text = "\n\n".join(parts) + "\n"
    return ParsedDocument.of(
        text,
        data,
        sha256,
        fmt="xlsx",
        pages=len(parts),
        parser="xlsx:openpyxl",
        warnings=warnings,
    )
