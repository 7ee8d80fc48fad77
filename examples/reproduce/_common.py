"""Shared by the reproduction scripts: generate, run both methods, table and plot."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from shesha import Shesha, __version__
from shesha.bench import generate
from shesha.bench.runner import EvalRunner, Method, ResultRow, summarise
from shesha.bench.scoring import constant_baseline
from shesha.bench.tasks import parse_lengths, read_task_set, write_task_set
from shesha.endpoints import is_local

SHARED_HAYSTACK = (
    Path(__file__).resolve().parents[3] / "shared" / "qa" / "needle_haystack" / "PaulGrahamEssays"
)


def arguments(description: str, lengths: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default="local", help="any LiteLLM model string, or local")
    p.add_argument("--sub-model")
    p.add_argument("--api-base")
    p.add_argument("--api-key", help="default: the provider's environment variable")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=10, help="tasks per length")
    p.add_argument("--lengths", default=lengths)
    p.add_argument("--window-tokens", type=int, help="the direct baseline's window")
    p.add_argument(
        "--haystack",
        default=str(SHARED_HAYSTACK),
        help="S-NIAH: a folder of .txt files to hide needles in, or 'none' for generated "
        "filler (default: the Paul Graham essays in ../shared when present)",
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--report-only", action="store_true",
                   help="only rebuild the table and plot from the results in --out")  # fmt: skip
    return p.parse_args()


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    memory_gib = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory_gib = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass  # not Linux: the platform module's answer stands
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def git_commit() -> str | None:
    """The checkout's commit (with "+dirty" for uncommitted changes), if it is one."""
    here = Path(__file__).parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None  # not a git checkout
    return head + ("+dirty" if dirty else "")


def run_study(kind: str, args: argparse.Namespace) -> None:
    if args.report_only:
        report(kind, args)
        return
    lengths = parse_lengths(args.lengths)
    if kind == "sniah":
        hay = None if args.haystack == "none" else Path(args.haystack)
        if hay is not None and not hay.is_dir():
            if hay != SHARED_HAYSTACK:
                sys.exit(f"--haystack {hay}: no such folder (give a folder of .txt files)")
            hay = None  # the shared essays are absent on this machine: generated filler
        spec, tasks = generate.sniah(args.seed, args.n, lengths, hay)
    else:
        spec, tasks = generate.oolong(args.seed, args.n, lengths)
    write_task_set(args.out / "tasks", spec, tasks)
    run: dict[str, object] = {
        "command": shlex.join(["python", *sys.argv]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "shesha_version": __version__,
        "git_commit": git_commit(),
    }
    timings: dict[str, dict[str, object]] = {}
    window = None
    with Shesha(
        model=args.model, sub_model=args.sub_model, api_base=args.api_base, api_key=args.api_key
    ) as sh:
        methods: tuple[Method, ...] = ("rlm", "direct")
        for method in methods:
            runner = EvalRunner(
                sh, args.out / "tasks", args.out / method, method=method,
                window_tokens=args.window_tokens,
                on_row=lambda r: print(
                    f"{r.method} {r.task_id}: {r.score:.2f} ({r.status}, {r.latency_s:.1f} s)",
                    flush=True,
                ),
            )  # fmt: skip
            window = runner.window_tokens
            started = time.perf_counter()
            asyncio.run(runner.run(resume=args.resume))
            timings[method] = {
                "wall_s": round(time.perf_counter() - started, 1),
                "fingerprint": runner.fingerprint,
            }
    run["methods"] = timings
    run["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    run["direct_window_tokens"] = window
    (args.out / "run.json").write_text(json.dumps(run, indent=1))
    report(kind, args)


def model_label(model: str) -> str:
    """The model as a reader should see it: ``local`` becomes the file it stands for."""
    if not is_local(model):
        return model
    with Shesha(model=model) as sh:
        return f"{model} ({sh.models().resolve(model).name})"


def read_rows(path: Path) -> list[ResultRow]:
    return [ResultRow.model_validate_json(line) for line in path.read_text().splitlines()]


def report(kind: str, args: argparse.Namespace) -> None:
    """table.json, table.md and the plot, from the results in ``args.out``."""
    needed = [args.out / m / "results.jsonl" for m in ("rlm", "direct")] + [args.out / "run.json"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        sys.exit(f"{args.out}: no results to report ({', '.join(missing)} missing); "
                 "run the study without --report-only first.")  # fmt: skip
    results = {m: read_rows(args.out / m / "results.jsonl") for m in ("rlm", "direct")}
    run = json.loads((args.out / "run.json").read_text())
    window = run.get("direct_window_tokens")
    table = {m: summarise(rows) for m, rows in results.items()}
    (args.out / "table.json").write_text(json.dumps(table, indent=1))
    spec, tasks = read_task_set(args.out / "tasks")
    # The constant answers are chosen on another seed's tasks: chosen on these, a kind of
    # question with one task would score 1 by hindsight.
    prior = generate.oolong(spec.seed + 1000, 30, spec.lengths)[1] if kind == "oolong" else []
    lines = [
        "| length (tokens) | RLM score | RLM p50 s | RLM sub-calls (mean) | RLM sub-call tokens "
        "(mean) | direct score | direct p50 s | direct truncated | best constant answer |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r, d in zip(table["rlm"], table["direct"], strict=True):
        here = [t for t in tasks if t.length_tokens == r["length_tokens"]]
        constant = f"{constant_baseline(here, chosen_on=prior):.2f}" if prior else "n/a"
        lines.append(
            f"| {r['length_tokens']:,} | {r['mean_score']:.2f} | {r['p50_latency_s']:.1f} "
            f"| {r.get('mean_subcalls', 0):g} | {r.get('mean_subcall_tokens', 0):,} "
            f"| {d['mean_score']:.2f} | {d['p50_latency_s']:.1f} | {d['mean_truncated']:.0%} "
            f"| {constant} |"
        )
    direct = {row.task_id: row for row in results["direct"]}
    lines += [
        "",
        "| task | gold | RLM answer | RLM score | steps | sub-calls | sub-call tokens "
        "| direct answer | direct score |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rlm"]:
        other = direct.get(row.task_id)
        lines.append(
            f"| {row.task_id} | {row.gold[:40]} | {_cell(row.answer)} | {row.score:.2f} "
            f"({row.status}) | {row.iterations} | {row.subcalls} | {row.subcall_tokens:,} "
            f"| {_cell(other.answer if other else None)} "
            f"| {f'{other.score:.2f}' if other else 'n/a'} |"
        )
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for method, rows in table.items():
        ax.plot([r["length_tokens"] for r in rows], [r["mean_score"] for r in rows],
                marker="o", label=method)  # fmt: skip
    if window:
        ax.axvline(window, color="grey", linestyle="--", linewidth=1)
        ax.annotate(f"direct window\n{window:,} tokens", (window, 0.5), fontsize=8,
                    xytext=(4, 0), textcoords="offset points")  # fmt: skip
    ax.set_xscale("log", base=2)
    lengths = [r["length_tokens"] for r in table["rlm"]]
    ax.set_xticks(lengths, [tokens_label(n) for n in lengths])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("mean score")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"{kind}: {model_label(args.model)}, {table['rlm'][0]['tasks']} tasks a length")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / f"{kind}.png", dpi=120)
    print(f"plot: {args.out / f'{kind}.png'}")


def _cell(text: str | None, width: int = 40) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")[:width]


def tokens_label(n: int) -> str:
    return f"{n // 2**20}M" if n >= 2**20 else f"{n // 2**10}K"
