"""Every real document in ../shared/corpus ends as stored text or a clear, specific error."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from shesha.errors import ParseError
from shesha.parser import parse_file
from shesha.parser.ocr import OcrSettings
from shesha.storage import ProjectStore

pytestmark = pytest.mark.shared

# Files that must be refused, and the words their error must contain.
EXPECTED_ERRORS = {
    "docx/derived__markitdown-test-TRUNCATED-50pct.docx": "damaged or truncated",
    "pdf/ocrmypdf__invalid.pdf": "the PDF is damaged or malformed and no page can be recovered",
    "txt/unstructured__empty.txt": "empty",
}


def manifest(shared: Path) -> list[dict[str, str]]:
    with open(shared / "corpus" / "MANIFEST.tsv", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def password_of(row: dict[str, str]) -> str | None:
    notes = row["notes"]
    return notes.split("password=")[1].split()[0] if "password=" in notes else None


def test_every_corpus_file_is_stored_or_clearly_refused(shared_dir: Path) -> None:
    rows = manifest(shared_dir)
    assert len(rows) == 68
    for row in rows:
        path = shared_dir / "corpus" / row["path"]
        if row["path"] in EXPECTED_ERRORS:
            with pytest.raises(ParseError) as err:
                parse_file(path)
            assert EXPECTED_ERRORS[row["path"]] in str(err.value), row["path"]
            assert path.name in str(err.value)
            continue
        doc = parse_file(path, password=password_of(row))
        assert len(doc.meta.sha256) == 64
        assert doc.meta.source_bytes == int(row["bytes"]), row["path"]
        if "SCANNED image-only" in row["notes"] or "IMAGE-ONLY" in row["notes"]:
            assert doc.meta.warnings, f"{row['path']}: a scan must carry a warning"
        # Never a silent empty document: text, or a warning that says why there is none.
        has_words = len("".join(doc.text.split("--- Page")).split()) > 2
        assert has_words or doc.meta.warnings, row["path"]


def test_encrypted_pdfs_need_their_password(shared_dir: Path) -> None:
    for name, password in [
        ("pdfplumber__password-example.pdf", "test"),
        ("pypdf-samples__libreoffice-writer-password.pdf", "openpassword"),
    ]:
        path = shared_dir / "corpus" / "pdf" / name
        with pytest.raises(ParseError, match="encrypted") as err:
            parse_file(path)
        assert "--password" in str(err.value)
        with pytest.raises(ParseError, match="password given is wrong"):
            parse_file(path, password="nope")
        assert len(parse_file(path, password=password).text) > 100


def test_known_hard_cases(shared_dir: Path) -> None:
    corpus = shared_dir / "corpus"
    footnotes = parse_file(corpus / "docx" / "mammoth__footnotes.docx").text
    assert "A tachyon walks into a bar." in footnotes
    utf16 = parse_file(corpus / "html" / "unstructured__example-steelJIS-datasheet-utf-16.html")
    assert utf16.meta.encoding == "utf-16le"
    assert utf16.meta.encoding_source == "bom"
    assert len(utf16.text) > 500
    sjis = parse_file(corpus / "csv" / "markitdown__test_mskanji.csv").text
    assert "名前" in sjis or "価格" in sjis or "東京" in sjis, sjis
    semicolon = parse_file(corpus / "csv" / "unstructured__semicolon-delimited.csv").text
    assert " | " in semicolon
    serp = parse_file(corpus / "html" / "markitdown__test_serp.html").text
    assert "function(" not in serp  # scripts dropped


def test_the_whole_corpus_adds_in_one_batch(shared_dir: Path, tmp_path: Path) -> None:
    project = ProjectStore(tmp_path).create("corpus")
    report = project.add([shared_dir / "corpus"], workers=2)
    failed = {Path(f.path).name for f in report.failed}
    assert failed == {
        "derived__markitdown-test-TRUNCATED-50pct.docx",
        "ocrmypdf__invalid.pdf",
        "unstructured__empty.txt",
        "pdfplumber__password-example.pdf",
        "pypdf-samples__libreoffice-writer-password.pdf",
    }
    assert len(report.stored) == 69 - len(failed)  # 68 documents and MANIFEST.tsv


@pytest.mark.ocr
@pytest.mark.usefixtures("tesseract_ready")
def test_a_real_scanned_report_is_read_by_ocr(shared_dir: Path) -> None:
    scan = (
        shared_dir / "corpus" / "pdf" / "markitdown__MEDRPT-2024-PAT-3847_medical_report_scan.pdf"
    )
    doc = parse_file(scan, ocr=OcrSettings())
    assert doc.meta.ocr_pages == [1, 2, 3]
    assert "SEATTLE GENERAL HOSPITAL" in doc.text
    assert "MEDRPT-2024-PAT-3847" in doc.text
    without = parse_file(scan)
    assert "OCR is off" in without.meta.warnings[0]
