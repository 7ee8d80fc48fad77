"""Retrieval benchmark, at zero model cost: does FinanceBench's evidence page land in the
window that the retrieve strategy fills? On the 19 filings in ../shared/qa/financebench.

    python benchmarks/retrieval.py          # a readable table
    python benchmarks/retrieval.py --json   # one JSON object
    python benchmarks/retrieval.py --quick  # 4 filings: what CI runs

Each filing is a project of its own, as a user would add it. For each of the questions
about it, the window is filled as the engine fills it for the local model's 8K-token
window (``local_profile``), and it counts as found when a passage from an evidence page
(FinanceBench's zero-indexed page + 1) is in it; ``evidence_in_first_read`` is the same
for the shorter first read (``first_passages_chars``) that NOT FOUND widens to the
window. ``truncation_in_window`` is the same share for the direct baseline, which reads
the filing's first window of text.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from report import emit

from shesha.endpoints import local_profile
from shesha.retrieval.index import PassageIndex
from shesha.retrieval.passages import split
from shesha.retrieval.window import fill
from shesha.rlm.strategy import passages_rounds
from shesha.storage import ProjectStore

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "qa" / "financebench"
WINDOW_CHARS = int(local_profile(8192)["show_whole_chars"])
FIRST_READ_CHARS = int(local_profile(8192)["first_passages_chars"])
TARGETS = {
    "evidence_in_window": (">=", 0.6),
    "index_s_per_mb": ("<=", 1.0),
    "query_ms_p50": ("<=", 50.0),
}
QUICK_FILINGS = 4


def pages_in_window(text: str) -> set[int]:
    """The pages the truncated first window of ``text`` covers."""
    return {p.page for p in split("d", text[:WINDOW_CHARS]) if p.page is not None}


def bench(quick: bool) -> dict[str, Any]:
    questions = [
        json.loads(line)
        for line in (SHARED / "questions_subset.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    filings = sorted({q["doc_name"] for q in questions})
    if quick:
        filings = filings[:QUICK_FILINGS]
    texts: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as home:
        store = ProjectStore(home)
        for name in filings:
            store.create(name).add([SHARED / "pdfs" / f"{name}.pdf"])
            ((_, text),) = store.get(name).documents()
            texts[name] = text
    mb = sum(len(t.encode()) for t in texts.values()) / 1e6
    started = time.perf_counter()
    indexes = {name: PassageIndex.in_memory([(name, text)]) for name, text in texts.items()}
    index_s = time.perf_counter() - started
    found = found_all = found_first = truncated = total = 0
    query_ms: list[float] = []
    for q in questions:
        if q["doc_name"] not in indexes:
            continue
        total += 1
        wanted = {e["evidence_page_num"] + 1 for e in q["evidence"]}
        first_chars, budget = passages_rounds(WINDOW_CHARS, q["question"], FIRST_READ_CHARS)
        started = time.perf_counter()
        window = fill(indexes[q["doc_name"]], q["question"], budget, [q["doc_name"]])
        query_ms.append((time.perf_counter() - started) * 1000)
        pages = {h.passage.page for h in window.hits}
        first = fill(indexes[q["doc_name"]], q["question"], first_chars, [q["doc_name"]])
        found_first += bool(wanted & {h.passage.page for h in first.hits})
        found += bool(wanted & pages)
        found_all += wanted <= pages
        truncated += bool(wanted & pages_in_window(texts[q["doc_name"]]))
    for index in indexes.values():
        index.close()
    return {
        "filings": len(filings),
        "questions": total,
        "window_chars": WINDOW_CHARS,
        "evidence_in_window": round(found / total, 3),
        "all_evidence_in_window": round(found_all / total, 3),
        "evidence_in_first_read": round(found_first / total, 3),
        "truncation_in_window": round(truncated / total, 3),
        "text_mb": round(mb, 2),
        "index_s_per_mb": round(index_s / mb, 3),
        "query_ms_p50": round(statistics.median(query_ms), 2),
        "query_ms_max": round(max(query_ms), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_FILINGS} filings only")
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"{SHARED} is missing: this benchmark needs ../shared", file=sys.stderr)
        return 2
    emit(bench(args.quick), TARGETS, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
