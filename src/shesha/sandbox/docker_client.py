"""Connecting to the Docker daemon. shesha never installs or starts Docker itself."""

from __future__ import annotations

import os

from docker.errors import DockerException

import docker
from shesha.errors import SandboxUnavailableError

DOCKER_HINT = (
    "Start Docker (e.g. `sudo systemctl start docker`, or Docker Desktop), or point "
    "DOCKER_HOST at a daemon you can reach. In a shesha checkout, `make setup` "
    "(scripts/ensure-docker.sh) installs and starts one on Debian-like machines."
)


def daemon_address() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock (the default)"


def connect(timeout: float = 30.0) -> docker.DockerClient:
    """A client for the daemon that ``docker.from_env()`` finds, checked with a ping.

    Raises :class:`SandboxUnavailableError` with what to do when no daemon answers.
    """
    try:
        client = docker.from_env(timeout=int(max(timeout, 1)))
        client.ping()
    except DockerException as e:
        raise SandboxUnavailableError(
            f"No Docker daemon answers at {daemon_address()}: {e}", hint=DOCKER_HINT
        ) from e
    return client
