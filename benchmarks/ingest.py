"""Ingest benchmark on the 19 FinanceBench filings in ../shared/qa/financebench/pdfs/,
and OCR on a real scanned report from ../shared/corpus (Tesseract: `make ocr`).

    python benchmarks/ingest.py          # a readable table
    python benchmarks/ingest.py --json   # one JSON object

evidence_recall: the fraction of evidence passages whose words are at least 99% present
in shesha's text for the cited (zero-indexed) page. Words are lower-cased runs of letters
and digits after apostrophes are dropped; a word also counts as present when it appears in
the page's letters and digits run together, so that hyphenation and footnote marks glued
on by either extractor (e.g. "deductions--net" vs "deductionsnet") do not count as misses.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pdfplumber
from report import emit

from shesha.parser.ocr import OcrSettings, ocr_problem
from shesha.storage import ProjectStore

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "qa" / "financebench"
SCAN = (
    SHARED.parents[1]
    / "corpus"
    / "pdf"
    / "markitdown__MEDRPT-2024-PAT-3847_medical_report_scan.pdf"
)
TARGETS = {
    "speedup_vs_pdfplumber": (">=", 20.0),
    "evidence_recall": (">=", 0.995),
    "readd_unchanged_s": ("<=", 0.5),
}
PAGE_MARK = re.compile(r"^--- Page (\d+) ---$", re.M)


def words(text: str) -> list[str]:
    return re.findall(r"\w+", re.sub("['\u2018\u2019]", "", text.lower()))


def split_pages(text: str) -> dict[int, str]:
    parts = PAGE_MARK.split(text)
    return {int(parts[i]): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def evidence_recall(project_texts: dict[str, dict[int, str]]) -> tuple[float, int, int]:
    ok = total = 0
    with open(SHARED / "questions_subset.jsonl", encoding="utf-8") as f:
        for line in f:
            for ev in json.loads(line)["evidence"]:
                total += 1
                page = project_texts[ev["doc_name"]].get(ev["evidence_page_num"] + 1, "")
                ours = words(page)
                have, joined = set(ours), "".join(ours)
                wanted = words(ev["evidence_text"])
                found = sum(1 for w in wanted if w in have or w in joined)
                if found >= 0.99 * max(len(wanted), 1):
                    ok += 1
    return ok / total, ok, total


def pdfplumber_rate(pdfs: list[Path], max_pages: int) -> float:
    """Plain pdfplumber extract_text(), page by page, on a sample of pages."""
    pages = 0
    started = time.perf_counter()
    for pdf_path in pdfs:
        with pdfplumber.open(pdf_path) as pdf:
            for page in pdf.pages[: max(1, max_pages // len(pdfs))]:
                page.extract_text()
                pages += 1
    return pages / (time.perf_counter() - started)


def bench(plumber_pages: int) -> dict[str, Any]:
    pdfs = sorted((SHARED / "pdfs").glob("*.pdf"))
    with tempfile.TemporaryDirectory() as home:
        project = ProjectStore(home).create("financebench")
        started = time.perf_counter()
        report = project.add([SHARED / "pdfs"])
        ingest_s = time.perf_counter() - started
        assert not report.failed, report.failed
        pages = sum(d.meta.pages or 0 for d in report.stored)
        started = time.perf_counter()
        again = project.add([SHARED / "pdfs"])
        readd_s = time.perf_counter() - started
        assert {d.status for d in again.stored} == {"unchanged"}
        texts = {Path(name).stem: split_pages(text) for name, text in project.documents()}
    recall, ok, total = evidence_recall(texts)
    plumber = pdfplumber_rate(pdfs, plumber_pages)
    ours = pages / ingest_s
    return {
        "files": len(pdfs),
        "pages": pages,
        "ingest_s": round(ingest_s, 3),
        "pages_per_s": round(ours, 1),
        "pdfplumber_pages_per_s": round(plumber, 2),
        "pdfplumber_sample_pages": plumber_pages,
        "speedup_vs_pdfplumber": round(ours / plumber, 1),
        "evidence_recall": round(recall, 4),
        "evidence_found": ok,
        "evidence_total": total,
        "readd_unchanged_s": round(readd_s, 4),
    }


def ocr_rate() -> dict[str, Any]:
    """Pages per second read by OCR (both cores), then the same file again (cached)."""
    problem = ocr_problem("eng")
    if problem is not None:
        return {"ocr": problem}
    with tempfile.TemporaryDirectory() as home:
        project = ProjectStore(home).create("scans")
        started = time.perf_counter()
        report = project.add([SCAN], ocr=OcrSettings())
        first = time.perf_counter() - started
        pages = sum(len(d.meta.ocr_pages) for d in report.stored)
        copy = Path(home) / "again.pdf"
        copy.write_bytes(SCAN.read_bytes() + b"\n")  # a new file, the same pages
        started = time.perf_counter()
        project.add([copy], ocr=OcrSettings())
        cached = time.perf_counter() - started
    return {
        "ocr_pages": pages,
        "ocr_pages_per_s": round(pages / first, 2),
        "ocr_same_pages_again_s": round(cached, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="shesha ingest benchmark (FinanceBench PDFs)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--pdfplumber-pages",
        type=int,
        default=95,
        help="pages for the pdfplumber baseline (it is slow; spread over all files)",
    )
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"{SHARED} is missing: this benchmark needs ../shared", file=sys.stderr)
        return 2
    results = bench(args.pdfplumber_pages) | ocr_rate()
    emit(results, TARGETS, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
