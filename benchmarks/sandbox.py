"""Sandbox benchmark: round trips, loads, acquire, cold start, pool start and stop.

    python benchmarks/sandbox.py                    # Docker, a readable table
    python benchmarks/sandbox.py --backend bwrap    # bubblewrap
    python benchmarks/sandbox.py --json             # one JSON object

Docker needs a daemon and the sandbox image (`make sandbox-image`); bwrap needs
bubblewrap (`make bwrap`).
"""

from __future__ import annotations

import argparse
import select
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

from report import emit

import docker
from shesha.sandbox import (
    DockerSandbox,
    InMemoryCorpus,
    SandboxLimits,
    SandboxPool,
    connect,
    default_image,
    docker_pool,
)
from shesha.sandbox.bwrap import BwrapSandbox, interpreter
from shesha.sandbox.bwrap import command as bwrap_command
from shesha.sandbox.bwrap import isolation as bwrap_isolation
from shesha.sandbox.container import host_config
from shesha.sandbox.execution import run_to_end
from shesha.sandbox.protocol import socket_from_attach
from shesha.sandbox.runner_client import RunnerClient

TARGETS: dict[str, tuple[str, float]] = {
    "exec_roundtrip_ms_p50": ("<=", 0.5),
    "exec_vs_floor": ("<=", 3.0),
    "acquire_ms_p50": ("<=", 5.0),
    "release_ms_p50": ("<=", 10.0),
    "requery_bytes_sent": ("<=", 0),
    "load_100mb_s": ("<=", 1.0),
    "pool_ready_s": ("<=", 1.0),
    "pool_stop_s": ("<=", 1.0),
}

# The physical floor: a bare read-a-line, exec, write-a-line loop, 15 lines.
FLOOR_LOOP = """
import sys
ns = {}
inp = sys.stdin.buffer
out = sys.stdout.buffer
while True:
    line = inp.readline()
    if not line:
        break
    try:
        exec(line.decode(), ns)
        reply = b"ok\\n"
    except Exception as e:
        reply = repr(e).encode() + b"\\n"
    out.write(reply)
    out.flush()
"""


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(fn: Callable[[], object], n: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


class Floor(Protocol):
    def roundtrip(self) -> bytes: ...

    def close(self) -> None: ...


class BwrapFloorLoop:
    """The bare loop under the same bubblewrap command, over a socket pair as the runner."""

    def __init__(self, limits: SandboxLimits) -> None:
        argv = bwrap_command(limits, None)
        argv = [*argv[: argv.index("--")], "--", interpreter(), "-I", "-S", "-c", FLOOR_LOOP]
        self.sock, child = socket.socketpair()
        self.proc = subprocess.Popen(argv, stdin=child.fileno(), stdout=child.fileno())
        child.close()
        self.reader = self.sock.makefile("rb")

    def roundtrip(self, line: bytes = b"x = 1\n") -> bytes:
        self.sock.sendall(line)
        return self.reader.readline()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.sock.close()


class FloorLoop:
    """The bare loop in a container of the same image, over the same attach socket."""

    def __init__(self, client: docker.DockerClient, limits: SandboxLimits) -> None:
        self.client = client
        created = client.api.create_container(
            image=default_image(),
            entrypoint=["python3", "-I", "-c", FLOOR_LOOP],
            stdin_open=True,
            user="65532:65532",
            host_config=host_config(client, limits),
        )
        self.cid = created["Id"]
        self._attached = client.api.attach_socket(
            self.cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        )
        self.sock = socket_from_attach(self._attached)
        client.api.start(self.cid)
        self.raw = bytearray()
        self.out = bytearray()
        self.left = 0

    def roundtrip(self, line: bytes = b"x = 1\n") -> bytes:
        self.sock.sendall(line)
        while (end := self.out.find(b"\n")) < 0:
            self._read_more()
        reply = bytes(self.out[:end])
        del self.out[: end + 1]
        return reply

    def _read_more(self) -> None:
        select.select([self.sock], [], [], 10)
        data = self.sock.recv(65536)
        if not data:
            raise RuntimeError("the floor container closed its stream")
        self.raw += data
        while self.raw:  # strip Docker's 8-byte stream headers
            if self.left == 0:
                if len(self.raw) < 8:
                    return
                (self.left,) = struct.unpack(">L", self.raw[4:8])
                del self.raw[:8]
            take = min(self.left, len(self.raw))
            self.out += self.raw[:take]
            del self.raw[:take]
            self.left -= take

    def close(self) -> None:
        self.sock.close()
        self.client.api.remove_container(self.cid, force=True)


def bench(rounds: int, backend: str) -> dict[str, Any]:
    limits = SandboxLimits(memory_mb=2048, exec_timeout_s=60)
    client = connect() if backend == "docker" else None
    results: dict[str, Any] = {"rounds": rounds, "backend": backend}
    if client is not None:
        results["image"] = default_image()
    else:
        results["isolation"] = bwrap_isolation()

    def launch() -> RunnerClient:
        if client is not None:
            return DockerSandbox.launch(client, default_image(), limits)
        return BwrapSandbox.launch(limits)

    def pool() -> SandboxPool:
        if client is not None:
            return docker_pool(3, client=client, limits=limits)
        return SandboxPool(3, factory=BwrapSandbox.factory(limits), kind="bwrap")

    # Cold start: one sandbox until it answers a ping.
    t0 = time.perf_counter()
    single = launch()
    results["cold_start_s"] = time.perf_counter() - t0

    # Loads of 10 MB and 100 MB.
    for mb in (10, 100):
        corpus = InMemoryCorpus(
            [(f"d{i}.txt", "lorem ipsum " * (mb * 2**20 // 120)) for i in range(10)]
        )
        t0 = time.perf_counter()
        single.load(corpus)
        results[f"load_{mb}mb_s"] = time.perf_counter() - t0

    # Execution round trips on the warm container, and the floor in the same run.
    small = InMemoryCorpus([("a.txt", "alpha")])
    single.load(small)
    exec_samples = timed(lambda: run_to_end(single, "x = 1"), rounds)
    single.kill()
    floor: Floor = FloorLoop(client, limits) if client is not None else BwrapFloorLoop(limits)
    floor_samples = timed(floor.roundtrip, rounds)
    floor.close()
    results["exec_roundtrip_ms_p50"] = percentile(exec_samples, 0.5) * 1000
    results["exec_roundtrip_ms_p95"] = percentile(exec_samples, 0.95) * 1000
    results["floor_roundtrip_ms_p50"] = percentile(floor_samples, 0.5) * 1000
    results["exec_vs_floor"] = results["exec_roundtrip_ms_p50"] / results["floor_roundtrip_ms_p50"]

    # The pool: ready, acquire (warm, project loaded), re-query bytes, stop.
    t0 = time.perf_counter()
    running = pool().start()
    results["pool_ready_s"] = time.perf_counter() - t0
    corpus = InMemoryCorpus([("doc.txt", "some text " * 10_000)])
    with running.acquire(corpus) as session:
        results["first_query_bytes_sent"] = session.document_bytes_sent

    # A query's life: acquire, run code, release. Release ends the query (its worker,
    # processes and files are gone, a fresh worker waits); acquire then only checks.
    acquire_samples, release_samples = [], []
    for _ in range(max(rounds // 5, 50)):
        t0 = time.perf_counter()
        session = running.acquire(corpus)
        acquire_samples.append(time.perf_counter() - t0)
        session.execute("open('scratch.txt', 'w').write('x'); x = 1")
        t0 = time.perf_counter()
        session.close()
        release_samples.append(time.perf_counter() - t0)
    results["acquire_ms_p50"] = percentile(acquire_samples, 0.5) * 1000
    results["release_ms_p50"] = percentile(release_samples, 0.5) * 1000
    with running.acquire(corpus) as session:
        results["requery_bytes_sent"] = session.document_bytes_sent
    t0 = time.perf_counter()
    running.close()
    results["pool_stop_s"] = time.perf_counter() - t0
    if client is not None:
        client.close()

    results["exec_roundtrip_ms_mean"] = statistics.fmean(exec_samples) * 1000
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in results.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--rounds", type=int, default=1000, help="round trips to time")
    parser.add_argument("--backend", choices=["docker", "bwrap"], default="docker")
    args = parser.parse_args()
    results = bench(args.rounds, args.backend)
    targets = dict(TARGETS)
    if args.backend == "bwrap":
        # The ratio measures the runner against its transport. Docker's attach stream costs
        # ~0.1 ms, which the floor pays too; bwrap's socket pair costs ~0.02 ms, so the
        # ratio is the runner's own per-execution work (~0.1 ms), not transport overhead.
        # The absolute round trip keeps its target.
        del targets["exec_vs_floor"]
    emit(results, targets, args.json)
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(None)
    sys.exit(main())
