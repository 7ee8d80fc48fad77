"""`shesha eval generate` and `shesha eval run`: reproducible research runs.

`shesha.bench.ray_executor` (and the Shesha API it builds workers with) loads only when
a run asks for ``--ray``: every other command starts without it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from shesha.bench import generate
from shesha.bench.qa import qa_tasks
from shesha.bench.runner import (
    EvalRunner,
    Method,
    ResultRow,
    TaskExecutor,
    summarise,
    summarise_by_type,
)
from shesha.bench.tasks import parse_lengths, read_task_set, write_task_set
from shesha.cli.common import CONFIG_OPTION_HELP, err_console, open_shesha, out_console

eval_app = typer.Typer(help="Generate task sets and run evaluations (S-NIAH, OOLONG).")


@eval_app.command("generate")
def eval_generate(
    kind: str = typer.Argument(..., help="sniah, oolong, oolong-pairs, or qa (--questions)."),
    seed: int = typer.Option(0, help="The same seed gives the same bytes."),
    n: int = typer.Option(10, help="Tasks per length."),
    lengths: str = typer.Option("8k,32k", help="Context lengths in tokens: 8k,32k,1m."),
    out: Path = typer.Option(..., help="Where to write the task set."),
    haystack: Path | None = typer.Option(
        None, help="sniah: a folder of .txt files to hide needles in (default: filler text)."
    ),
    questions: Path | None = typer.Option(
        None,
        help='qa: a JSONL of {"id", "question", "documents": [paths], "gold", "type", "split"}.',
    ),
    root: Path | None = typer.Option(
        None, help="qa: where document paths start (default: the questions file's folder)."
    ),
    split: str | None = typer.Option(None, help="qa: keep only the questions of this split."),
) -> None:
    """Write a seeded, deterministic task set, or one from your own questions (qa)."""
    sizes = parse_lengths(lengths)
    if kind == "qa":
        if questions is None:
            raise typer.BadParameter("qa needs --questions FILE.jsonl", param_hint="--questions")
        spec, tasks = qa_tasks(questions, root, split)
    elif kind == "sniah":
        spec, tasks = generate.sniah(seed, n, sizes, haystack)
    elif kind == "oolong":
        spec, tasks = generate.oolong(seed, n, sizes)
    elif kind == "oolong-pairs":
        spec, tasks = generate.oolong_pairs(seed, n, sizes)
    else:
        raise typer.BadParameter("use sniah, oolong, oolong-pairs or qa", param_hint="KIND")
    write_task_set(out, spec, tasks)
    err_console.print(f"Wrote {len(tasks)} {kind} tasks to {out}", markup=False)


WORKERS_OPTION = typer.Option(
    None,
    min=1,
    help="Tasks run at once, each with its own sandbox (default: 1 here; with --ray, "
    "one per CPU of the cluster).",
)
MAX_COST_OPTION = typer.Option(
    None, min=0, help="Start no task once the run has cost this many dollars (all workers)."
)
CALLS_PER_MINUTE_OPTION = typer.Option(
    None,
    help="Each model's calls a minute, at most, over every worker (a provider's rate "
    "limit; the setting calls_per_minute).",
)


@eval_app.command("run")
def eval_run(
    ctx: typer.Context,
    task_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="A task set."),
    model: str | None = typer.Option(None, help="Root model (e.g. local, openai/...)."),
    sub_model: str | None = typer.Option(None, help="Sub-model for llm_query."),
    api_base: str | None = typer.Option(None),
    api_key: str | None = typer.Option(None),
    method: str = typer.Option("rlm", help="rlm, or direct (the whole context in one prompt)."),
    limit: int | None = typer.Option(None, help="Run only the first N tasks."),
    out: Path | None = typer.Option(None, help="Results directory (default: TASK_DIR/runs/...)."),
    resume: bool = typer.Option(False, help="Skip tasks already in results.jsonl."),
    window_tokens: int | None = typer.Option(None, help="direct: the model's window."),
    max_iterations: int | None = typer.Option(None),
    workers: int | None = WORKERS_OPTION,
    ray: bool = typer.Option(
        False, "--ray", help="Run the tasks on a Ray cluster (the ray extra; docs/scaling.md)."
    ),
    ray_address: str | None = typer.Option(
        None, help="--ray: the cluster to join (default: RAY_ADDRESS, else a local one)."
    ),
    retries: int = typer.Option(
        2, min=0, help="--ray: runs again of a task whose worker died, at most."
    ),
    max_cost: float | None = MAX_COST_OPTION,
    calls_per_minute: float | None = CALLS_PER_MINUTE_OPTION,
    config: Path | None = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
) -> None:
    """Run every task; write results.jsonl, summary.json and traces; print a table."""
    if ray_address is not None and not ray:
        raise typer.BadParameter("--ray-address goes with --ray", param_hint="--ray-address")
    if method not in ("rlm", "direct"):
        raise typer.BadParameter("use rlm or direct", param_hint="--method")
    _, tasks = read_task_set(task_dir)
    settings: dict[str, Any] = {
        "model": model,
        "sub_model": sub_model,
        "api_base": api_base,
        "api_key": api_key,
        "max_iterations": max_iterations,
        "calls_per_minute": calls_per_minute,
        "pool_size": workers if workers and workers > 1 and not ray else None,
    }
    chosen: Method = "direct" if method == "direct" else "rlm"
    with open_shesha(ctx, config_file=config, **settings) as sh:
        name = (sh.settings.model or "model").replace("/", "_")
        out_dir = out or task_dir / "runs" / f"{method}-{name}"
        with _RunProgress(method, min(limit or len(tasks), len(tasks))) as progress:
            runner = EvalRunner(
                sh, task_dir, out_dir, method=chosen, window_tokens=window_tokens,
                on_row=progress.row,
            )  # fmt: skip
            executor: TaskExecutor | None = None
            if ray:
                from shesha.bench.ray_executor import RayExecutor  # noqa: PLC0415  see above

                executor = RayExecutor(
                    runner, address=ray_address, workers=workers, retries=retries
                )
            rows = asyncio.run(
                runner.run(
                    limit=limit,
                    resume=resume,
                    workers=workers or 1,
                    executor=executor,
                    max_cost_usd=max_cost,
                )
            )
    _print_tables(rows)
    err_console.print(
        f"results: {out_dir / 'results.jsonl'} · summary: {out_dir / 'summary.json'} · "
        f"fingerprint {runner.fingerprint}",
        markup=False,
    )


class _RunProgress:
    """The live bar on stderr: done of total, the last task's score, failures, the cost
    so far and the time left."""

    def __init__(self, method: str, total: int) -> None:
        self.bar = Progress(
            TextColumn(method), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.description}"), console=err_console, transient=True,
        )  # fmt: skip
        self.total = total
        self.failed = 0
        self.spent = 0.0

    def __enter__(self) -> _RunProgress:
        self.bar.__enter__()
        self.job = self.bar.add_task("", total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)

    def row(self, row: ResultRow) -> None:
        self.failed += row.status != "success"
        self.spent += row.cost_usd or 0.0
        self.bar.update(
            self.job,
            advance=1,
            description=f"{row.task_id}: {row.score:.2f} · failed {self.failed} · "
            f"${self.spent:.4f}",
        )


def _print_tables(rows: list[ResultRow]) -> None:
    """The results by length, and for QA tasks by type, on stdout."""
    table = Table("length", "tasks", "mean score", "mean cost", "mean tokens", "p50 s", "p95 s")
    for g in summarise(rows):
        cost = "unknown" if g["mean_cost_usd"] is None else f"${g['mean_cost_usd']:.4f}"
        table.add_row(
            f"{g['length_tokens']:,}", str(g["tasks"]), f"{g['mean_score']:.3f}", cost,
            f"{g['mean_tokens']:,}", str(g["p50_latency_s"]), str(g["p95_latency_s"]),
        )  # fmt: skip
    out_console.print(table)
    if any(r.kind == "qa" for r in rows):
        by_type = Table("type", "tasks", "right, status success", "share", "mean steps")
        for g in summarise_by_type(rows):
            by_type.add_row(
                g["type"], str(g["tasks"]), str(g["right_and_success"]), f"{g['share']:.2f}",
                f"{g['mean_iterations']:.1f}",
            )  # fmt: skip
        out_console.print(by_type)
