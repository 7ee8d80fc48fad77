"""Which sandbox a Shesha uses: ``auto`` takes Docker when its daemon answers, else
bubblewrap when it can make sandboxes here, else says how to get either."""

from __future__ import annotations

from typing import Literal

from shesha.errors import SandboxUnavailableError, SheshaError
from shesha.sandbox.bwrap import INSTALL_HINT, bwrap_problem
from shesha.sandbox.docker_client import connect

Chosen = Literal["docker", "bwrap"]


def choose(wanted: str) -> Chosen:
    """The sandbox to use for the ``sandbox`` setting (auto, docker or bwrap)."""
    if wanted == "docker":
        return "docker"
    if wanted == "bwrap":
        problem = bwrap_problem()
        if problem is not None:
            raise SandboxUnavailableError(f"sandbox = bwrap, but {problem}.", hint=INSTALL_HINT)
        return "bwrap"
    docker_said = docker_problem()
    if docker_said is None:
        return "docker"
    bwrap_said = bwrap_problem()
    if bwrap_said is None:
        return "bwrap"
    raise SandboxUnavailableError(
        f"No sandbox to run code in: Docker does not answer ({docker_said}), and {bwrap_said}.",
        hint="Start Docker (and `make sandbox-image`), or install bubblewrap "
        "(apt install bubblewrap): either isolates the model's code.",
    )


def docker_problem() -> str | None:
    """None when a Docker daemon answers; else why not, in a line."""
    try:
        client = connect(timeout=5)
    except SheshaError as e:
        return str(e).split("\n")[0]
    client.close()
    return None
