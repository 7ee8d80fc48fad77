"""The runner as a local child process: the same runner and frames as a container, with
NO isolation. Code it runs can read your files and reach the network.

What does hold, as in every sandbox: each query's code runs in a worker process of its
own, forked from a runner that never runs code; when the query ends, that worker and
everything it started are killed and the scratch directory (a private temporary
directory, the code's working directory and ``TMPDIR``) is emptied. So a query of your
own pipeline cannot disturb the next one by accident. It is not a security boundary: the
code runs as your user, can write anywhere you can, and shares your IPC namespace.

It exists so that tests and examples can run the whole engine, the real runner
included, without Docker, and with code they wrote themselves. Never give it code or
documents you do not trust; use the Docker sandbox for that.

    pool = SandboxPool(1, factory=ProcessSandbox.factory())
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from io import BufferedReader
from typing import cast

from shesha.errors import SandboxUnavailableError
from shesha.sandbox.image import RUNNER_PATH
from shesha.sandbox.limits import SandboxLimits
from shesha.sandbox.protocol import STDERR_TAIL, FrameChannel
from shesha.sandbox.runner import descendants
from shesha.sandbox.runner_client import ExitState, RunnerClient, check_runner


class _StderrTail:
    """Reads a child's stderr to the end, keeping only its last bytes."""

    def __init__(self, stream: BufferedReader) -> None:
        self._stream = stream
        self._tail = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._drain, name="shesha-runner-stderr", daemon=True
        )
        self._thread.start()

    def _drain(self) -> None:
        while chunk := self._stream.read1(65536):
            with self._lock:
                self._tail += chunk
                del self._tail[:-STDERR_TAIL]

    def text(self) -> str:
        with self._lock:
            return self._tail.decode("utf-8", "replace")


class ProcessSandbox(RunnerClient):
    """The runner in a child process of this one, spoken to over a socket pair."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        channel: FrameChannel,
        limits: SandboxLimits,
        scratch: str | None = None,
    ) -> None:
        super().__init__(channel, limits)
        self._proc = proc
        self._scratch = scratch
        assert proc.stderr is not None
        self._stderr = _StderrTail(cast(BufferedReader, proc.stderr))

    @classmethod
    def launch(
        cls,
        limits: SandboxLimits | None = None,
        *,
        command: Sequence[str] | None = None,
        ready_timeout: float = 30.0,
    ) -> ProcessSandbox:
        """Start ``command`` (default: this interpreter running the runner) and wait
        until it answers a ping."""
        limits = limits or SandboxLimits()
        scratch = tempfile.mkdtemp(prefix="shesha-sandbox-")
        argv = [*(command or [sys.executable, "-I", str(RUNNER_PATH)]), "--scratch", scratch]
        try:
            proc, channel = spawn(
                argv,
                limits,
                _rlimits(limits),
                cwd=scratch,
                env={"TMPDIR": scratch, "HOME": scratch},
            )
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        sandbox = cls(proc, channel, limits, scratch)
        check_runner(sandbox, f"process {argv[0]}", ready_timeout)
        return sandbox

    @classmethod
    def factory(
        cls, limits: SandboxLimits | None = None, *, command: Sequence[str] | None = None
    ) -> Callable[[], ProcessSandbox]:
        """What ``SandboxPool(factory=...)`` needs: each call starts one runner."""
        return lambda: cls.launch(limits, command=command)

    def _stop(self) -> None:
        kill_tree(self._proc.pid)
        self._proc.wait()
        if self._scratch is not None:
            _remove_scratch(self._scratch)

    def exit_state(self) -> ExitState:
        try:
            code = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return ExitState()
        # It died on its own: a SIGKILL then is the kernel's out-of-memory killer.
        return ExitState(code=code, out_of_memory=code == -signal.SIGKILL)

    def stderr_tail(self) -> str:
        return self._stderr.text()


def kill_tree(pid: int) -> None:
    """Kill a process and every process below it, whatever session or group they moved
    to: stop them all (so none forks or is orphaned meanwhile), then kill them."""
    stopped: set[int] = set()
    for _ in range(1000):
        found = [pid, *descendants(pid)]
        fresh = [p for p in found if p not in stopped]
        if not fresh:
            break
        for p in fresh:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGSTOP)
            stopped.add(p)
    for p in stopped:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)


def _remove_scratch(path: str) -> None:
    """Remove a scratch directory, whatever code made of its permissions."""
    for root, dirs, _ in os.walk(path):
        for d in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(root, d), 0o700, follow_symlinks=False)
    shutil.rmtree(path, ignore_errors=True)


def spawn(
    argv: Sequence[str],
    limits: SandboxLimits,
    preexec: Callable[[], None],
    pass_fds: Sequence[int] = (),
    *,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], FrameChannel]:
    """Start ``argv`` in a new session with an empty environment, its stdin and stdout
    one end of a socket pair, and ``preexec`` run in the child before it execs."""
    host, child = socket.socketpair()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=child.fileno(),
            stdout=child.fileno(),
            stderr=subprocess.PIPE,
            env=env or {},
            cwd=cwd,
            start_new_session=True,  # a kill reaches everything it started
            preexec_fn=preexec,  # noqa: PLW1509 (no threads run between fork and exec)
            pass_fds=tuple(pass_fds),
        )
    except OSError as e:
        host.close()
        raise SandboxUnavailableError(f"Could not start the runner {argv[0]}: {e}") from e
    finally:
        child.close()
    return proc, FrameChannel(host, docker_mux=False, max_frame=limits.max_frame_mb * 1024 * 1024)


def _rlimits(limits: SandboxLimits) -> Callable[[], None]:
    """Limits the child sets on itself before the runner starts: memory (address space),
    file size and open files. Processes are not limited: RLIMIT_NPROC counts every
    process of the user, not the child's."""
    memory = limits.memory_mb * 1024 * 1024
    file_size = limits.file_size_mb * 1024 * 1024

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))

    return apply
