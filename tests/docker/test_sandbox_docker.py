"""The sandbox against the real Docker daemon: hardening, limits, and the pool.

No test here sends traffic anywhere but 127.0.0.1.
"""

from __future__ import annotations

import socket
import time

import pytest

import docker
from shesha.errors import SandboxImageError
from shesha.sandbox import (
    DockerSandbox,
    InMemoryCorpus,
    SandboxLimits,
    SandboxPool,
    default_image,
    docker_pool,
)
from shesha.sandbox.container import LABEL_OWNER, LABEL_SANDBOX

pytestmark = pytest.mark.docker

DOCS = InMemoryCorpus([("one.txt", "The first document."), ("two.md", "# Second\nmore text")])


def run(pool: SandboxPool, code: str, timeout: float | None = None) -> str:
    with pool.acquire(DOCS) as s:
        result = s.execute(code, timeout=timeout)
    assert result.status == "ok", result.output
    return result.stdout


# -- hardening: configuration ---------------------------------------------------------


def test_containers_run_with_the_full_hardening(
    pool: SandboxPool, docker_client: docker.DockerClient, test_limits: SandboxLimits
) -> None:
    hostname = run(pool, "import socket; print(socket.gethostname())").strip()
    found = docker_client.api.containers(filters={"label": LABEL_SANDBOX})
    ids = [c["Id"] for c in found if c["Id"].startswith(hostname)]
    assert ids, "the container that ran the code is labelled as a shesha sandbox"
    info = docker_client.api.inspect_container(ids[0])
    hc = info["HostConfig"]
    assert hc["NetworkMode"] == "none"
    assert hc["ReadonlyRootfs"] is True
    assert hc["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in hc["SecurityOpt"]
    assert hc["PidsLimit"] == test_limits.pids
    assert hc["Memory"] == test_limits.memory_mb * 1024 * 1024
    assert hc["MemorySwap"] == hc["Memory"]
    assert hc["NanoCpus"] == int(test_limits.cpus * 1e9)
    assert {u["Name"] for u in hc["Ulimits"]} == {"nofile", "fsize"}
    assert hc["Init"] is False  # the runner is PID 1: no other process to take over
    assert info["Config"]["Cmd"] == ["--scratch", "/tmp"]
    assert "noexec" in hc["Tmpfs"]["/tmp"]
    assert info["Config"]["User"] == "65532:65532"


# -- hardening: behaviour (the attack suite is tests/sandboxes/test_attacks.py) --------


def test_tmp_is_noexec(pool: SandboxPool) -> None:
    code = """
import os
with open('/tmp/ok.sh', 'w') as f:
    f.write('#!/bin/sh\\necho ran\\n')
os.chmod('/tmp/ok.sh', 0o755)
try:
    os.execv('/tmp/ok.sh', ['/tmp/ok.sh'])
except OSError as e:
    print(type(e).__name__)
"""
    assert run(pool, code) == "PermissionError\n"


def test_a_300mb_document_set_loads(docker_client: docker.DockerClient) -> None:
    texts = [(f"doc{i:02d}.txt", chr(ord("a") + i % 26) * (10 * 2**20)) for i in range(30)]
    corpus = InMemoryCorpus(texts, version="big-300mb")
    limits = SandboxLimits(memory_mb=1536, exec_timeout_s=60)
    with docker_pool(1, client=docker_client, limits=limits) as big, big.acquire(corpus) as s:
        assert s.document_bytes_sent >= 300 * 2**20
        out = s.execute("print(len(context), sum(map(len, context)), context[29][:3])")
    assert out.stdout == f"30 {300 * 2**20} ddd\n"


# -- the image and lifecycle ----------------------------------------------------------


def test_a_runner_of_another_version_is_refused(
    docker_client: docker.DockerClient, test_limits: SandboxLimits
) -> None:
    with pytest.raises(SandboxImageError, match="make sandbox-image"):
        DockerSandbox.launch(docker_client, default_image(), test_limits, expected_runner="0" * 64)


def test_a_missing_image_says_how_to_build_it(
    docker_client: docker.DockerClient, test_limits: SandboxLimits
) -> None:
    with pytest.raises(SandboxImageError, match="make sandbox-image"):
        DockerSandbox.launch(docker_client, "shesha-sandbox:does-not-exist", test_limits)


def test_stop_is_fast_because_signals_reach_the_runner(
    docker_client: docker.DockerClient, test_limits: SandboxLimits
) -> None:
    sandbox = DockerSandbox.launch(docker_client, default_image(), test_limits)
    try:
        started = time.monotonic()
        docker_client.api.stop(sandbox.container_id, timeout=10)
        assert time.monotonic() - started < 3
    finally:
        sandbox.kill()


def test_pool_close_is_fast_and_leaves_no_containers(
    docker_client: docker.DockerClient, test_limits: SandboxLimits
) -> None:
    pool = docker_pool(3, client=docker_client, limits=test_limits).start()
    with pool.acquire(DOCS) as s:
        cid_prefix = s.execute("import socket; print(socket.gethostname())").stdout.strip()
    started = time.monotonic()
    pool.close()
    assert time.monotonic() - started < 3
    left = docker_client.api.containers(all=True, filters={"label": LABEL_SANDBOX})
    assert not [c for c in left if c["Id"].startswith(cid_prefix)]


def test_orphans_of_a_dead_process_are_removed_at_the_next_start(
    docker_client: docker.DockerClient, test_limits: SandboxLimits
) -> None:
    orphan = docker_client.api.create_container(
        default_image(),
        labels={LABEL_SANDBOX: "1", LABEL_OWNER: f"{socket.gethostname()}:999999999:1"},
    )["Id"]
    with docker_pool(1, client=docker_client, limits=test_limits):
        ids = [c["Id"] for c in docker_client.api.containers(all=True)]
    assert orphan not in ids
