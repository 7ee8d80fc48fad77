"""`shesha doctor`: check each thing shesha needs, and say how to fix what fails."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

import typer
from rich.markup import escape

from shesha.cli.common import CONFIG_OPTION_HELP, out_console, print_json
from shesha.exits import EXIT_ERROR


def doctor(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
) -> None:
    """Check Docker, the sandbox image, the model setup, the data directory, disk and
    whether a shesha server runs."""
    # Loaded here: the checks import Docker's client and the whole API, which no other
    # command needs at start-up.
    checks = import_module("shesha.diagnose").run_checks(config)
    if json_out:
        print_json({"ok": all(c.ok for c in checks), "checks": [c.__dict__ for c in checks]})
    else:
        width = max(17, *(len(c.name) for c in checks))
        for c in checks:
            mark = "[green]pass[/]" if c.ok else "[red]FAIL[/]"
            out_console.print(f"{mark}  {c.name:<{width}} {escape(c.detail)}", highlight=False)
            if not c.ok and c.fix:
                out_console.print(f"      {'':<{width}} fix: {escape(c.fix)}", highlight=False)
    if not all(c.ok for c in checks):
        raise typer.Exit(EXIT_ERROR)
