"""A corpus's text as records, when it is one: a line per record, each with named fields.

Three shapes are read, the ones data is exported in:

- **key-value lines**: ``Date: 2023-01-05 || User: 4410 || Note: the box was crushed``
  (fields split by ``||``, ``|``, a tab or ``;``, each ``key: value`` or ``key=value``);
- **JSON lines**: one object of plain values per line;
- **a table with a header row**: CSV, TSV, or a sheet as the parsers write it
  (``a | b | c``).

Lines that are a parser's page or sheet marks are skipped. A document is records when at
least ``MIN_RECORDS`` lines parse, and at least ``SHARE`` of its lines parse with the same
fields; a corpus is records when every document with text is, with the same fields.

The map strategy reads them: the model reads each record's **words** (its fields of
text), and code counts and groups by the others (numbers, dates, ids), so one reading of
``"the box was crushed"`` serves every record that holds it.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

MIN_RECORDS = 20
SHARE = 0.9
PROBE_LINES = 200
"""Each shape is first tried on this many lines: a 12 MB CSV is read in 2.5 s, not 3.8."""
KEY_VALUE_SEPARATORS = ("||", "|", "\t", ";")
TABLE_SEPARATORS = ("\t", "|", ",", ";")
"""``|`` also reads a sheet's ``a | b | c``: cells are stripped."""
_KEY_VALUE = re.compile(r"^\s*([A-Za-z_][\w .-]{0,39}?)\s*[:=]\s*(.*?)\s*$", re.S)
_MARK = re.compile(r"^--- (?:Page \d+|Slide \d+|Sheet: .*) ---\s*$")
_NOT_WORDS = re.compile(r"^(?:[\W\d_]|[^\W\d_](?![^\W\d_]))*$")
"""A value with no two letters in a row: a number, a date, an amount, an id (C7, T-12)."""
WORDS_SHARE = 0.5
"""A field is of words when at least this share of its values has letters."""


@dataclass(frozen=True)
class Record:
    document: str
    line: int
    """Its line in the document, from 1."""
    values: tuple[str, ...]
    """One per field of its table, in the table's order."""


@dataclass(frozen=True)
class Records:
    """A corpus's records, with the same fields in every document."""

    fields: tuple[str, ...]
    rows: tuple[Record, ...]
    worded: tuple[str, ...]
    """The fields of text: what the model reads of each record."""

    def words(self, record: Record) -> str:
        """What the model reads of a record: its fields of text, as ``key: value``."""
        return "\n".join(
            f"{name}: {value}"
            for name, value in zip(self.fields, record.values, strict=True)
            if name in self.worded
        )

    def value(self, record: Record, field: str) -> str:
        return record.values[self.fields.index(field)]

    def column(self, field: str) -> list[str]:
        """The field's value in every record, in order."""
        at = self.fields.index(field)
        return [r.values[at] for r in self.rows]


def parse_records(documents: Sequence[tuple[str, str]]) -> Records | None:
    """The corpus's records, or None when it is not (all) records."""
    fields: tuple[str, ...] | None = None
    rows: list[Record] = []
    for name, text in documents:
        if not text.strip():
            continue
        found = _document_records(name, text)
        if found is None:
            return None
        names, records = found
        if fields is not None and names != fields:
            return None
        fields = names
        rows.extend(records)
    if fields is None or not rows:
        return None
    worded = tuple(
        name
        for i, name in enumerate(fields)
        if sum(1 for r in rows if not _NOT_WORDS.match(r.values[i])) >= WORDS_SHARE * len(rows)
    )
    if not worded:
        return None  # nothing of words to read: code alone answers, in the code loop
    return Records(fields=fields, rows=tuple(rows), worded=worded)


def _document_records(name: str, text: str) -> tuple[tuple[str, ...], list[Record]] | None:
    lines = [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not _MARK.match(line)
    ]
    if len(lines) < MIN_RECORDS:
        return None
    for parse in (_json_lines, _key_value_lines, _table_lines):
        # A shape that the first lines do not have is not tried on all of them.
        if len(lines) > PROBE_LINES and parse(name, lines[:PROBE_LINES]) is None:
            continue
        found = parse(name, lines)
        if found is not None:
            return found
    return None


def _most(
    name: str, parsed: list[tuple[int, list[tuple[str, str]] | None]], total: int
) -> tuple[tuple[str, ...], list[Record]] | None:
    """The records of the lines whose fields are the most common ones, if enough are."""
    shapes = Counter(tuple(k for k, _ in pairs) for _, pairs in parsed if pairs)
    if not shapes:
        return None
    keys, count = shapes.most_common(1)[0]
    if len(keys) < 2 or len(set(keys)) < len(keys) or count < max(MIN_RECORDS, SHARE * total):
        return None
    records = [
        Record(name, number, tuple(v for _, v in pairs))
        for number, pairs in parsed
        if pairs and tuple(k for k, _ in pairs) == keys
    ]
    return keys, records


def _json_lines(
    name: str, lines: list[tuple[int, str]]
) -> tuple[tuple[str, ...], list[Record]] | None:
    if not lines[0][1].lstrip().startswith("{"):
        return None
    parsed: list[tuple[int, list[tuple[str, str]] | None]] = []
    for number, line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            parsed.append((number, None))
            continue
        plain = isinstance(value, dict) and all(
            isinstance(v, str | int | float | bool) or v is None for v in value.values()
        )
        pairs = [(str(k), "" if v is None else str(v)) for k, v in value.items()] if plain else None
        parsed.append((number, pairs))
    return _most(name, parsed, len(lines))


def _key_value_lines(
    name: str, lines: list[tuple[int, str]]
) -> tuple[tuple[str, ...], list[Record]] | None:
    for separator in KEY_VALUE_SEPARATORS:
        parsed: list[tuple[int, list[tuple[str, str]] | None]] = []
        for number, line in lines:
            pairs: list[tuple[str, str]] | None = []
            for part in line.split(separator):
                match = _KEY_VALUE.match(part)
                if match is None or pairs is None:
                    pairs = None
                    break
                pairs.append((match.group(1).strip(), match.group(2)))
            parsed.append((number, pairs))
        found = _most(name, parsed, len(lines))
        if found is not None:
            return found
    return None


def _table_lines(
    name: str, lines: list[tuple[int, str]]
) -> tuple[tuple[str, ...], list[Record]] | None:
    for separator in TABLE_SEPARATORS:
        cells = [(number, _cells(line, separator)) for number, line in lines]
        header = cells[0][1]
        width = len(header)
        named = all(h and not _NOT_WORDS.match(h) for h in header)
        if width < 2 or not named or len(set(header)) < width:
            continue
        body = cells[1:]
        fitting = [(number, row) for number, row in body if len(row) == width]
        if len(fitting) < max(MIN_RECORDS, SHARE * len(body)):
            continue
        return tuple(header), [Record(name, number, tuple(row)) for number, row in fitting]
    return None


def _cells(line: str, separator: str) -> list[str]:
    if separator in (",", ";"):
        return [c.strip() for c in next(csv.reader([line], delimiter=separator))]
    return [c.strip() for c in line.strip().strip("|").split(separator)]
