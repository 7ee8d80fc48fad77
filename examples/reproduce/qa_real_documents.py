"""Short-answer questions about real documents, RLM vs the direct baseline, by question type.

python examples/reproduce/qa_real_documents.py --model local --split holdout --out runs/qa

The questions are ours (examples/reproduce/qa/corpus_questions.jsonl) about documents in
../shared/corpus, plus FinanceBench's open-source questions with short gold answers
(--financebench). The documents are read from ../shared, never copied into the repository.
Develop on --split dev (and test); report on --split holdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import git_commit, machine, model_label, read_rows

from shesha import Shesha, __version__
from shesha.bench.qa import qa_tasks
from shesha.bench.runner import EvalRunner, Method, ResultRow, summarise_by_type
from shesha.bench.tasks import write_task_set

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2] / "shared"
QUESTIONS = HERE / "qa" / "corpus_questions.jsonl"


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="local", help="any LiteLLM model string, or local")
    p.add_argument("--sub-model")
    p.add_argument("--api-base")
    p.add_argument("--api-key", help="default: the provider's environment variable")
    p.add_argument("--split", default="holdout", help="dev, test or holdout")
    p.add_argument("--financebench", action="store_true",
                   help="add FinanceBench questions with short gold answers (holdout)")  # fmt: skip
    p.add_argument("--shared", type=Path, default=SHARED, help="the ../shared folder")
    p.add_argument("--questions", type=Path,
                   help="another questions file (paths relative to it)")  # fmt: skip
    p.add_argument("--methods", default="rlm,direct")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--report-only", action="store_true",
                   help="only rebuild the table from the results in --out")  # fmt: skip
    return p.parse_args()


def questions_file(args: argparse.Namespace) -> Path:
    """Our questions, plus FinanceBench's when asked, in one file under --out; or the
    file given with --questions."""
    if args.questions is not None:
        return Path(args.questions)
    if not args.shared.is_dir():
        sys.exit(f"{args.shared}: the shared documents are not here (give --shared DIR)")
    lines = QUESTIONS.read_text(encoding="utf-8").splitlines()
    if args.financebench:
        made = subprocess.run(
            [sys.executable, str(HERE / "qa" / "financebench_questions.py"),
             str(args.shared / "qa" / "financebench" / "questions_subset.jsonl")],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        lines += made.stdout.splitlines()
    path = args.out / "questions.jsonl"
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines if line.strip()), encoding="utf-8")
    return path


def run_study(args: argparse.Namespace) -> None:
    root = None if args.questions is not None else args.shared
    spec, tasks = qa_tasks(questions_file(args), root=root, split=args.split)
    write_task_set(args.out / "tasks", spec, tasks)
    run: dict[str, object] = {
        "command": shlex.join(["python", *sys.argv]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "shesha_version": __version__,
        "git_commit": git_commit(),
        "split": args.split,
        "tasks": len(tasks),
    }
    timings: dict[str, dict[str, object]] = {}
    with Shesha(
        model=args.model, sub_model=args.sub_model, api_base=args.api_base, api_key=args.api_key
    ) as sh:
        for name in args.methods.split(","):
            method: Method = "direct" if name == "direct" else "rlm"
            runner = EvalRunner(
                sh, args.out / "tasks", args.out / method, method=method,
                on_row=lambda r: print(
                    f"{r.method} {r.task_id}: {r.score:.0f} ({r.status}, {r.iterations} steps, "
                    f"{r.latency_s:.1f} s) {str(r.answer)[:60]!r}",
                    flush=True,
                ),
            )  # fmt: skip
            started = time.perf_counter()
            asyncio.run(runner.run(resume=args.resume))
            timings[method] = {
                "wall_s": round(time.perf_counter() - started, 1),
                "fingerprint": runner.fingerprint,
                "window_tokens": runner.window_tokens if method == "direct" else None,
            }
    run["methods"] = timings
    run["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    (args.out / "run.json").write_text(json.dumps(run, indent=1))
    if "rlm" in timings:
        report(args)


def right(row: ResultRow) -> bool:
    return row.status == "success" and row.score >= 1.0


def report(args: argparse.Namespace) -> None:
    """table.md and table.json from the results in --out."""
    results = {
        m: read_rows(args.out / m / "results.jsonl")
        for m in ("rlm", "direct")
        if (args.out / m / "results.jsonl").is_file()
    }
    if "rlm" not in results:
        sys.exit(f"{args.out}: no RLM results; run the study without --report-only first.")
    rlm = results["rlm"]
    direct = {r.task_id: r for r in results.get("direct", [])}
    fits = {t for t, r in direct.items() if r.truncated == 0}
    lines = [
        f"Model: {model_label(args.model)} · split: {args.split} · {len(rlm)} questions",
        "",
        "| type | questions | RLM right (status success) | direct right, where it fits "
        "| RLM mean steps | RLM p50 s |",
        "|---|---|---|---|---|---|",
    ]
    by_type = summarise_by_type(rlm)
    for g in by_type:
        ids = [r.task_id for r in rlm if (r.group or r.kind) == g["type"]]
        fit = [direct[i] for i in ids if i in fits]
        shown = f"{sum(right(r) for r in fit)}/{len(fit)}" if fit else "n/a (too long)"
        lines.append(
            f"| {g['type']} | {g['tasks']} | {g['right_and_success']}/{g['tasks']} | {shown} "
            f"| {g['mean_iterations']:.1f} | {g['p50_latency_s']:.1f} |"
        )
    total_fit = [direct[r.task_id] for r in rlm if r.task_id in fits]
    lines.append(
        f"| **all** | {len(rlm)} | {sum(right(r) for r in rlm)}/{len(rlm)} "
        f"| {sum(right(r) for r in total_fit)}/{len(total_fit)} | | |"
    )
    lines += [
        "",
        "| question | type | gold | RLM answer | RLM | direct |",
        "|---|---|---|---|---|---|",
    ]
    for r in rlm:
        d = direct.get(r.task_id)
        shown = "n/a" if d is None or r.task_id not in fits else ("right" if right(d) else "wrong")
        answer = str(r.answer).replace("|", "\\|").replace("\n", " ")[:80]
        lines.append(
            f"| {r.task_id} | {r.group} | {r.gold} | {answer} "
            f"| {'right' if right(r) else 'wrong'} ({r.status}, {r.iterations} steps) | {shown} |"
        )
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    (args.out / "table.json").write_text(json.dumps({"by_type": by_type}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    arguments_ = arguments()
    if arguments_.report_only:
        report(arguments_)
    else:
        run_study(arguments_)
