"""What the CLI commands share: consoles, exit codes, settings, JSON output."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

import shesha
from shesha.ask_text import error_lines

out_console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass
class _State:
    verbose: bool = False


state = _State()

SheshaFactory = Callable[..., "shesha.Shesha"]
"""Makes the Shesha a command works with, from its keyword arguments."""


def open_shesha(ctx: typer.Context, **kwargs: Any) -> shesha.Shesha:
    """``Shesha(**kwargs)``, or what the caller of the CLI passed as its ``obj``: a
    factory, so that tests and programs that embed the CLI can give it a model and
    sandboxes (``CliRunner().invoke(app, args, obj=factory)``)."""
    factory: SheshaFactory = ctx.find_root().obj or shesha.Shesha
    return factory(**kwargs)


LABEL_STYLES = {"error": "bold red", "hint": "yellow", "stopped": "yellow"}
"""How the labelled lines of ``shesha.ask_text`` are coloured on a terminal."""


def print_labelled(lines: list[tuple[str, str]]) -> None:
    """Labelled lines on stderr: ``error: ...``, ``hint: ...``, ``stopped: ...``."""
    for label, text in lines:
        style = LABEL_STYLES.get(label, "bold")
        err_console.print(f"[{style}]{label}:[/] {escape(text)}", highlight=False)


def print_error(text: str) -> None:
    """One clear line on stderr, and the hint on the next."""
    print_labelled(error_lines(text))


def print_json(payload: Any) -> None:
    """Exactly one JSON object on stdout."""
    print(json.dumps(payload, ensure_ascii=False, default=str))


CONFIG_OPTION_HELP = "A shesha.toml to read (default: ./shesha.toml, then the user config dir)."
SERVER_OPTION_HELP = (
    "A shesha server to use (default: SHESHA_SERVER, else the local one when it runs); "
    "off: run in this process."
)
