"""Plain text, Markdown, source code, CSV and JSON."""

from __future__ import annotations

import csv
import io
import json

from shesha.parser.document import ParsedDocument
from shesha.parser.encoding import decode

MAX_CSV_FIELD = 1 << 24


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _csv_text(text: str, warnings: list[str]) -> str:
    sample = text[:65536]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
        warnings.append("CSV dialect not recognised: read as comma-separated")
    csv.field_size_limit(MAX_CSV_FIELD)
    rows = csv.reader(io.StringIO(text), dialect)
    lines = []
    try:
        for row in rows:
            lines.append(" | ".join(cell.strip() for cell in row))
    except csv.Error as e:
        warnings.append(f"CSV could not be read as a table ({e}): kept as plain text")
        return text
    return "\n".join(lines)


def _json_text(text: str, warnings: list[str]) -> str:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        warnings.append(f"not valid JSON ({e}): kept as plain text")
        return text
    return json.dumps(value, indent=2, ensure_ascii=False)


def parse_text(data: bytes, name: str, sha256: str, fmt: str) -> ParsedDocument:
    decoded = decode(data)
    text, warnings = decoded.text, decoded.warnings
    text = _normalise_newlines(text)
    if fmt == "csv":
        text = _csv_text(text, warnings)
    elif fmt == "json":
        text = _json_text(text, warnings)
    if not text.strip():
        warnings.append("the file has no text")
    if text and not text.endswith("\n"):
        text += "\n"
    return ParsedDocument.of(
        text,
        data,
        sha256,
        fmt=fmt,
        parser=f"text:{fmt}",
        encoding=decoded.encoding,
        encoding_source=decoded.source,
        encoding_confidence=decoded.confidence,
        warnings=warnings,
    )
