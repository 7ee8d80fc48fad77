"""The ``shesha`` command: a plain question to a running server goes the light way
(``shesha.remote_ask``, the standard library alone); every other command, and a
question no server takes, goes to the full CLI (``shesha.cli``: typer, rich, the engine
when it runs in this process)."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["ask"]:  # the other commands do not load the light path at all
        from shesha.remote_ask import run  # noqa: PLC0415  before the full CLI, instead of it

        code = run(sys.argv[1:])
        if code is not None:
            sys.exit(code)
    from shesha.cli import main as full  # noqa: PLC0415  only when the light path declines

    full()
