"""`shesha add`, `projects`, `docs`, `traces`, `trace` and `init`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from shesha.ask_text import error_lines
from shesha.cli.backend import Backend, LocalBackend, RemoteBackend, open_backend
from shesha.cli.common import (
    CONFIG_OPTION_HELP,
    SERVER_OPTION_HELP,
    err_console,
    out_console,
    print_json,
)
from shesha.config import INIT_TEMPLATE
from shesha.errors import NotFoundError, StorageError
from shesha.exits import EXIT_ERROR
from shesha.locations import CONFIG_FILE
from shesha.remote_ask import OFF
from shesha.rlm.events import (
    CodeRun,
    ExecDone,
    Failed,
    Final,
    LimitHit,
    LLMResponse,
    Nudged,
    PassagesShown,
    PhraseCounted,
    RecordsMapped,
    StrategyChosen,
    SubcallResponse,
    Summary,
    Warned,
    strategy_note,
)
from shesha.rlm.trace import read_trace
from shesha.storage import AddProgress, AddReport
from shesha.storage.gitrepo import is_repository

ConfigOpt = typer.Option(None, "--config", help=CONFIG_OPTION_HELP)
JsonOpt = typer.Option(False, "--json", help="Print one JSON object on stdout.")
ServerOpt = typer.Option(None, "--server", help=SERVER_OPTION_HELP)


def add_with_progress(
    backend: Backend,
    project: str,
    paths: Sequence[str],
    *,
    password: str | None,
    quiet: bool = False,
) -> tuple[AddReport, dict[str, dict[str, Any]]]:
    """Add with a progress bar on stderr (when it is a terminal)."""
    if quiet or not err_console.is_terminal:
        return backend.add(project, paths, password=password, on_progress=None)
    with Progress(
        TextColumn("adding"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("", total=None)

        def step(p: AddProgress) -> None:
            said = p.name[-50:]
            if p.status == "ocr":
                said = f"{p.name[-36:]}: OCR page {p.pages_done}/{p.pages_total}"
            bar.update(task, total=p.total, completed=p.done, description=said)

        return backend.add(project, paths, password=password, on_progress=step)


def add(
    ctx: typer.Context,
    project: str = typer.Argument(..., help="The project (made if it does not exist)."),
    paths: list[str] | None = typer.Argument(
        None,
        help="Files, directories (recursive) and globs. A clone's top directory is read as "
        "a git repository.",
    ),
    git: str | None = typer.Option(
        None, "--git", help="A git repository to clone and read (URL or path)."
    ),
    ref: str | None = typer.Option(
        None, "--ref", help="The branch, tag or commit of a repository to read (default HEAD)."
    ),
    update: bool = typer.Option(
        False, "--update", help="Read again what changed in the project's repositories."
    ),
    password: str | None = typer.Option(None, help="Password for encrypted PDFs."),
    no_ocr: bool = typer.Option(
        False, "--no-ocr", help="Do not OCR scanned pages and images (they stay empty)."
    ),
    ocr_lang: str | None = typer.Option(
        None, "--ocr-lang", help="Tesseract's languages for OCR, joined by + (default eng)."
    ),
    json_out: bool = JsonOpt,
    server: str | None = ServerOpt,
    config: Path | None = ConfigOpt,
) -> None:
    """Parse and store documents in a project. Exit code 1 if any file failed (the good
    ones are stored all the same). Scanned pages and images are read by OCR (Tesseract).
    A git repository (a clone's directory, or --git URL) is read at a commit, without
    vendored, generated or binary files; --update reads only what changed since."""
    paths = list(paths or [])
    repositories = [p for p in paths if is_repository(Path(p))]
    files = [p for p in paths if p not in repositories]
    if git:
        repositories.append(git)
    if not (files or repositories or update):
        raise typer.BadParameter(
            "give files, a repository, --git URL or --update", param_hint="PATHS"
        )
    if ref and len(repositories) != 1:
        raise typer.BadParameter("--ref needs exactly one repository", param_hint="--ref")
    ocr = {"ocr": False} if no_ocr else {}
    reports: list[AddReport] = []
    docs: dict[str, dict[str, Any]] = {}
    if files:
        with open_backend(ctx, server, config, **ocr, ocr_lang=ocr_lang) as backend:
            if (no_ocr or ocr_lang) and isinstance(backend, RemoteBackend):
                err_console.print(
                    "note: a running server parses these files, with its own OCR settings "
                    "(ocr, ocr_lang); --no-ocr and --ocr-lang apply in-process (--server off)",
                    markup=False,
                )
            report, docs = add_with_progress(
                backend, project, files, password=password, quiet=json_out
            )
            reports.append(report)
    if repositories or update:
        # Repositories are read in this process (git runs here); the store is shared on
        # disk, so a running server sees the documents at its next query.
        with open_backend(ctx, OFF, config, **ocr, ocr_lang=ocr_lang) as local:
            assert isinstance(local, LocalBackend)
            for location in repositories or [""]:
                done, docs = local.add_repository(
                    project, location, ref=ref, update=update and not repositories,
                    on_progress=None,
                )  # fmt: skip
                reports += done
    _print_add(project, reports, docs, json_out)
    if any(r.failed for r in reports):
        raise typer.Exit(EXIT_ERROR)


def _print_add(
    project: str, reports: list[AddReport], docs: dict[str, dict[str, Any]], json_out: bool
) -> None:
    stored = [d for r in reports for d in r.stored]
    failed = [f for r in reports for f in r.failed]
    if json_out:
        print_json(
            {
                "project": project,
                "stored": [docs[d.name] for d in stored if d.name in docs],
                "failed": [{"path": f.path, "error": f.error} for f in failed],
                "repositories": [
                    {"commit": r.commit, "skipped": r.skipped, "removed": r.removed}
                    for r in reports
                    if r.commit is not None
                ],
            }
        )
        return
    counts: dict[str, int] = {}
    for d in stored:
        counts[d.status] = counts.get(d.status, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing stored"
    err_console.print(f"{project}: {summary}; {len(failed)} failed", markup=False)
    for r in reports:
        if r.commit is None:
            continue
        why: dict[str, int] = {}
        for reason in r.skipped.values():
            key = reason.split(" (")[0]
            why[key] = why.get(key, 0) + 1
        left = ", ".join(f"{n} {k}" for k, n in sorted(why.items()))
        said = f"  repository at {r.commit[:12]}"
        said += f"; left out: {left}" if left else ""
        said += f"; removed: {len(r.removed)}" if r.removed else ""
        err_console.print(said, markup=False)
    for d in stored:
        for w in d.meta.warnings:
            err_console.print(f"  warning: {d.name}: {w}", markup=False)
    for f in failed:
        message = f.error.splitlines()[0]
        if not message.startswith(Path(f.path).name):
            message = f"{f.path}: {message}"
        err_console.print(f"  failed: {message}", markup=False)
        for label, hint in error_lines(f.error)[1:]:
            err_console.print(f"          {label}: {hint}", markup=False)


projects_app = typer.Typer(help="List, show or delete projects.", no_args_is_help=False)


@projects_app.callback(invoke_without_command=True)
def _projects_default(
    ctx: typer.Context,
    json_out: bool = JsonOpt,
    server: str | None = ServerOpt,
    config: Path | None = ConfigOpt,
) -> None:
    """List projects (the default), or show / delete one."""
    if ctx.invoked_subcommand is None:
        projects_list(ctx, json_out=json_out, server=server, config=config)


@projects_app.command("list")
def projects_list(
    ctx: typer.Context,
    json_out: bool = JsonOpt,
    server: str | None = ServerOpt,
    config: Path | None = ConfigOpt,
) -> None:
    """List projects."""
    with open_backend(ctx, server, config) as backend:
        rows = backend.project_rows()
    if json_out:
        print_json({"projects": rows})
        return
    if not rows:
        err_console.print("No projects yet. Make one with `shesha add NAME PATHS...`.")
        return
    table = Table("project", "documents", "characters", "traces")
    for r in rows:
        table.add_row(r["name"], str(r["documents"]), f"{r['chars']:,}", str(r["traces"]))
    out_console.print(table)


@projects_app.command("show")
def projects_show(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    json_out: bool = JsonOpt,
    server: str | None = ServerOpt,
    config: Path | None = ConfigOpt,
) -> None:
    """Show a project: its documents, size, version and traces."""
    with open_backend(ctx, server, config) as backend:
        info = backend.project_info(name)
    if json_out:
        print_json(info)
        return
    for key in ("name", "documents", "chars", "version", "traces", "path"):
        out_console.print(f"{key:>10}: {info[key]}", markup=False)
    _docs_table(info["docs"])


@projects_app.command("delete")
def projects_delete(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    server: str | None = ServerOpt,
    config: Path | None = ConfigOpt,
) -> None:
    """Delete a project, its documents and its traces."""
    with open_backend(ctx, server, config) as backend:
        if not backend.project_exists(name):
            raise NotFoundError(f"No project named {name!r} to delete.")
        if not yes and not typer.confirm(f"Delete project {name!r} and its traces?"):
            raise typer.Abort()
        backend.delete_project(name)
    err_console.print(f"Deleted {name}.", markup=False)


def _encoding_cell(d: dict[str, Any]) -> str:
    """``utf-8 (bom)``, ``windows-1252 (declared)``, ``windows-1250 (detected 0.50)``."""
    name, source, confidence = (
        d.get("encoding"),
        d.get("encoding_source"),
        d.get("encoding_confidence"),
    )
    if not name:
        return ""
    if source is None:
        return str(name)  # stored before sources were recorded
    sure = "" if confidence is None or confidence >= 1 else f" {confidence:.2f}"
    return f"{name} ({source}{sure})"


def _docs_table(rows: list[dict[str, Any]]) -> None:
    table = Table("document", "format", "pages", "characters", "encoding", "warnings")
    for d in rows:
        table.add_row(
            d["name"],
            d["format"],
            str(d["pages"] or ""),
            f"{d['chars']:,}",
            _encoding_cell(d),
            "; ".join(d["warnings"]),
        )
    out_console.print(table)


def docs(
    ctx: typer.Context,
    project: str = typer.Argument(...),
    show: str | None = typer.Option(
        None, "--show", help="Print this document's text exactly as the model sees it."
    ),
    json_out: bool = JsonOpt,
    server: str | None = ServerOpt,
    config: Path | None = ConfigOpt,
) -> None:
    """List a project's documents, or print one's parsed text."""
    with open_backend(ctx, server, config) as backend:
        if show is not None:
            text = backend.text(project, show)
            if json_out:
                print_json({"project": project, "name": show, "text": text})
            else:
                typer.echo(text, nl=False)
            return
        rows = backend.documents(project)
    if json_out:
        print_json({"project": project, "docs": rows})
    else:
        _docs_table(rows)


def traces(
    ctx: typer.Context,
    project: str = typer.Argument(...),
    last: int = typer.Option(10, "--last", "-n", help="How many, newest first."),
    json_out: bool = JsonOpt,
    server: str | None = ServerOpt,
    config: Path | None = ConfigOpt,
) -> None:
    """List a project's query traces, newest first."""
    with open_backend(ctx, server, config) as backend:
        rows, folder = backend.traces(project, max(1, last))
    if json_out:
        print_json({"project": project, "traces": rows})
        return
    if not rows:
        err_console.print(f"No traces yet for {project}.")
        return
    table = Table("trace", "status", "steps", "seconds", "question")
    for r in rows:
        table.add_row(
            Path(r["path"]).name,
            str(r["status"]),
            str(r["iterations"] or ""),
            str(r["duration_s"] or ""),
            str(r["question"] or "")[:60],
        )
    out_console.print(table)
    err_console.print(f"Show one with `shesha trace {folder}/<trace>`.", markup=False)


def _ms(value: Any) -> str:
    return f"{value / 1000:.2f} s" if isinstance(value, int | float) else ""


def trace(path: Path = typer.Argument(..., exists=True, dir_okay=False)) -> None:
    """Pretty-print a trace: question, each step's code and output, sub-calls, answer."""
    t = read_trace(path)
    h = t.header
    if h is None:
        raise StorageError(f"{path} is not a shesha trace (no header).")
    c = out_console
    c.rule("[bold]shesha trace")
    c.print(f"[bold]question:[/] {h.question}", highlight=False)
    c.print(
        f"[dim]model {h.model} · sub-model {h.sub_model} · project {h.project} · "
        f"{len(h.documents)} documents · shesha {h.shesha_version} · prompts {h.prompt_hash}[/]",
        highlight=False,
    )
    subcalls = 0
    for e in t.events:
        match e:
            case LLMResponse():
                c.rule(f"step {e.iteration}")
                cost = f"${e.cost_usd:.5f}" if e.cost_usd is not None else "cost unknown"
                reused = f" ({e.cached_prompt_tokens} reused)" if e.cached_prompt_tokens else ""
                c.print(
                    f"[dim]model: {e.prompt_tokens}{reused} + {e.completion_tokens} tokens · "
                    f"{cost} · {_ms(e.duration_ms)}[/]",
                    highlight=False,
                )
            case CodeRun():
                c.print(f"[cyan]code (block {e.block}):[/]", highlight=False)
                c.print(e.code, markup=False, highlight=False)
            case ExecDone():
                out = "".join(x or "" for x in (e.stdout, e.stderr, e.error)).rstrip()
                c.print(
                    f"[green]output[/] [dim]({e.status}, {_ms(e.duration_ms)}, "
                    f"cpu {e.cpu_s} s, {e.subcalls} sub-calls):[/]",
                    highlight=False,
                )
                c.print(out[:3000] or "(no output)", markup=False, highlight=False)
            case SubcallResponse():
                subcalls += 1
            case Nudged():
                c.print("[yellow]no code in the reply: nudged[/]")
            case StrategyChosen() | PassagesShown() | PhraseCounted() | RecordsMapped():
                c.print(strategy_note(e), markup=False, highlight=False)
            case LimitHit(message=message) | Warned(message=message) | Failed(error=message):
                c.print(f"[red]{e.type}:[/] {message}", highlight=False)
            case Final():
                c.rule("answer")
                c.print(str(e.answer), markup=False, highlight=False)
            case Summary(usage=usage):
                c.rule()
                c.print(
                    f"{e.status} · {e.iterations} steps · {subcalls} sub-calls · "
                    f"root {usage.root.tokens:,} tokens · sub {usage.sub.tokens:,} tokens · "
                    f"{e.duration_s} s",
                    highlight=False,
                )
            case _:
                pass  # the engine's notes to itself are not shown


def init(
    path: Path = typer.Option(Path(CONFIG_FILE), help="Where to write it."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a commented shesha.toml."""
    if path.exists() and not force:
        err_console.print(f"{path} already exists (use --force to overwrite).", markup=False)
        raise typer.Exit(EXIT_ERROR)
    path.write_text(INIT_TEMPLATE, encoding="utf-8")
    err_console.print(f"Wrote {path}. Uncomment what you need.", markup=False)


__all__ = ["add", "add_with_progress", "docs", "init", "projects_app", "trace", "traces"]
