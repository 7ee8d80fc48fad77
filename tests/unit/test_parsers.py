"""Parsers on small documents made here; each failure mode gives a clear ParseError."""

from __future__ import annotations

import codecs
import io
import json
import zipfile

import pytest
from tests.fixtures import make_docx, make_pdf

from shesha.errors import ParseError
from shesha.parser import parse_bytes


def test_pdf_pages_are_marked_and_counted() -> None:
    doc = parse_bytes(make_pdf(["Hello first page", "The second page text"]), "r.pdf")
    assert doc.meta.format == "pdf"
    assert doc.meta.pages == 2
    assert "--- Page 1 ---\nHello first page" in doc.text
    assert "--- Page 2 ---\nThe second page text" in doc.text
    assert doc.meta.warnings == []
    assert len(doc.meta.sha256) == 64


def test_pdf_page_without_text_gets_a_warning() -> None:
    doc = parse_bytes(
        make_pdf(["Some real text on this page", "", "More text on page three"]), "s.pdf"
    )
    assert doc.meta.warnings == ["page 2 has no text"]  # blank: no text and no image


def test_pdf_with_no_text_at_all_says_so() -> None:
    doc = parse_bytes(make_pdf(["", ""]), "blank.pdf")
    assert doc.meta.warnings == ["no page has any text (and no image to OCR)"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"%PDF-1.4\n%%EOF", "the PDF is damaged or malformed and no page can be recovered"),
        (make_pdf(["Hello"])[:200], "the PDF is damaged: it is cut short, and no page survives"),
        (b"this is not a pdf at all", "not a PDF"),
    ],
    ids=["empty", "header-only", "truncated", "not-pdf"],
)
def test_broken_pdfs_are_clear_errors_naming_the_file(data: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=message) as err:
        parse_bytes(data, "broken.pdf")
    assert "broken.pdf" in str(err.value)


def test_docx_keeps_headings_lists_tables_headers_and_footers() -> None:
    doc = parse_bytes(make_docx(), "report.docx")
    text = doc.text
    assert doc.meta.format == "docx"
    assert "# Quarterly report" in text
    assert "Revenue grew strongly." in text
    assert "- First point" in text
    assert "1. Step one" in text
    assert "2. Step two" in text
    assert "Merged header | r0c2" in text  # the merged cell is counted once
    assert "r1c0 | r1c1 | r1c2" in text
    assert text.index("ACME Confidential") < text.index("Quarterly report")
    assert text.index("Page footer text") > text.index("r2c2")


def test_truncated_docx_is_a_clear_error() -> None:
    data = make_docx()
    with pytest.raises(ParseError, match="damaged or truncated"):
        parse_bytes(data[: len(data) // 2], "half.docx")


def test_docx_python_docx_cannot_open_degrades_to_xml_with_a_warning() -> None:
    src = zipfile.ZipFile(io.BytesIO(make_docx()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for item in src.infolist():
            if item.filename != "[Content_Types].xml":  # python-docx needs it; the XML is fine
                z.writestr(item, src.read(item.filename))
    doc = parse_bytes(out.getvalue(), "odd.docx")
    assert "Revenue grew strongly." in doc.text
    assert doc.meta.parser == "docx:xml-fallback"
    assert "raw XML" in doc.meta.warnings[0]


def test_html_drops_noise_and_keeps_structure_in_reading_order() -> None:
    html = b"""<html><head><title>T</title><style>.x{}</style></head><body>
    <nav>Home | About</nav><script>var secret = 1;</script>
    <h1>Main title</h1><p>Intro with a <a href="#">link text</a>.</p>
    <ul><li>alpha</li><li>beta</li></ul>
    <table><tr><th>k</th><th>v</th></tr><tr><td>a</td><td>1</td></tr></table>
    <footer>copyright</footer></body></html>"""
    doc = parse_bytes(html, "page.html")
    text = doc.text
    assert "# Main title" in text
    assert "Intro with a link text." in text
    assert "- alpha\n- beta" in text
    assert "k | v\na | 1" in text
    for noise in ("secret", "Home | About", "copyright", ".x{}"):
        assert noise not in text
    assert text.index("Main title") < text.index("alpha") < text.index("a | 1")


def test_html_with_a_lying_charset_declaration_is_decoded_from_the_bytes() -> None:
    body = "<p>Ünïcödé café — naïve</p>"
    html = f'<html><head><meta charset="gb2312"></head><body>{body}</body></html>'
    doc = parse_bytes(html.encode("utf-8"), "lies.html")
    assert "Ünïcödé café — naïve" in doc.text


def test_html_declared_charset_is_used_when_it_fits() -> None:
    html = '<html><head><meta charset="windows-1251"></head><body><p>Привет мир</p></body></html>'
    doc = parse_bytes(html.encode("windows-1251"), "ru.html")
    assert "Привет мир" in doc.text
    assert doc.meta.encoding == "windows-1251"  # the WHATWG name
    assert doc.meta.encoding_source == "declared"


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        (codecs.BOM_UTF8 + "héllo wörld".encode(), "utf-8"),
        ("héllo wörld".encode("utf-16"), "utf-16le"),
        ("héllo wörld".encode("utf-32"), "utf-32le"),
        ("héllo wörld".encode(), "utf-8"),
    ],
)
def test_text_encodings_are_detected(data: bytes, encoding: str) -> None:
    doc = parse_bytes(data, "notes.txt")
    assert doc.text == "héllo wörld\n"
    assert doc.meta.encoding == encoding


def test_shift_jis_text_is_detected() -> None:
    text = "東京都の天気は晴れです。明日も晴れるでしょう。" * 5
    doc = parse_bytes(text.encode("shift_jis"), "jp.txt")
    assert "東京都の天気は晴れです" in doc.text


def test_csv_dialect_is_sniffed_and_rows_stay_legible() -> None:
    doc = parse_bytes(b'name;city\nAda;London\n"Smith; J";Paris\n', "people.csv")
    assert doc.text == "name | city\nAda | London\nSmith; J | Paris\n"
    assert doc.meta.format == "csv"


def test_json_is_pretty_printed() -> None:
    doc = parse_bytes(b'{"a":[1,2],"b":"\xc3\xa9"}', "d.json")
    assert json.loads(doc.text) == {"a": [1, 2], "b": "é"}
    assert '\n  "a": [' in doc.text


def test_source_code_and_markdown_are_text() -> None:
    assert parse_bytes(b"def f():\n    return 1\n", "m.py").meta.format == "code"
    assert parse_bytes(b"# Title\n\ntext", "r.md").meta.format == "markdown"


def test_unknown_extension_with_text_is_read_as_text() -> None:
    assert parse_bytes(b"plain words here", "NOTES.weird").text == "plain words here\n"


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "logo.png", "an image"),
        (b"\x00\x01\x02\x03binary\x00stuff", "blob.dat", "binary file"),
        (b"", "empty.txt", "empty"),
    ],
)
def test_binaries_and_empty_files_are_refused_clearly(data: bytes, name: str, message: str) -> None:
    with pytest.raises(ParseError, match=message) as err:
        parse_bytes(data, name)
    assert name in str(err.value)
