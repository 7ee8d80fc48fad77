"""`shesha ask`: one question, about a stored project or about files given on the spot."""

from __future__ import annotations

import glob
import hashlib
import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.status import Status

from shesha.ask_text import Tally, citation_lines, ending_lines, exit_code, summary
from shesha.cli.backend import (
    Backend,
    LocalBackend,
    open_backend,
    warm_llm_import,
)
from shesha.cli.common import (
    CONFIG_OPTION_HELP,
    SERVER_OPTION_HELP,
    err_console,
    print_json,
    print_labelled,
    state,
)
from shesha.cli.manage import add_with_progress
from shesha.exits import EXIT_ERROR
from shesha.rlm import QueryResult, TraceEvent
from shesha.views import result_json


def project_name_for(paths: list[str]) -> str:
    """A stable project name for a set of paths: readable, and unique to those paths."""
    resolved = sorted(str(Path(p).expanduser().resolve()) for p in paths)
    digest = hashlib.sha256("\n".join(resolved).encode()).hexdigest()[:8]
    stem = "-".join(re.sub(r"[^\w.-]+", "_", Path(p).name or "root") for p in paths)
    return f"ask-{stem[:40]}-{digest}"


class Strategy(StrEnum):
    """The choices of --strategy (``shesha.rlm.strategy``)."""

    auto = "auto"
    read = "read"
    retrieve = "retrieve"
    count_ = "count"  # the value is what --strategy takes; `count` is str.count
    map = "map"
    code = "code"


class Progress:
    """Live progress on stderr: a status line on a terminal, else a line per step."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.live = err_console.is_terminal and not quiet
        self.status: Status | None = None
        self.tally = Tally()

    def __enter__(self) -> Progress:
        if self.live:
            self.status = err_console.status(self.tally.status())
            self.status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.stop()

    def _show(self, line: str | None) -> None:
        if self.status is not None:
            self.status.update(self.tally.status())
        elif line is not None and not self.quiet:
            err_console.print(line, highlight=False, markup=False)

    def queued(self, position: int) -> None:
        self._show(self.tally.queued(position))

    def on_event(self, e: TraceEvent) -> None:
        self._show(self.tally.add(e.model_dump(mode="json")))


def _check_paths(paths: list[str]) -> None:
    for p in paths:
        if not Path(p).expanduser().exists() and not glob.has_magic(p):
            raise typer.BadParameter(f"{p}: no such file or directory", param_hint="PATHS")


PATHS_ARGUMENT = typer.Argument(
    None, help="Files, directories or globs to ask about (stored as a project)."
)
PROJECT_OPTION = typer.Option(
    None, "--project", "-p", help="Ask this stored project (with PATHS: add them to it)."
)
API_KEY_OPTION = typer.Option(None, help="API key (better: the provider's variable).", envvar=None)
OUTPUT_SCHEMA_OPTION = typer.Option(
    None,
    "--output-schema",
    exists=True,
    dir_okay=False,
    help="A JSON schema file the answer must match (then printed as JSON).",
)
VERIFY_OPTION = typer.Option(
    False, "--verify", help="Ask the sub-model whether each cited quote supports the answer."
)
STRATEGY_OPTION = typer.Option(
    None,
    "--strategy",
    help="How to answer: read (the documents whole), retrieve (the best passages), count "
    "(code counts the phrase the question names), map (each record labelled, code counts "
    "the labels), code (the RLM loop), or auto "
    "(default: the engine chooses by question, size and model).",
    case_sensitive=False,
)
NO_CACHE_OPTION = typer.Option(
    False, "--no-cache", help="Ask the sub-model again instead of reusing its answers."
)


def ask(
    ctx: typer.Context,
    question: str = typer.Argument(..., help="The question."),
    paths: list[str] = PATHS_ARGUMENT,
    project: str | None = PROJECT_OPTION,
    model: str | None = typer.Option(None, help="Root model: any LiteLLM model string."),
    sub_model: str | None = typer.Option(None, help="Model for llm_query (default: --model)."),
    api_base: str | None = typer.Option(None, help="Custom endpoint, e.g. a local server."),
    api_key: str | None = API_KEY_OPTION,
    max_iterations: int | None = typer.Option(None, help="Root-model steps (default 20)."),
    max_subcalls: int | None = typer.Option(None, help="llm_query calls in all."),
    max_cost: float | None = typer.Option(None, help="USD, root and sub-calls together."),
    max_tokens: int | None = typer.Option(None, help="Tokens, root and sub-calls together."),
    timeout: float | None = typer.Option(None, help="Seconds for the whole query."),
    password: str | None = typer.Option(None, help="Password for encrypted PDFs in PATHS."),
    output_schema: Path | None = OUTPUT_SCHEMA_OPTION,
    verify: bool = VERIFY_OPTION,
    strategy: Strategy | None = STRATEGY_OPTION,
    no_cache: bool = NO_CACHE_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Tracebacks on errors."),
    server: str | None = typer.Option(None, "--server", help=SERVER_OPTION_HELP),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
) -> None:
    """Ask a question about documents. The answer goes to stdout, progress to stderr.
    Uses a running `shesha serve` when one answers, else runs in this process."""
    state.verbose = state.verbose or verbose
    paths = paths or []
    if not paths and not project:
        raise typer.BadParameter("give PATHS to ask about, or --project NAME", param_hint="PATHS")
    _check_paths(paths)
    settings: dict[str, Any] = {
        "model": model,
        "sub_model": sub_model,
        "api_base": api_base,
        "api_key": api_key,
        "max_iterations": max_iterations,
        "max_subcalls": max_subcalls,
        "max_cost_usd": max_cost,
        "max_tokens": max_tokens,
        "max_wall_s": timeout,
        "cache": False if no_cache else None,
        "verify_citations": True if verify else None,
        "strategy": strategy.value if strategy is not None else None,
    }
    schema = read_schema(output_schema) if output_schema is not None else None
    overrides = {k: v for k, v in settings.items() if v is not None}
    name = project or project_name_for(paths)
    with open_backend(ctx, server, config, **settings) as backend:
        if isinstance(backend, LocalBackend):
            # Seconds of LiteLLM import, overlapped with parsing and the pool; the local
            # model (or no model, which falls back to it) does without LiteLLM.
            warm_llm_import(overrides.get("model") or backend.sh.settings.model)
        note = backend.local_model_note()
        if note is not None:
            err_console.print(note, markup=False)
        if paths:
            _add_paths(backend, name, paths, password=password, quiet=json_out)
        with Progress(quiet=json_out and not err_console.is_terminal) as progress:
            result = backend.ask(
                name,
                question,
                on_event=progress.on_event,
                on_queue=progress.queued,
                overrides=overrides,
                output=schema,
            )
    if json_out:
        print_json(result_json(result, name))
    else:
        _print_result(result)
    raise typer.Exit(exit_code(result.status))


def _add_paths(
    backend: Backend, name: str, paths: list[str], *, password: str | None, quiet: bool
) -> None:
    """Store PATHS in the project first; exit 1 when none of them gave a document."""
    report, docs = add_with_progress(backend, name, paths, password=password, quiet=quiet)
    for bad in report.failed:
        err_console.print(f"skipped {bad.path}: {bad.error.splitlines()[0]}", markup=False)
    if not docs:
        err_console.print("error: none of the paths gave a document to ask about")
        raise typer.Exit(EXIT_ERROR)


def _print_result(result: QueryResult) -> None:
    """The answer on stdout; citations, the summary line and what stopped it on stderr."""
    if result.answer is not None:
        print(result.answer)
    print_citations(result)
    said = result.model_dump(mode="json")
    err_console.print(summary(said), style="dim", markup=False)
    print_labelled(ending_lines(said))


def read_schema(path: Path) -> dict[str, Any]:
    """A JSON schema file, with a clear error naming it when it is not one."""
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise typer.BadParameter(
            f"{path}: not a JSON file ({e})", param_hint="--output-schema"
        ) from e
    if not isinstance(schema, dict):
        raise typer.BadParameter(
            f"{path}: a JSON schema is an object", param_hint="--output-schema"
        )
    return schema


def print_citations(result: QueryResult) -> None:
    """Under the answer: each citation, and an unverified one marked so nobody misses it."""
    for line in citation_lines([c.model_dump(mode="json") for c in result.citations]):
        print(line)
