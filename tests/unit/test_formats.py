"""More formats people have: XLSX, PPTX, EPUB, Jupyter notebooks and e-mail, each from
a real sample the test makes with the format's own tools, and each with a damaged
sample that must give a clear error naming the file."""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile
from email.message import EmailMessage

import pytest
from openpyxl import Workbook
from pptx import Presentation
from pptx.util import Inches
from tests.fixtures import make_docx, make_pdf

from shesha.errors import ParseError
from shesha.parser import parse_bytes


def xlsx() -> bytes:
    book = Workbook()
    sales = book.active
    assert sales is not None
    sales.title = "Sales"
    sales.append(["Region", "Q1", "Q2", "Total"])
    sales.append(["North", 1200, 1350.5, "=B2+C2"])
    sales.append(["South", 900, 1100, None])
    notes = book.create_sheet("Notes")
    notes.append(["Signed", dt.date(2024, 3, 7)])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def pptx() -> bytes:
    deck = Presentation()
    first = deck.slides.add_slide(deck.slide_layouts[1])
    first.shapes.title.text = "Quarterly review"
    first.placeholders[1].text = "Revenue grew 12%"
    first.notes_slide.notes_text_frame.text = "Mention the Lisbon office."
    second = deck.slides.add_slide(deck.slide_layouts[5])
    second.shapes.title.text = "Headcount"
    table = second.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(4), Inches(1)).table
    for r, row in enumerate([["Team", "People"], ["Billing", "7"]]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def epub() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        z.writestr(
            "META-INF/container.xml",
            '<?xml version="1.0"?><container version="1.0" '
            'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
            '<rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
            "</rootfiles></container>",
        )
        z.writestr(
            "OEBPS/content.opf",
            '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
            '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>The Harbour</dc:title>'
            "<dc:creator>A. Writer</dc:creator></metadata><manifest>"
            '<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>'
            '<item id="c2" href="text/two.xhtml" media-type="application/xhtml+xml"/>'
            '<item id="c1" href="text/one.xhtml" media-type="application/xhtml+xml"/>'
            '</manifest><spine><itemref idref="c1"/><itemref idref="c2"/></spine></package>',
        )
        z.writestr("OEBPS/nav.xhtml", "<html><body><nav>Contents</nav></body></html>")
        z.writestr(
            "OEBPS/text/one.xhtml",
            "<html><body><h1>Arrival</h1><p>The ship came in at dawn.</p></body></html>",
        )
        z.writestr(
            "OEBPS/text/two.xhtml",
            "<html><body><h1>Departure</h1><p>She left at noon.</p></body></html>",
        )
    return out.getvalue()


def notebook() -> bytes:
    cells = [
        {"cell_type": "markdown", "source": ["# Churn study\n", "Monthly churn by plan."]},
        {"cell_type": "code", "source": "rate = 0.042\nprint(rate)", "outputs": [
            {"output_type": "stream", "name": "stdout", "text": ["0.042\n"]}]},
        {"cell_type": "code", "source": "1/0", "outputs": [
            {"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero",
             "traceback": []}]},
    ]  # fmt: skip
    nb = {"cells": cells, "metadata": {"kernelspec": {"language": "python"}}, "nbformat": 4}
    return json.dumps(nb).encode()


def email_message() -> bytes:
    inner = EmailMessage()
    inner["From"] = "ana@example.invalid"
    inner["Subject"] = "Earlier thread"
    inner.set_content("The deposit was paid on 3 March.")
    msg = EmailMessage()
    msg["From"] = "Maria Lopez <maria@example.invalid>"
    msg["To"] = "team@example.invalid"
    msg["Date"] = "Thu, 07 Mar 2024 10:00:00 +0000"
    msg["Subject"] = "Signed lease"
    msg.set_content("Attached: the signed lease and the budget.")
    msg.add_attachment(make_pdf(["Lease term: 24 months."]), maintype="application",
                       subtype="pdf", filename="lease.pdf")  # fmt: skip
    msg.add_attachment(xlsx(), maintype="application", subtype="octet-stream",
                       filename="budget.xlsx")  # fmt: skip
    msg.add_attachment(b"%PDF-1.4 broken", maintype="application", subtype="pdf",
                       filename="broken.pdf")  # fmt: skip
    msg.add_attachment(inner)
    return msg.as_bytes()


def test_a_workbook_is_each_sheet_as_a_table() -> None:
    doc = parse_bytes(xlsx(), "sales.xlsx")
    assert doc.meta.format == "xlsx"
    assert doc.meta.pages == 2
    assert "--- Sheet: Sales ---\nRegion | Q1 | Q2 | Total\nNorth | 1200 | 1350.5" in doc.text
    assert "South | 900 | 1100\n" in doc.text
    assert "--- Sheet: Notes ---\nSigned | 2024-03-07" in doc.text


def test_a_deck_is_its_slides_in_order_with_notes_and_tables() -> None:
    doc = parse_bytes(pptx(), "review.pptx")
    assert doc.meta.format == "pptx"
    assert doc.meta.pages == 2
    first, second = doc.text.split("--- Slide 2 ---")
    assert "Quarterly review\nRevenue grew 12%\nNotes: Mention the Lisbon office." in first
    assert "Headcount" in second
    assert "Billing | 7" in second


def test_an_ebook_is_its_chapters_in_spine_order() -> None:
    doc = parse_bytes(epub(), "harbour.epub")
    assert doc.meta.format == "epub"
    assert doc.text.startswith("Title: The Harbour\nAuthor: A. Writer")
    assert doc.text.index("Arrival") < doc.text.index("Departure")
    assert "The ship came in at dawn." in doc.text
    assert "Contents" not in doc.text  # the navigation document is not a chapter


def test_a_notebook_is_its_cells_with_outputs_marked() -> None:
    doc = parse_bytes(notebook(), "churn.ipynb")
    assert doc.meta.format == "notebook"
    assert "[cell 1: markdown]\n# Churn study" in doc.text
    assert "```python\nrate = 0.042\nprint(rate)\n```\n[output]\n0.042" in doc.text
    assert "[output]\nZeroDivisionError: division by zero" in doc.text


def test_a_message_has_its_headers_body_and_attachments_parsed_recursively() -> None:
    doc = parse_bytes(email_message(), "lease.eml")
    assert doc.meta.format == "email"
    assert doc.text.startswith("From: Maria Lopez <maria@example.invalid>\nTo: team@")
    assert "Subject: Signed lease" in doc.text
    assert "Attached: the signed lease" in doc.text
    assert "--- Attachment: lease.pdf ---\n--- Page 1 ---\nLease term: 24 months." in doc.text
    assert "--- Attachment: budget.xlsx ---\n--- Sheet: Sales ---" in doc.text
    assert "The deposit was paid on 3 March." in doc.text  # the attached message
    assert any(w.startswith("attachment broken.pdf could not be read") for w in doc.meta.warnings)


def test_docx_attachments_and_a_docx_still_parse() -> None:
    assert parse_bytes(make_docx(), "r.docx").meta.format == "docx"


DAMAGED = [
    ("sales.xlsx", lambda: xlsx()[:300], "the workbook is damaged"),
    ("review.pptx", lambda: pptx()[:300], "the presentation is damaged"),
    ("harbour.epub", lambda: epub()[:200], "the EPUB is damaged"),
    ("churn.ipynb", lambda: notebook()[:40], "not a readable Jupyter notebook"),
    ("lease.eml", lambda: b"just some words, no headers at all\n", "not an e-mail message"),
]


@pytest.mark.parametrize(("name", "make", "said"), DAMAGED)
def test_a_damaged_file_is_a_clear_error_naming_it(name: str, make: object, said: str) -> None:
    assert callable(make)
    with pytest.raises(ParseError) as err:
        parse_bytes(make(), name)
    assert str(err.value).startswith(f"{name}: {said}")
    assert err.value.hint


def test_messages_attached_too_deep_become_a_warning_not_a_crash() -> None:
    data = EmailMessage()
    data["Subject"] = "innermost"
    data.set_content("bottom")
    raw = data.as_bytes()
    for level in range(12):  # attached as bytes, so each is parsed again as a document
        outer = EmailMessage()
        outer["Subject"] = f"level {level}"
        outer.set_content("see attached")
        outer.add_attachment(raw, maintype="application", subtype="octet-stream",
                             filename=f"m{level}.eml")  # fmt: skip
        raw = outer.as_bytes()
    doc = parse_bytes(raw, "nested.eml")
    assert doc.text.startswith("Subject: level 11")
    assert any("more than 5 deep" in w for w in doc.meta.warnings)


@pytest.mark.parametrize("header", [b"From: a@[\n", b'To: "a" <@>,,,<\n'])
def test_a_header_the_mail_parser_trips_on_is_a_clear_error(header: bytes) -> None:
    with pytest.raises(ParseError, match=r"^odd\.eml: the message is malformed"):
        parse_bytes(header + b"Subject: x\n\nbody\n", "odd.eml")


def test_an_ebook_member_that_inflates_too_far_is_refused() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("META-INF/container.xml", b" " * (17 << 20))  # 17 MB of spaces, 17 KB zipped
    with pytest.raises(ParseError, match=r"container\.xml is too large to read"):
        parse_bytes(out.getvalue(), "bomb.epub")
