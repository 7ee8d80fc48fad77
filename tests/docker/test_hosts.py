"""A sandbox pool over two Docker daemons on this machine: the usual one, and a second
that the tests start with its own socket, data root, exec root and pid file, and no
bridge or iptables of its own (sandboxes have no network). All traffic stays here.

The second daemon starts empty, so the image has to be copied to it; it is then killed
in the middle of a query (as a crashed or unplugged host would be) and brought back.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

import docker
from shesha import Shesha
from shesha.cli import app
from shesha.errors import SandboxUnavailableError
from shesha.sandbox import InMemoryCorpus, SandboxLimits, SandboxPool, default_image, runner_hash
from shesha.sandbox.hosts import DockerHosts, HostSpec
from shesha.sandbox.image import RUNNER_LABEL
from shesha.testing import FunctionModel

pytestmark = pytest.mark.docker

DOCS = InMemoryCorpus([("one.txt", "The first document."), ("two.md", "# Second\nmore text")])
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass
class Daemon:
    """A second dockerd, started and stopped by the tests."""

    root: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.root}/docker.sock"

    def start(self) -> None:
        log = (self.root / "dockerd.log").open("ab")
        self.proc = subprocess.Popen(
            [
                "dockerd",
                "--host",
                self.url,
                "--data-root",
                str(self.root / "data"),
                "--exec-root",
                str(self.root / "exec"),
                "--pidfile",
                str(self.root / "docker.pid"),
                "--bridge",
                "none",
                "--iptables=false",
                "--ip6tables=false",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                docker.DockerClient(base_url=self.url, timeout=5).ping()
                return
            except docker.errors.DockerException:
                time.sleep(0.2)
        lines = (self.root / "dockerd.log").read_text(errors="replace").splitlines()
        said = "\n".join([line for line in lines if "module=grpc" not in line][-15:])
        raise RuntimeError(f"the second dockerd did not answer; its log ends:\n{said}")

    def kill(self) -> None:
        """As a host that crashes or drops off the network: no goodbye. Everything
        of it goes at once, dockerd, its containerd and the container shims, as when a
        machine dies."""
        for pid in self._processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
            self.proc = None
        # What an operator does before restarting a crashed dockerd: it refuses to start
        # while its old pid file is there, and so does containerd (whose dead process may
        # linger as a zombie that nobody reaps).
        (self.root / "docker.pid").unlink(missing_ok=True)
        (self.root / "exec" / "containerd" / "containerd.pid").unlink(missing_ok=True)

    def _processes(self) -> list[int]:
        """dockerd, containerd and the shims: each names this daemon's directory."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes()
                except OSError:
                    continue  # it ended while we looked
                if str(self.root).encode() in cmdline:
                    found.append(int(entry.name))
        return found

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@pytest.fixture(scope="module")
def second(docker_client: docker.DockerClient) -> Iterator[Daemon]:
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        reason = "a second Docker daemon needs dockerd and root"
        if IN_CI:
            pytest.fail(f"CI=true, so the multi-host tests must run, but: {reason}")
        pytest.skip(reason)
    root = Path(f"/tmp/shesha-dockerd-{os.getpid()}")
    root.mkdir()
    daemon = Daemon(root)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()
        daemon.kill()  # the shims of containers started before a kill outlive dockerd
        for mount in reversed(Path("/proc/mounts").read_text().splitlines()):
            target = mount.split()[1]
            if target.startswith(str(root)):
                subprocess.run(["umount", "-l", target], check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def limits(test_limits: SandboxLimits) -> SandboxLimits:
    return test_limits


class Clock:
    """Time the tests move by hand, so that a backoff can pass at once."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_image_is_copied_and_containers_spread_by_weight(
    second: Daemon, limits: SandboxLimits
) -> None:
    client = docker.DockerClient(base_url=second.url)
    assert not client.images.list(name=default_image().split(":")[0])  # it starts empty
    hosts = DockerHosts(
        [HostSpec("unix:///var/run/docker.sock", 1), HostSpec(second.url, 2)],
        default_image(),
        limits,
    )
    with SandboxPool(6, factory=hosts, limits=limits, on_close=hosts.close) as pool:
        counts = hosts.counts()
        copied = client.images.get(default_image())
        with pool.acquire(DOCS) as first:
            assert first.document_bytes_sent > 0
        with pool.acquire(DOCS) as again:
            assert again.document_bytes_sent == 0  # reuse, wherever the container lives
            assert again.execute("print(len(context))").stdout == "2\n"
    assert counts == {"unix:///var/run/docker.sock": 2, second.url: 4}
    assert copied.labels[RUNNER_LABEL] == runner_hash()
    client.close()


def test_a_host_that_dies_mid_query_fails_over_and_comes_back(
    second: Daemon, limits: SandboxLimits
) -> None:
    clock = Clock()
    hosts = DockerHosts(
        [HostSpec("unix:///var/run/docker.sock", 1), HostSpec(second.url, 100)],
        default_image(),
        limits,
        clock=clock,
    )
    with SandboxPool(2, factory=hosts, limits=limits, on_close=hosts.close) as pool:
        with pool.acquire(DOCS) as s:
            assert hosts.host_of(s.sandbox) == second.url
            s.execute("kept = 1")
            result: dict[str, object] = {}
            running = threading.Thread(
                target=lambda: result.update(r=s.execute("import time\ntime.sleep(30)")),
            )
            running.start()
            time.sleep(1)
            started = time.monotonic()
            second.kill()
            running.join(timeout=30)
            assert not running.is_alive(), "the query hung on a dead host"
            lost = result["r"]
            assert time.monotonic() - started < 15
            assert lost.status == "crashed"  # type: ignore[attr-defined]
            assert "restarted" in lost.error  # type: ignore[attr-defined]
            after = s.execute("print(len(context), 'kept' in globals())")
            assert after.stdout == "2 False\n"  # on the other host, documents loaded again
            assert hosts.host_of(s.sandbox) == "unix:///var/run/docker.sock"
        alone = DockerHosts([HostSpec(second.url)], default_image(), limits)
        started = time.monotonic()
        with pytest.raises(SandboxUnavailableError, match="No Docker host can start a sandbox"):
            alone()  # with no host left: a clear error, at once
        assert time.monotonic() - started < 15
        second.start()
        clock.now += 120  # past any backoff
        back = hosts()
        try:
            assert hosts.host_of(back) == second.url
        finally:
            back.kill()


def test_shesha_reads_docker_hosts_from_its_settings(
    second: Daemon, limits: SandboxLimits, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("hello")

    def model(messages: list[dict[str, str]], name: str) -> str:
        steps = sum(1 for m in messages if m["role"] == "assistant")
        return "```repl\nprint(len(context))\n```" if steps == 0 else "FINAL(1)"

    with Shesha(
        home=str(tmp_path / "home"),
        llm=FunctionModel(model),
        pool_size=2,
        docker_hosts=["unix:///var/run/docker.sock", {"url": second.url, "weight": 1}],
    ) as sh:
        p = sh.project("p")
        p.add([tmp_path / "a.txt"])
        r = p.query("How many?")
        assert r.sandbox == "docker"
        assert "on 2 hosts" in (r.isolation or "")
        assert r.answer == "1"


def test_doctor_checks_every_docker_host(second: Daemon, tmp_path: Path) -> None:
    fresh = Daemon(tmp_path / "never-started")  # an address where nothing answers
    hosts = f"unix:///var/run/docker.sock,{second.url},{fresh.url}"
    env = {"SHESHA_HOME": str(tmp_path / "home"), "SHESHA_DOCKER_HOSTS": hosts}
    r = CliRunner().invoke(app, ["doctor", "--json"], env=env)
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    local = checks["docker host unix:///var/run/docker.sock"]
    assert local["ok"] is True
    assert f"runner {runner_hash()[:12]}" in local["detail"]
    assert checks[f"docker host {second.url}"]["ok"] is True
    gone = checks[f"docker host {fresh.url}"]
    assert gone["ok"] is False
    assert "No Docker daemon answers" in gone["detail"]
    assert "docker_hosts" in gone["fix"]
    assert r.exit_code == 1  # a host that does not answer is a failed check
