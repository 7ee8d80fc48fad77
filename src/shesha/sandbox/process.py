"""The runner as a local child process: the same runner and frames as a container, with
NO isolation. Code it runs can read your files and reach the network.

It exists so that tests and examples can run the whole engine, the real runner
included, without Docker, and with code they wrote themselves. Never give it code or
documents you do not trust; use the Docker sandbox for that.

    pool = SandboxPool(1, factory=ProcessSandbox.factory())
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from io import BufferedReader
from typing import cast

from shesha.errors import SandboxUnavailableError
from shesha.sandbox.container import check_runner
from shesha.sandbox.image import RUNNER_PATH
from shesha.sandbox.limits import SandboxLimits
from shesha.sandbox.protocol import STDERR_TAIL, FrameChannel
from shesha.sandbox.runner_client import ExitState, RunnerClient


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
        self, proc: subprocess.Popen[bytes], channel: FrameChannel, limits: SandboxLimits
    ) -> None:
        super().__init__(channel, limits)
        self._proc = proc
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
        argv = list(command or [sys.executable, "-I", str(RUNNER_PATH)])
        proc, channel = spawn(argv, limits, _rlimits(limits))
        sandbox = cls(proc, channel, limits)
        check_runner(sandbox, f"process {argv[0]}", ready_timeout)
        return sandbox

    @classmethod
    def factory(
        cls, limits: SandboxLimits | None = None, *, command: Sequence[str] | None = None
    ) -> Callable[[], ProcessSandbox]:
        """What ``SandboxPool(factory=...)`` needs: each call starts one runner."""
        return lambda: cls.launch(limits, command=command)

    def _stop(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it ended on its own just now
                os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()

    def exit_state(self) -> ExitState:
        try:
            code = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return ExitState()
        # It died on its own: a SIGKILL then is the kernel's out-of-memory killer.
        return ExitState(code=code, out_of_memory=code == -signal.SIGKILL)

    def stderr_tail(self) -> str:
        return self._stderr.text()


def spawn(
    argv: Sequence[str],
    limits: SandboxLimits,
    preexec: Callable[[], None],
    pass_fds: Sequence[int] = (),
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
            env={},
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
