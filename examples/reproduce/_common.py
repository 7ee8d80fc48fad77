"""Shared by the reproduction scripts: generate, run both methods, table and plot."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from shesha import Shesha
from shesha.bench import generate
from shesha.bench.runner import EvalRunner, Method, ResultRow, summarise
from shesha.bench.tasks import parse_lengths, write_task_set

SHARED_HAYSTACK = (
    Path(__file__).resolve().parents[3] / "shared" / "qa" / "needle_haystack" / "PaulGrahamEssays"
)


def arguments(description: str, lengths: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default="local", help="any LiteLLM model string, or local")
    p.add_argument("--sub-model")
    p.add_argument("--api-base")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=10, help="tasks per length")
    p.add_argument("--lengths", default=lengths)
    p.add_argument("--window-tokens", type=int, help="the direct baseline's window")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--resume", action="store_true")
    return p.parse_args()


def run_study(kind: str, args: argparse.Namespace) -> None:
    lengths = parse_lengths(args.lengths)
    if kind == "sniah":
        hay = SHARED_HAYSTACK if SHARED_HAYSTACK.is_dir() else None
        spec, tasks = generate.sniah(args.seed, args.n, lengths, hay)
    else:
        spec, tasks = generate.oolong(args.seed, args.n, lengths)
    write_task_set(args.out / "tasks", spec, tasks)
    results: dict[str, list[ResultRow]] = {}
    with Shesha(model=args.model, sub_model=args.sub_model, api_base=args.api_base) as sh:
        methods: tuple[Method, ...] = ("rlm", "direct")
        for method in methods:
            runner = EvalRunner(
                sh, args.out / "tasks", args.out / method, method=method,
                window_tokens=args.window_tokens,
                on_row=lambda r: print(f"{r.method} {r.task_id}: {r.score:.2f} ({r.status})"),
            )  # fmt: skip
            results[method] = asyncio.run(runner.run(resume=args.resume))
    table = {m: summarise(rows) for m, rows in results.items()}
    (args.out / "table.json").write_text(json.dumps(table, indent=1))
    lines = [
        "| length (tokens) | RLM score | direct score | direct truncated |",
        "|---|---|---|---|",
    ]
    for r, d in zip(table["rlm"], table["direct"], strict=True):
        lines.append(
            f"| {r['length_tokens']:,} | {r['mean_score']:.2f} | {d['mean_score']:.2f} | "
            f"{d['mean_truncated']:.0%} |"
        )
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, rows in table.items():
        ax.plot([r["length_tokens"] for r in rows], [r["mean_score"] for r in rows],
                marker="o", label=method)  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("mean score")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"{kind}: {args.model}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / f"{kind}.png", dpi=120)
    print(f"plot: {args.out / f'{kind}.png'}")
