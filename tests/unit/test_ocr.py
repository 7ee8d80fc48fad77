"""Scanned pages and images read by Tesseract: pictures of text made here with Pillow
(and a real scan from ../shared in tests/shared), read in parallel, cached by content,
recorded in the document and the trace, and never silently skipped."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont
from typer.testing import CliRunner

from shesha import Shesha
from shesha.cli import app
from shesha.errors import ParseError
from shesha.llm.types import Message
from shesha.parser import parse_bytes
from shesha.parser.ocr import OcrSettings, read_pages
from shesha.rlm import read_trace
from shesha.sandbox import SandboxPool
from shesha.storage import AddProgress
from shesha.testing import FunctionModel

pytestmark = [pytest.mark.ocr, pytest.mark.usefixtures("tesseract_ready")]

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"  # make ocr installs it
INVOICE = ["INVOICE 4471", "Customer: Maria Lopez", "Total due: 12,345.67 EUR"]


def picture(lines: list[str]) -> Image.Image:
    """A page of text as a scanner would give it: pixels only, at 200 dpi."""
    page = Image.new("L", (1700, 1100), 255)
    draw = ImageDraw.Draw(page)
    font = ImageFont.truetype(FONT, 44)
    for i, line in enumerate(lines):
        draw.text((150, 150 + i * 90), line, fill=0, font=font)
    return page


def saved(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def scanned_pdf(*pages: list[str]) -> bytes:
    first, *rest = [picture(p) for p in pages]
    return saved(first, "PDF", resolution=200.0, save_all=True, append_images=rest)


def test_a_scanned_pdf_is_read_by_ocr_and_says_so() -> None:
    doc = parse_bytes(scanned_pdf(INVOICE, ["Page two: signed by Ana Ruiz"]), "scan.pdf",
                      ocr=OcrSettings())  # fmt: skip
    assert "--- Page 1 ---\nINVOICE 4471" in doc.text
    assert "Maria Lopez" in doc.text
    assert "12,345.67" in doc.text
    assert "Ana Ruiz" in doc.text
    assert doc.meta.ocr_pages == [1, 2]
    assert doc.meta.parser == "pdf:pypdfium2+tesseract"
    assert doc.meta.warnings[0].startswith("pages 1-2 read by OCR")


def test_pages_with_a_text_layer_are_not_ocred() -> None:
    doc = parse_bytes(scanned_pdf(INVOICE), "scan.pdf", ocr=OcrSettings(enabled=False))
    assert doc.text.strip() == "--- Page 1 ---"
    assert doc.meta.ocr_pages == []
    assert "OCR is off" in doc.meta.warnings[0]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "WEBP"])
def test_an_image_is_read_by_ocr(fmt: str) -> None:
    doc = parse_bytes(saved(picture(INVOICE), fmt), f"invoice.{fmt.lower()}", ocr=OcrSettings())
    assert doc.meta.format == "image"
    assert "Maria Lopez" in doc.text
    assert doc.meta.ocr_pages == [1]


def test_each_frame_of_a_tiff_is_a_page() -> None:
    pages = [picture(INVOICE), picture(["Second frame: Lisbon office"])]
    data = saved(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    doc = parse_bytes(data, "fax.tiff", ocr=OcrSettings())
    assert doc.meta.pages == 2
    assert doc.text.index("--- Page 1 ---") < doc.text.index("Maria Lopez")
    assert doc.text.index("--- Page 2 ---") < doc.text.index("Lisbon office")


def test_another_language_is_read_with_its_data() -> None:
    lines = ["Größe der Straße: 12 Meter", "Grüße an Jürgen Müller"]
    doc = parse_bytes(saved(picture(lines), "PNG"), "brief.png", ocr=OcrSettings(languages="deu"))
    assert "Straße" in doc.text
    assert "Müller" in doc.text


def test_missing_language_data_is_a_warning_that_says_how_to_get_it() -> None:
    doc = parse_bytes(scanned_pdf(INVOICE), "scan.pdf", ocr=OcrSettings(languages="xyz"))
    assert doc.meta.ocr_pages == []
    said = doc.meta.warnings[0]
    assert "OCR could not run" in said
    assert "apt install tesseract-ocr-xyz" in said


def test_a_damaged_image_is_a_clear_error_naming_the_file() -> None:
    data = saved(picture(INVOICE), "PNG")
    with pytest.raises(ParseError, match=r"^broken\.png: the image is damaged"):
        parse_bytes(data[: len(data) // 3], "broken.png", ocr=OcrSettings())


def test_a_page_is_read_once_and_then_comes_from_the_cache(tmp_path: Path) -> None:
    settings = OcrSettings(cache_dir=tmp_path / "ocr")
    data = scanned_pdf(INVOICE)
    assert "Maria Lopez" in parse_bytes(data, "a.pdf", ocr=settings).text
    (entry,) = (tmp_path / "ocr").rglob("*.txt")
    entry.write_text("what the cache holds")  # the next read must come from here
    again = parse_bytes(data, "copy-of-a.pdf", ocr=settings)
    assert "what the cache holds" in again.text


def test_adding_shows_ocr_progress_and_the_trace_names_the_pages(
    sandboxes: SandboxPool, tmp_path: Path
) -> None:
    (tmp_path / "scan.pdf").write_bytes(scanned_pdf(INVOICE, ["Page two"], ["Page three"]))

    def model(messages: list[Message], name: str) -> str:
        return "FINAL(read)"

    steps: list[AddProgress] = []
    with Shesha(home=str(tmp_path / "home"), llm=FunctionModel(model), sandboxes=sandboxes) as sh:
        p = sh.project("scans")
        p.add([tmp_path / "scan.pdf"], on_progress=steps.append)
        result = p.query("What is it?")
    ocr = [(s.pages_done, s.pages_total) for s in steps if s.status == "ocr"]
    assert sorted(ocr) == [(1, 3), (2, 3), (3, 3)]
    assert result.trace_path is not None
    header = read_trace(result.trace_path).header
    assert header is not None
    assert header.ocr_pages == {"scan.pdf": [1, 2, 3]}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "scan.pdf").write_bytes(scanned_pdf(INVOICE))
    (docs / "photo.png").write_bytes(saved(picture(["Room 204, third floor"]), "PNG"))
    return docs


def test_the_cli_reads_scans_and_no_ocr_turns_it_off(folder: Path, tmp_path: Path) -> None:
    env = {"SHESHA_HOME": str(tmp_path / "home"), "SHESHA_SERVER": "off"}
    r = CliRunner().invoke(app, ["add", "read", str(folder), "--json"], env=env)
    assert r.exit_code == 0, r.stderr
    stored = {d["name"]: d for d in json.loads(r.stdout)["stored"]}
    assert stored["photo.png"]["format"] == "image"
    shown = CliRunner().invoke(app, ["docs", "read", "--show", "scan.pdf"], env=env)
    assert "Maria Lopez" in shown.stdout
    r = CliRunner().invoke(app, ["add", "unread", str(folder), "--json", "--no-ocr"], env=env)
    stored = {d["name"]: d for d in json.loads(r.stdout)["stored"]}
    assert "OCR is off" in stored["scan.pdf"]["warnings"][0]
    assert "OCR is off" in stored["photo.png"]["warnings"][0]


def test_a_page_tesseract_cannot_read_is_not_cached(tmp_path: Path) -> None:
    settings = OcrSettings(cache_dir=tmp_path / "ocr")
    assert read_pages([b"this is not an image"], settings) == [""]
    assert not list((tmp_path / "ocr").rglob("*.txt"))  # tried again next time


def test_a_huge_scanned_page_is_rendered_within_a_pixel_budget() -> None:
    poster = saved(picture(INVOICE).resize((200, 130)), "PDF", resolution=1.0)  # 14,400 pt wide
    doc = parse_bytes(poster, "poster.pdf", ocr=OcrSettings())
    assert doc.meta.pages == 1  # drawn at less than 300 dpi, not 3.6 billion pixels
