"""A corpus's text as records: key-value lines, JSON lines and tables with a header row
are read as records with named fields; prose, short lists and mixed corpora are not."""

from __future__ import annotations

import json
from pathlib import Path

import openpyxl
import pytest

from shesha.parser.xlsx import parse_xlsx
from shesha.retrieval.records import parse_records

NOTES = [
    "the box was crushed",
    "thank you, it fits",
    "does it come in navy?",
    "please cancel my order",
]


def key_value(n: int = 30, separator: str = " || ") -> str:
    return "\n".join(
        separator.join(
            [f"Date: 2023-01-{i % 28 + 1:02d}", f"User: {1000 + i % 5}", f"Note: {NOTES[i % 4]}"]
        )
        for i in range(n)
    )


def test_key_value_lines_are_records_whose_words_are_what_the_model_reads() -> None:
    records = parse_records([("log.txt", key_value())])
    assert records is not None
    assert records.fields == ("Date", "User", "Note")
    assert records.worded == ("Note",)  # dates and ids are for code to group by
    assert len(records.rows) == 30
    first = records.rows[0]
    assert (first.document, first.line) == ("log.txt", 1)
    assert records.words(first) == "Note: the box was crushed"
    assert records.value(first, "User") == "1000"


@pytest.mark.parametrize("separator", [" | ", "\t", "; "])
def test_other_field_separators(separator: str) -> None:
    records = parse_records([("log.txt", key_value(separator=separator))])
    assert records is not None
    assert records.fields == ("Date", "User", "Note")


def test_json_lines() -> None:
    text = "\n".join(json.dumps({"id": i, "text": NOTES[i % 4], "score": i / 2}) for i in range(25))
    records = parse_records([("rows.jsonl", text)])
    assert records is not None
    assert records.fields == ("id", "text", "score")
    assert records.worded == ("text",)


def test_a_csv_with_quoted_commas() -> None:
    rows = [f'{i},"{NOTES[i % 4]}",{1000 + i % 3}' for i in range(40)]
    records = parse_records([("rows.csv", "id,comment,customer\n" + "\n".join(rows))])
    assert records is not None
    assert records.fields == ("id", "comment", "customer")
    assert records.value(records.rows[1], "comment") == "thank you, it fits"
    assert records.rows[0].line == 2  # the header is line 1


def test_a_spreadsheet_as_the_parser_writes_it(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Tickets"
    sheet.append(["Ticket", "Customer", "Message"])
    for i in range(30):
        sheet.append([f"T-{i}", f"C{i % 4}", NOTES[i % 4]])
    path = tmp_path / "tickets.xlsx"
    book.save(path)
    text = parse_xlsx(path.read_bytes(), "tickets.xlsx", "0" * 64).text
    records = parse_records([("tickets.xlsx", text)])
    assert records is not None
    assert records.fields == ("Ticket", "Customer", "Message")
    assert len(records.rows) == 30


@pytest.mark.parametrize(
    "text",
    [
        "\n\n".join(f"Paragraph {i}: the weather on the coast was mild." for i in range(50)),
        key_value(n=10),  # too few lines to be a table of records
        "Speaker: hello there\nOther: how are you\n" * 20,  # one field a line
        "\n".join(f"{i} | {i * 2}" for i in range(40)),  # a header of numbers names nothing
    ],
)
def test_prose_and_short_or_unnamed_lists_are_not_records(text: str) -> None:
    assert parse_records([("a.txt", text)]) is None


def test_a_corpus_is_records_only_when_every_document_is_with_the_same_fields() -> None:
    log = key_value()
    assert parse_records([("a.txt", log), ("b.txt", log)]) is not None
    assert parse_records([("a.txt", log), ("b.txt", "A page of prose.\n\nAnother.")]) is None
    other = log.replace("Note:", "Comment:")
    assert parse_records([("a.txt", log), ("b.txt", other)]) is None
    assert parse_records([("a.txt", log), ("empty.txt", "  \n")]) is not None


def test_a_few_stray_lines_are_left_out_but_many_mean_not_records() -> None:
    stray = key_value(n=40) + "\n(end of export)\n"
    records = parse_records([("log.txt", stray)])
    assert records is not None
    assert len(records.rows) == 40
    half = key_value(n=30) + "\n" + "\n".join(f"free line {i}" for i in range(30))
    assert parse_records([("log.txt", half)]) is None


def test_records_with_no_words_are_left_to_code() -> None:
    numbers = "\n".join(f"Day: {i} || Reading: {i * 3}" for i in range(30))
    assert parse_records([("meter.txt", numbers)]) is None


def test_ids_are_not_words() -> None:
    rows = [f'T-{i},C{i % 4},"{NOTES[i % 4]}",{"open" if i % 2 else "shut"}' for i in range(30)]
    records = parse_records([("t.csv", "ticket,customer,message,status\n" + "\n".join(rows))])
    assert records is not None
    assert records.worded == ("message", "status")  # C3 and T-12 are ids; "open" is a word
