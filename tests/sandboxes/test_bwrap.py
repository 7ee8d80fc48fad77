"""What only the bubblewrap sandbox has to prove: its seccomp filter and its bounds."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator

import pytest

from shesha.errors import SandboxUnavailableError
from shesha.sandbox import InMemoryCorpus, SandboxLimits, SandboxPool
from shesha.sandbox.bwrap import SPAWN_TRIES, BwrapSandbox, isolation, retrying_spawn
from shesha.sandbox.seccomp import program

pytestmark = pytest.mark.bwrap

DOCS = InMemoryCorpus([("a.txt", "alpha")])


@pytest.fixture(scope="module")
def bwrap_pool(bwrap_ready: None, test_limits: SandboxLimits) -> Iterator[SandboxPool]:
    with SandboxPool(1, factory=BwrapSandbox.factory(test_limits)) as p:
        yield p


def run(pool: SandboxPool, code: str) -> str:
    with pool.acquire(DOCS) as s:
        result = s.execute(code)
    assert result.status == "ok", result.output
    return result.stdout


@pytest.mark.skipif(program() is None, reason="the seccomp filter covers x86_64 only")
def test_the_seccomp_filter_refuses_namespace_escapes_and_odd_sockets(
    bwrap_pool: SandboxPool,
) -> None:
    code = (
        "import ctypes, errno, os, socket\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "def call(nr, *args):\n"
        "    ok = libc.syscall(nr, *args) == 0\n"
        "    return 'allowed' if ok else errno.errorcode[ctypes.get_errno()]\n"
        "print('unshare', call(272, 0x00020000))\n"  # CLONE_NEWNS
        "print('ptrace', call(101, 0, 0, 0, 0))\n"
        "print('bpf', call(321, 0, 0, 0))\n"
        "print('x32 getpid', call(0x40000000 + 39))\n"
        "for family in (socket.AF_PACKET, socket.AF_INET):\n"
        "    try:\n"
        "        socket.socket(family, socket.SOCK_DGRAM).close()\n"
        "        print(family.name, 'allowed')\n"
        "    except OSError as e:\n"
        "        print(family.name, errno.errorcode[e.errno])\n"
    )
    seen = dict(line.split(" ", 1) for line in run(bwrap_pool, code).splitlines())
    assert seen == {
        "unshare": "EPERM",
        "ptrace": "EPERM",
        "bpf": "EPERM",
        "x32": "getpid EPERM",
        "AF_PACKET": "EAFNOSUPPORT",
        "AF_INET": "allowed",  # only loopback in the namespace: nowhere to go
    }


def test_tmp_is_bounded_and_files_are_limited_in_size(
    bwrap_pool: SandboxPool, test_limits: SandboxLimits
) -> None:
    code = (
        "import errno\nchunk = b'x' * 2**20\nwritten = 0\n"
        "try:\n"
        "    with open('/tmp/big', 'wb') as f:\n"
        "        for _ in range(1000):\n"
        "            f.write(chunk)\n"
        "            f.flush()\n"
        "            written += 1\n"
        "except OSError as e:\n"
        "    print(errno.errorcode[e.errno], written)\n"
        "import os\nos.remove('/tmp/big')\n"
    )
    error, written = run(bwrap_pool, code).split()
    assert error in {"ENOSPC", "EFBIG"}
    assert int(written) <= max(test_limits.tmpfs_mb, test_limits.file_size_mb)


def test_the_isolation_line_says_what_holds_here() -> None:
    line = isolation()
    assert line.startswith("bubblewrap: user, PID, network")
    assert ("cgroup" in line) or ("rlimits" in line)


def _child_whose_setup_fails(times: int) -> tuple[list[int], Callable[[int], str]]:
    """An attempt that starts a real child process whose setup between fork and exec
    fails the first ``times`` times, writing why to the report pipe, as joining a
    control group does when it fails."""
    tries: list[int] = []

    def attempt(report: int) -> str:
        tries.append(report)
        failing = len(tries) <= times

        def setup() -> None:
            if failing:
                os.write(report, b"No space left on device (/sys/fs/cgroup/pids/x/cgroup.procs)")
                raise OSError(28, "No space left on device")

        done = subprocess.run(["true"], preexec_fn=setup, check=True)
        return f"started, rc {done.returncode}"

    return tries, attempt


def test_a_start_that_fails_before_exec_is_tried_again_then_said_plainly() -> None:
    tries, attempt = _child_whose_setup_fails(times=1)
    assert retrying_spawn(attempt) == "started, rc 0"
    assert len(tries) == 2
    tries, attempt = _child_whose_setup_fails(times=SPAWN_TRIES)
    with pytest.raises(SandboxUnavailableError) as failed:
        retrying_spawn(attempt)
    assert len(tries) == SPAWN_TRIES
    assert "No space left on device (/sys/fs/cgroup/pids/x/cgroup.procs)" in failed.value.message
    assert f"({SPAWN_TRIES} tries)" in failed.value.message


@pytest.fixture
def many_open_files() -> Iterator[int]:
    """The host holding more files open than a sandbox may (a busy server, a Ray driver)."""
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(400)]
    yield len(held)
    for fd in held:
        os.close(fd)


def test_a_sandbox_starts_while_the_host_holds_more_files_than_it_may(
    bwrap_ready: None, test_limits: SandboxLimits, many_open_files: int
) -> None:
    # Regression: the child set RLIMIT_NOFILE before it joined its control group, so
    # opening cgroup.procs failed with "Too many open files" once the host's own open
    # files went past the sandbox's limit.
    limits = test_limits.model_copy(update={"open_files": 64})
    assert many_open_files > limits.open_files
    with SandboxPool(1, factory=BwrapSandbox.factory(limits)) as pool:
        out = run(
            pool,
            "import resource, os\n"
            "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0],"
            " len(os.listdir('/proc/self/fd')))",
        )
    soft, open_now = map(int, out.split())
    assert soft == 64  # the sandbox's limit still holds
    assert open_now < 16  # and none of the host's files came in
