"""Long Wikipedia pages with short answers (L-Eval's Natural Questions), RLM vs direct.

python examples/reproduce/leval_nq.py --split holdout --per-doc 2 --out runs/leval-holdout

The pages are in ../shared/qa/leval-dev/natural_question.jsonl: 21 pages of 23K-140K
characters, each with several questions. Pages 0-9 are the **dev** split (develop on
them); pages 10-20 are the **holdout** (report on them, never read them). This script
writes each page as a text file and the questions as a QA file under --out, then runs
qa_real_documents.py's study on them; the pages never enter the repository.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import qa_real_documents

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[2] / "shared" / "qa" / "leval-dev" / "natural_question.jsonl"
DEV_PAGES = range(0, 10)


def write_questions(source: Path, out: Path, per_doc: int | None) -> Path:
    """docs/page-NN.txt and questions.jsonl under ``out``; returns the questions file."""
    if not source.is_file():
        sys.exit(f"{source}: the L-Eval pages are not here (give --source FILE)")
    docs = out / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    lines = []
    for n, line in enumerate(source.read_text(encoding="utf-8").splitlines()):
        page = json.loads(line)
        name = f"page-{n:02d}.txt"
        (docs / name).write_text(page["input"], encoding="utf-8")
        pairs = list(zip(page["instructions"], page["outputs"], strict=True))
        for i, (question, gold) in enumerate(pairs[:per_doc]):
            row = {
                "id": f"nq-{n:02d}-{i}",
                "question": question,
                "documents": [f"docs/{name}"],
                "gold": gold,
                "split": "dev" if n in DEV_PAGES else "holdout",
            }
            lines.append(json.dumps(row, ensure_ascii=False))
    path = out / "leval_questions.jsonl"
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--source", type=Path, default=SOURCE)
    p.add_argument("--per-doc", type=int, help="the first N questions of each page (default all)")
    known, rest = p.parse_known_args()
    out = Path(rest[rest.index("--out") + 1]) if "--out" in rest else None
    if out is None:
        sys.exit("--out DIR is required")
    questions = write_questions(known.source, out, known.per_doc)
    command = shlex.join(["python", *sys.argv])
    sys.argv = [sys.argv[0], *rest, "--questions", str(questions)]
    args = qa_real_documents.arguments()
    if not args.report_only:
        qa_real_documents.run_study(args)
        run = json.loads((out / "run.json").read_text())
        (out / "run.json").write_text(json.dumps({**run, "command": command}, indent=1))
    qa_real_documents.report(args)


if __name__ == "__main__":
    main()
