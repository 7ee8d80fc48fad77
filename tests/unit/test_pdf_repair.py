"""Damaged PDFs keep what can be read: a file cut short is rebuilt from the objects that
survive, its readable pages stored with a warning naming what was lost; it fails only
when no page survives, and then says plainly why."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
from tests.fixtures import make_pdf, make_pdf_with_object_streams
from typer.testing import CliRunner

from shesha.cli import app
from shesha.errors import ParseError
from shesha.parser import parse_bytes
from shesha.parser.pdf_repair import rebuild

PAGES = [f"Page {i} says the total is {i * 111} dollars." for i in range(1, 6)]


def test_a_pdf_cut_between_pages_keeps_the_pages_before_the_cut() -> None:
    data = make_pdf(PAGES)
    cut = data.index(b"7 0 obj")  # the third page's object
    doc = parse_bytes(data[:cut], "report.pdf")
    assert "--- Page 1 ---\nPage 1 says the total is 111 dollars." in doc.text
    assert "--- Page 2 ---\nPage 2 says the total is 222 dollars." in doc.text
    assert "Page 3" not in doc.text
    assert doc.meta.pages == 2
    assert "2 pages recovered of 5; pages 3-5 are lost" in doc.meta.warnings[0]
    assert doc.meta.parser == "pdf:pypdfium2+rebuilt"


def test_a_pdf_that_lost_only_its_cross_references_keeps_every_page() -> None:
    data = make_pdf(PAGES)
    doc = parse_bytes(data[: data.index(b"xref")], "report.pdf")
    assert [f"Page {i} says" in doc.text for i in range(1, 6)] == [True] * 5
    assert "5 pages recovered of 5" in doc.meta.warnings[0]


def test_without_its_page_tree_pages_come_in_file_order_and_say_so() -> None:
    data = make_pdf(PAGES)
    broken = data.replace(b"\n2 0 obj", b"\n2 0 xxx")[: data.index(b"xref")]
    doc = parse_bytes(broken, "report.pdf")
    assert doc.text.index("Page 1 says") < doc.text.index("Page 5 says")
    assert "original page count and numbers are not known" in doc.meta.warnings[0]


def test_pages_inside_a_complete_object_stream_are_recovered() -> None:
    data = make_pdf_with_object_streams(PAGES[:3])
    assert not parse_bytes(data, "modern.pdf").meta.warnings  # the whole file is fine
    cut = data.rindex(b"0 obj\n<< /Type /XRef")  # the cross-reference stream is lost
    doc = parse_bytes(data[:cut], "modern.pdf")
    assert "Page 3 says the total is 333 dollars." in doc.text
    assert "3 pages recovered of 3" in doc.meta.warnings[0]


def test_a_cut_through_the_object_stream_is_a_plain_error() -> None:
    data = make_pdf_with_object_streams(PAGES[:3])
    cut = data.index(b"/Type /ObjStm") + 80
    with pytest.raises(ParseError) as err:
        parse_bytes(data[:cut], "modern.pdf")
    said = str(err.value)
    assert said.startswith("modern.pdf: the PDF is damaged and no page can be recovered")
    assert "compressed object streams" in said
    assert "tried pdfium's own repair" in said
    assert err.value.hint  # what to do: get the file again


def test_a_pdf_with_nothing_left_but_its_header_says_it_is_cut_short() -> None:
    with pytest.raises(ParseError, match="it is cut short, and no page survives"):
        parse_bytes(make_pdf(PAGES)[:40], "stub.pdf")


def test_adding_a_cut_pdf_stores_what_survives_and_says_so(tmp_path: Path) -> None:
    data = make_pdf(PAGES)
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "cut.pdf").write_bytes(data[: data.index(b"9 0 obj")])
    (folder / "gone.pdf").write_bytes(data[:40])
    (folder / "fine.txt").write_text("an intact note")
    env = {"SHESHA_HOME": str(tmp_path / "home")}
    r = CliRunner().invoke(app, ["add", "p", str(folder), "--json"], env=env)
    assert r.exit_code == 1  # one file failed
    out = json.loads(r.stdout)
    stored = {d["name"]: d for d in out["stored"]}
    assert set(stored) == {"cut.pdf", "fine.txt"}
    assert "pages 4-5 are lost" in stored["cut.pdf"]["warnings"][0]
    assert [f["path"].endswith("gone.pdf") for f in out["failed"]] == [True]
    shown = CliRunner().invoke(app, ["docs", "p", "--show", "cut.pdf"], env=env)
    assert "Page 3 says the total is 333 dollars." in shown.stdout


def test_an_enormous_object_number_does_not_make_an_enormous_rebuild() -> None:
    hostile = b"%PDF-1.7\n9999999999 0 obj\n<< /Type /Page /MediaBox [0 0 10 10] >>\nendobj\n"
    rebuilt = rebuild(hostile)
    assert rebuilt is not None
    assert len(rebuilt.data) < 10_000  # the cross-reference table lists what exists


def test_a_damaged_object_stream_header_is_skipped_not_a_crash() -> None:
    data = make_pdf_with_object_streams(PAGES[:2])
    start = data.index(b"/Type /ObjStm")
    broken = data[:start] + data[start:].replace(b"/N 5", b"/N 5", 1)
    stream_at = broken.index(b"stream\n", start) + len(b"stream\n")
    garbled = broken[:stream_at] + zlib.compress(b"x0 y0 1 2 << >>") + b"\nendstream\nendobj\n"
    with pytest.raises(ParseError, match="no page"):
        parse_bytes(garbled, "garbled.pdf")
