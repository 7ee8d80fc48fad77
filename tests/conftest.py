"""Shared fixtures. Docker tests run for real in CI (CI=true) and fail there when
Docker is missing; elsewhere they skip with the reason."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import docker
from shesha.config import load_settings, models_dir
from shesha.errors import SandboxUnavailableError
from shesha.local.fetch import is_verified
from shesha.local.registry import BUILTIN, ModelRegistry
from shesha.local.server import server_installed
from shesha.parser.ocr import ocr_problem
from shesha.sandbox import SandboxLimits, SandboxPool, connect, default_image, docker_pool
from shesha.sandbox.bwrap import bwrap_problem
from shesha.testing import process_sandboxes

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true, so Docker tests must run, but: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = connect(timeout=10)
    except SandboxUnavailableError as e:
        _unavailable(str(e))
    try:
        client.images.get(default_image())
    except docker.errors.ImageNotFound:
        _unavailable(f"the sandbox image {default_image()} is missing: run `make sandbox-image`")
    yield client
    client.close()


@pytest.fixture(scope="session")
def test_limits() -> SandboxLimits:
    return SandboxLimits(memory_mb=256, pids=64, exec_timeout_s=20, max_output_chars=4000)


@pytest.fixture(scope="module")
def pool(docker_client: docker.DockerClient, test_limits: SandboxLimits) -> Iterator[SandboxPool]:
    with docker_pool(3, client=docker_client, limits=test_limits) as p:
        yield p


@pytest.fixture(scope="session")
def bwrap_ready() -> None:
    """bubblewrap can make sandboxes here: required in CI, skipped elsewhere."""
    problem = bwrap_problem()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"CI=true, so bubblewrap tests must run, but: {problem}", pytrace=False)
        pytest.skip(problem)


@pytest.fixture(scope="session")
def tesseract_ready() -> None:
    """Tesseract and the languages the tests read (eng, deu): required in CI, skipped
    elsewhere (`make ocr` installs them)."""
    problem = ocr_problem("eng+deu")
    if problem is not None:
        if IN_CI:
            pytest.fail(f"CI=true, so OCR tests must run, but: {problem}", pytrace=False)
        pytest.skip(problem)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        if IN_CI:
            pytest.fail(f"CI=true but {SHARED} is missing", pytrace=False)
        pytest.skip(f"{SHARED} is absent (a user's clone): real-document tests skipped")
    return SHARED


@pytest.fixture(scope="session")
def local_models() -> ModelRegistry:
    """The real local models (make local-model): required in CI, skipped elsewhere."""
    if not server_installed(choice="llama-server"):
        _unavailable("the local model server (xllamacpp) is not installed: run `make local-model`")
    registry = ModelRegistry(models_dir(load_settings()))
    for model in BUILTIN.values():
        if not is_verified(registry.dir / model.filename, model.sha256):
            _unavailable(f"{model.name} is not fetched into {registry.dir}: run `make local-model`")
    return registry


@pytest.fixture(scope="session")
def sandboxes() -> Iterator[SandboxPool]:
    """Three warm runners as local processes (no Docker, no isolation): the sandboxes of
    every in-process test of the API, CLI, server, MCP and web page."""
    with process_sandboxes(3) as pool:
        yield pool
