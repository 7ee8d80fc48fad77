"""The `shesha` command line."""

from __future__ import annotations

import typer

from shesha import __version__

app = typer.Typer(
    name="shesha",
    help="Ask questions of large document sets with a Recursive Language Model.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Print shesha's version."""
    typer.echo(__version__)


@app.callback()
def _root() -> None:
    """Ask questions of large document sets with a Recursive Language Model."""


def main() -> None:
    app()
