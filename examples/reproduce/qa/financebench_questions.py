"""Turn FinanceBench's open-source questions (in ../shared) into a shesha QA file.

FinanceBench's gold answers are free text. This keeps the questions whose gold is short
(a number, a yes/no, or a few words), so that the documented short-answer scoring applies:
numbers within 1%, yes/no by the first word, short phrases as whole words. The documents
are public SEC filings that we may use for research but must not ship, so this script reads
them where they are and writes only questions, with paths relative to ../shared.

python examples/reproduce/qa/financebench_questions.py \
    ../shared/qa/financebench/questions_subset.jsonl > fb.jsonl
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

MAX_GOLD_CHARS = 40
NUMBER = re.compile(r"^[-$]?\d[\d,]*(?:\.\d+)?%?$")


def kind(answer: str) -> str:
    if NUMBER.match(answer.strip()):
        return "number"
    if answer.split(",", maxsplit=1)[0].split(maxsplit=1)[0].lower() in ("yes", "no"):
        return "yesno"
    return "phrase"


def main(source: Path) -> None:
    for line in source.read_text(encoding="utf-8").splitlines():
        q = json.loads(line)
        answer = q["answer"].strip()
        if len(answer) > MAX_GOLD_CHARS:
            continue
        row = {
            "id": q["financebench_id"],
            "question": q["question"],
            "documents": [f"qa/financebench/pdfs/{q['doc_name']}.pdf"],
            "gold": answer,
            "type": kind(answer),
            "split": "holdout",
            "evidence_pages": [e["evidence_page_num"] + 1 for e in q["evidence"]],
        }
        print(json.dumps(row, ensure_ascii=False))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
