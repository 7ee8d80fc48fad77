"""The `shesha` command line (typer + rich). Answers go to stdout, progress to stderr.

Exit codes: 0 answered (or done); 1 error; 2 usage; 3 a budget or iteration limit was
reached (the answer so far, if any, is still printed).
"""

from __future__ import annotations

import traceback
from typing import Any

import typer
from typer.core import TyperGroup

from shesha import __version__
from shesha.cli import ask, chat, doctor, evals, manage, mcp, models, serve
from shesha.cli.common import print_error, state
from shesha.errors import SheshaError
from shesha.exits import EXIT_ERROR

HELP = """Ask questions of large document sets with a Recursive Language Model.

The model explores your documents by writing Python in a network-isolated sandbox
(Docker, or bubblewrap where there is no Docker), and calls sub-models on the pieces that
need reading; questions that fit the window are read whole, and longer ones through their
best passages.

Exit codes: 0 answered, 1 error, 2 usage, 3 a budget or iteration limit was reached.
"""


class _Commands(TyperGroup):
    """Shows shesha's own errors as one line and a hint (with --verbose, the traceback
    too), exit 1, wherever the app is run from: ``shesha``, or a test's CliRunner."""

    def invoke(self, ctx: Any) -> Any:  # click.Context (typer vendors its own click)
        try:
            return super().invoke(ctx)
        except SheshaError as e:
            if state.verbose:
                traceback.print_exc()
            print_error(str(e))
            raise typer.Exit(EXIT_ERROR) from e


app = typer.Typer(
    name="shesha",
    cls=_Commands,
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    state.verbose = state.verbose or verbose


app.command("ask")(ask.ask)
app.command("chat")(chat.chat)
app.command("add")(manage.add)
app.command("docs")(manage.docs)
app.command("traces")(manage.traces)
app.command("trace")(manage.trace)
app.command("init")(manage.init)
app.command("doctor")(doctor.doctor)
app.add_typer(manage.projects_app, name="projects")
app.add_typer(models.models_app, name="models")
app.add_typer(evals.eval_app, name="eval")
app.add_typer(serve.serve_app, name="serve")
app.add_typer(mcp.mcp_app, name="mcp")
app.command("view")(serve.view)


@app.command("version")
def version_command() -> None:
    """Print shesha's version."""
    typer.echo(__version__)


def main() -> None:
    """The ``shesha`` command. Typer handles usage errors (exit 2) and exit codes."""
    app()
