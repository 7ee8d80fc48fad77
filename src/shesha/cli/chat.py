"""`shesha chat PROJECT`: a conversation in the terminal. Follow-ups see the earlier
questions and answers, and run in the same sandbox namespace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from shesha.ask_text import LIMIT_STATUSES
from shesha.cli.ask import Progress, print_citations
from shesha.cli.common import CONFIG_OPTION_HELP, err_console, open_shesha, out_console, print_error

EXIT_WORDS = {"exit", "quit", ":q"}


def chat(
    ctx: typer.Context,
    project: str = typer.Argument(..., help="The project to talk about."),
    conversation_id: str | None = typer.Option(
        None, "--id", help="Take up a recorded conversation again (its code is replayed)."
    ),
    list_them: bool = typer.Option(False, "--list", help="List this project's conversations."),
    model: str | None = typer.Option(None, help="Root model: any LiteLLM model string."),
    max_iterations: int | None = typer.Option(None, help="Root-model steps per question."),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
) -> None:
    """Ask questions one after another; an empty line or Ctrl-D ends (exit works too)."""
    settings: dict[str, Any] = {"model": model, "max_iterations": max_iterations}
    with open_shesha(ctx, config_file=config, **settings) as sh:
        p = sh.get_project(project)
        if list_them:
            if not p.conversations():
                err_console.print(f"No conversations about {project} yet.", markup=False)
            for record in p.conversations():
                first = record.exchanges[0].question if record.exchanges else ""
                out_console.print(
                    f"{record.id}  {len(record.exchanges)} questions  {escape(first[:60])}",
                    highlight=False,
                )
            return
        overrides: dict[str, Any] = {}
        note = sh.fallback_note()
        if note is not None:
            overrides["model"] = "local"
            err_console.print(note, markup=False)
        with p.chat(conversation_id) as conv:
            err_console.print(
                f"Conversation {conv.id} about {project} · resume it with "
                f"`shesha chat {project} --id {conv.id}` · an empty line ends",
                markup=False,
            )
            for exchange in conv.exchanges:
                err_console.print(f"> {exchange.question}\n{exchange.answer}", markup=False)
            while True:
                try:
                    question = input("> ").strip()
                except EOFError:
                    break
                if not question or question.lower() in EXIT_WORDS:
                    break
                with Progress(quiet=not err_console.is_terminal) as progress:
                    result = conv.ask(question, on_event=progress.on_event, **overrides)
                print(result.answer if result.answer is not None else "(no answer)")
                print_citations(result)
                if result.status == "error":
                    print_error(result.error or "the query failed")
                elif result.status in LIMIT_STATUSES:
                    err_console.print(f"stopped: {result.error or result.status}", markup=False)
