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
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

import docker
from shesha import Shesha
from shesha.cli import app
from shesha.errors import SandboxUnavailableError
from shesha.sandbox import InMemoryCorpus, SandboxLimits, SandboxPool, default_image, runner_hash
from shesha.sandbox.hosts import DockerHosts, HostSpec, TLSSettings, connect_host
from shesha.sandbox.image import RUNNER_LABEL
from shesha.testing import FunctionModel

pytestmark = pytest.mark.docker

DOCS = InMemoryCorpus([("one.txt", "The first document."), ("two.md", "# Second\nmore text")])
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def make_certificates(folder: Path) -> tuple[TLSSettings, list[str]]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, with openssl:
    the client's TLS settings, and the daemon's TLS arguments."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
            "-keyout", "ca-key.pem", "-out", "ca.pem")  # fmt: skip
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    (folder / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for who in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={who}",
                "-keyout", f"{who}-key.pem", "-out", f"{who}.csr")  # fmt: skip
        openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
                "-CAcreateserial", "-days", "1", "-extfile", f"{who}.ext",
                "-out", f"{who}.pem")  # fmt: skip
    tls = TLSSettings(
        ca=str(folder / "ca.pem"),
        cert=str(folder / "client.pem"),
        key=str(folder / "client-key.pem"),
    )
    daemon = ["--tlsverify", "--tlscacert", str(folder / "ca.pem"), "--tlscert",
              str(folder / "server.pem"), "--tlskey", str(folder / "server-key.pem")]  # fmt: skip
    return tls, daemon


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Daemon:
    """A second dockerd, started and stopped by the tests: on a unix socket, or on a
    loopback TCP port with TLS (``tls`` the client's settings, ``tls_args`` the daemon's)."""

    root: Path
    proc: subprocess.Popen[bytes] | None = None
    port: int | None = None
    tls: TLSSettings | None = None
    tls_args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        if self.port is not None:
            return f"tcp://127.0.0.1:{self.port}"
        return f"unix://{self.root}/docker.sock"

    def start(self) -> None:
        log = (self.root / "dockerd.log").open("ab")
        self.proc = subprocess.Popen(
            [
                "dockerd",
                "--host",
                self.url,
                *self.tls_args,
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
                connect_host(HostSpec(self.url), self.tls).close()
                return
            except SandboxUnavailableError:
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


def _can_run_a_daemon() -> None:
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        reason = "a second Docker daemon needs dockerd and root"
        if IN_CI:
            pytest.fail(f"CI=true, so the multi-host tests must run, but: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def second(docker_client: docker.DockerClient) -> Iterator[Daemon]:
    _can_run_a_daemon()
    yield from _running(Daemon(Path(f"/tmp/shesha-dockerd-{os.getpid()}")))


@pytest.fixture(scope="module")
def over_tls(docker_client: docker.DockerClient) -> Iterator[Daemon]:
    """A daemon on a loopback TCP port that takes only clients with our certificate."""
    _can_run_a_daemon()
    root = Path(f"/tmp/shesha-dockerd-tls-{os.getpid()}")
    tls, args = make_certificates(root / "certs")
    yield from _running(Daemon(root, port=free_port(), tls=tls, tls_args=args))


def _running(daemon: Daemon) -> Iterator[Daemon]:
    root = daemon.root
    root.mkdir(exist_ok=True)
    try:
        daemon.start()
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
    with SandboxPool(6, factory=hosts, on_close=hosts.close) as pool:
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
    with SandboxPool(2, factory=hosts, on_close=hosts.close) as pool:
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


def test_a_tcp_host_is_reached_over_tls_and_refused_without_it(
    over_tls: Daemon, limits: SandboxLimits, tmp_path: Path
) -> None:
    specs = [HostSpec("unix:///var/run/docker.sock", 0.01), HostSpec(over_tls.url, 100)]
    hosts = DockerHosts(specs, default_image(), limits, tls=over_tls.tls)  # copied from local
    with (
        SandboxPool(1, factory=hosts, on_close=hosts.close) as pool,
        pool.acquire(DOCS) as s,
    ):
        assert s.execute("print(len(context))").stdout == "2\n"
        assert hosts.host_of(s.sandbox) == over_tls.url
    bare = DockerHosts([HostSpec(over_tls.url)], default_image(), limits)
    with pytest.raises(SandboxUnavailableError, match="No Docker host can start a sandbox"):
        bare()  # no client certificate: the daemon refuses, and the error says where
    assert over_tls.tls is not None
    env = {
        "SHESHA_HOME": str(tmp_path / "home"),
        "SHESHA_DOCKER_HOSTS": over_tls.url,
        "SHESHA_DOCKER_TLS_CA": str(over_tls.tls.ca),
        "SHESHA_DOCKER_TLS_CERT": str(over_tls.tls.cert),
        "SHESHA_DOCKER_TLS_KEY": str(over_tls.tls.key),
    }
    r = CliRunner().invoke(app, ["doctor", "--json"], env=env)
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks[f"docker host {over_tls.url}"]["ok"] is True
