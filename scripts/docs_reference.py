"""The generated parts of the docs, written by cog (`make docs`) and checked by
tests/unit/test_docs_reference.py:

- `cli_reference()`: every command's `--help`, for docs/cli.md;
- `settings_reference()`: every field of `shesha.config.Settings`, for docs/settings.md.

Both are deterministic: the help is rendered by click at a fixed width, without colour
(shesha's typer app sets no rich markup mode, so no box drawing), and nothing in them
depends on the machine.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import typer
import typer.main
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from typer.core import TyperGroup

from shesha.cli import app
from shesha.config import Settings
from shesha.locations import ENV_PREFIX

WIDTH = 100
BOUNDS = (("gt", "above"), ("ge", "at least"), ("lt", "below"), ("le", "at most"))


def _commands(
    command: Any, path: list[str], parent: typer.Context | None
) -> Iterator[tuple[list[str], str]]:
    """(path, help text) for this command and, depth first, each of its sub-commands."""
    ctx = command.context_class(
        command,
        info_name=path[-1],
        parent=parent,
        terminal_width=WIDTH,
        max_content_width=WIDTH,
        color=False,
    )
    yield path, command.get_help(ctx)
    if isinstance(command, TyperGroup):
        for name in command.list_commands(ctx):
            yield from _commands(command.get_command(ctx, name), [*path, name], ctx)


def cli_reference() -> str:
    """Each command's `--help`, under a `### shesha <command>` heading."""
    out = []
    for path, text in _commands(typer.main.get_command(app), ["shesha"], None):
        body = "\n".join(line.rstrip() for line in text.strip("\n").splitlines())
        out.append(f"### {' '.join(path)}\n\n```text\n{body}\n```\n")
    return "\n".join(out)


def _bounds(metadata: Iterable[Any]) -> list[str]:
    found: list[str] = []
    for m in metadata:
        if isinstance(m, FieldInfo):  # a shared bound's Field(...) inside Annotated
            found += _bounds(m.metadata)
        for attr, words in BOUNDS:
            if hasattr(m, attr):
                found.append(f"{words} {getattr(m, attr)}")
    return found


def _type(annotation: Any) -> str:
    """A field's type in words, e.g. `int (at least 1) or none`."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        base, *metadata = args
        bounds = _bounds(metadata)
        return _type(base) + (f" ({', '.join(bounds)})" if bounds else "")
    if origin in (Union, types.UnionType):
        kinds = [_type(a) for a in args if a is not type(None)]
        return " or ".join(kinds) + (" or none" if type(None) in args else "")
    if origin is Literal:
        return " or ".join(f'"{a}"' for a in args)
    if origin is list:
        return "list of " + " or ".join(_type(a) for a in args)
    return _plain_type(annotation)


def _plain_type(annotation: Any) -> str:
    if annotation is SecretStr:
        return "str (secret)"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "{" + ", ".join(annotation.model_fields) + "}"  # a table in shesha.toml
    return str(getattr(annotation, "__name__", annotation))


def _default(info: FieldInfo) -> str:
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value!r}`"


def _cell(text: str) -> str:
    """Text for a table cell: `|` would end the cell, `<` start an HTML tag."""
    return text.replace("|", "\\|").replace("<", "&lt;")


def settings_reference() -> str:
    """A Markdown table: each setting, its variable, type, default and description."""
    rows = [
        "| setting | environment variable | type | default | description |",
        "|---|---|---|---|---|",
    ]
    for name, info in Settings.model_fields.items():
        bounds = _bounds(info.metadata)
        kind = _type(info.annotation) + (f" ({', '.join(bounds)})" if bounds else "")
        rows.append(
            f"| `{name}` | `{ENV_PREFIX}{name.upper()}` | {_cell(kind)} | {_default(info)} "
            f"| {_cell(info.description or '')} |"
        )
    return "\n".join(rows) + "\n"
