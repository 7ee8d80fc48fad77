"""The runner under bubblewrap: a sandbox for machines without Docker.

The same ``runner.py`` and frame protocol as the container, in a process that
``bwrap`` starts in new user, PID, network, IPC, UTS and mount namespaces:

- no network: the new network namespace has only a loopback interface, and no route;
- the filesystem is empty but for what is bound read-only: ``/usr`` (with the ``/bin``
  and ``/lib`` links), the interpreter's own prefix, ``/etc/ld.so.cache`` and the
  runner; ``/tmp`` is a private tmpfs of ``tmpfs_mb``; ``/proc`` and a minimal ``/dev``;
- uid and gid 65532 inside, every capability dropped, no new privileges, a new session
  (no terminal to inject keystrokes into), killed when shesha dies (``--die-with-parent``);
- a seccomp deny list (``seccomp.py``) on x86_64;
- limits: memory, processes and CPU through a control group where this machine lets us
  make one (``cgroups.py``); otherwise memory as an address-space rlimit, and processes
  as an rlimit only when shesha does not run as root (the kernel does not apply it to
  root). The file-size and open-file rlimits always apply.

``isolation()`` says which of these hold here.
"""

from __future__ import annotations

import contextlib
import os
import queue
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from shesha.errors import SandboxUnavailableError
from shesha.sandbox.cgroups import Cgroup, Cgroups
from shesha.sandbox.image import RUNNER_PATH
from shesha.sandbox.limits import SandboxLimits
from shesha.sandbox.process import ProcessSandbox, spawn
from shesha.sandbox.protocol import FrameChannel
from shesha.sandbox.runner_client import ExitState, check_runner
from shesha.sandbox.seccomp import program

_T = TypeVar("_T")

SANDBOX_UID = 65532
RUNNER_INSIDE = "/opt/shesha/runner.py"
TMP = "/tmp"  # noqa: S108  the sandbox's own private tmpfs, not the host's /tmp
INSTALL_HINT = (
    "Install bubblewrap (Debian/Ubuntu: apt install bubblewrap; Fedora: dnf install "
    "bubblewrap), or start Docker and build the image with `make sandbox-image`."
)


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def interpreter() -> str:
    """The Python that runs the runner: this one's base interpreter (not a venv's)."""
    found = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    return str(found.resolve()) if found.is_file() else "/usr/bin/python3"


def _binds() -> list[str]:
    """The read-only view of the host: /usr, its links, and the interpreter's prefix."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    prefix = str(Path(sys.base_prefix).resolve())
    if not prefix.startswith("/usr/"):
        args += ["--ro-bind", prefix, prefix]
    args += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    return args


def command(limits: SandboxLimits, seccomp_fd: int | None) -> list[str]:
    """The bwrap command line that runs the runner."""
    bwrap = bwrap_path()
    if bwrap is None:
        raise SandboxUnavailableError("bubblewrap (bwrap) is not installed.", hint=INSTALL_HINT)
    argv = [
        bwrap, "--unshare-all", "--unshare-user",
        "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
        "--hostname", "sandbox", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--as-pid-1",  # the runner is PID 1: no signal from inside reaches it
        *_binds(),
        "--ro-bind", str(RUNNER_PATH), RUNNER_INSIDE,
        "--proc", "/proc", "--dev", "/dev",
        "--size", str(limits.tmpfs_mb * 1024 * 1024), "--tmpfs", TMP,
        "--remount-ro", "/dev", "--remount-ro", "/",
        "--chdir", TMP, "--clearenv",
        "--setenv", "HOME", TMP, "--setenv", "PATH", "/usr/bin:/bin",
        "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
    ]  # fmt: skip
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    return [*argv, "--", interpreter(), "-I", "-S", RUNNER_INSIDE, "--scratch", TMP]


@cache
def cgroups() -> Cgroups | None:
    return Cgroups.find()


def isolation() -> str:
    """What the bubblewrap sandbox enforces on this machine, in a line."""
    groups = cgroups()
    parts = [
        "bubblewrap: user, PID, network, IPC, UTS and mount namespaces",
        "read-only /usr",
        "private /tmp",
        "no capabilities",
        "seccomp deny list" if program() is not None else "no seccomp filter (not x86_64)",
    ]
    if groups is not None:
        parts.append(f"limits by {groups.describe()}")
    elif os.geteuid() == 0:
        parts.append("limits by rlimits (memory as address space; no process or CPU limit)")
    else:
        parts.append("limits by rlimits (memory as address space, processes; no CPU limit)")
    return "; ".join(parts)


@cache
def bwrap_problem() -> str | None:
    """None when bubblewrap can start a sandbox here; else what stops it."""
    if bwrap_path() is None:
        return "bubblewrap (bwrap) is not installed"
    argv = command(SandboxLimits(), None)
    try:
        done = subprocess.run(
            [*argv[: argv.index("--")], "--", interpreter(), "-I", "-S", "-c", "pass"],
            capture_output=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bwrap could not start: {e}"
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        return f"bwrap could not make a sandbox: {said[-1] if said else done.returncode}"
    return None


class BwrapSandbox(ProcessSandbox):
    """One runner under bubblewrap, with its own control group where there is one."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        channel: FrameChannel,
        limits: SandboxLimits,
        group: Cgroup | None,
    ) -> None:
        super().__init__(proc, channel, limits)
        self._group = group

    @classmethod
    def launch(  # type: ignore[override]
        cls, limits: SandboxLimits | None = None, *, ready_timeout: float = 30.0
    ) -> BwrapSandbox:
        chosen = limits or SandboxLimits()
        return retrying_spawn(lambda report: cls._launch_once(chosen, ready_timeout, report))

    @classmethod
    def _launch_once(cls, limits: SandboxLimits, ready_timeout: float, report: int) -> BwrapSandbox:
        filter_bytes = program()
        read_fd = None
        if filter_bytes is not None:
            read_fd, write_fd = os.pipe()
            os.write(write_fd, filter_bytes)  # a few hundred bytes: fits the pipe buffer
            os.close(write_fd)
        group = _group(limits)
        try:
            argv = command(limits, read_fd)
            fds = () if read_fd is None else (read_fd,)
            proc, channel = _SPAWNER.call(
                lambda: spawn(argv, limits, _preexec(limits, group, report), pass_fds=fds)
            )
        except BaseException:
            if group is not None:
                group.remove()
            raise
        finally:
            if read_fd is not None:
                os.close(read_fd)
        sandbox = cls(proc, channel, limits, group)
        check_runner(sandbox, "under bubblewrap", ready_timeout)
        return sandbox

    @classmethod
    def factory(  # type: ignore[override]
        cls, limits: SandboxLimits | None = None
    ) -> Callable[[], BwrapSandbox]:
        return lambda: cls.launch(limits)

    def _stop(self) -> None:
        super()._stop()
        if self._group is not None:
            self._group.remove()  # anything that outlived bwrap goes too

    def exit_state(self) -> ExitState:
        state = super().exit_state()
        if self._group is not None:
            return ExitState(code=state.code, out_of_memory=self._group.oom_killed())
        # bwrap passes on its child's end: killed by a signal shows as 128 + the signal.
        return ExitState(code=state.code, out_of_memory=state.code in (-9, 137))


class _LastingThread:
    """Starts processes from one thread that lives as long as shesha. ``--die-with-
    parent`` kills bwrap when the *thread* that started it ends (Linux ties the parent-
    death signal to the thread), and the pool starts sandboxes from short-lived worker
    threads; started from here, bwrap dies only when shesha does."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def call(self, job: Callable[[], _T]) -> _T:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._serve, name="shesha-bwrap-spawner", daemon=True
                )
                self._thread.start()
        done: Future[_T] = Future()
        self._jobs.put((job, done))
        return done.result()

    def _serve(self) -> None:
        while True:
            job, done = self._jobs.get()
            try:
                done.set_result(job())
            except BaseException as e:  # noqa: BLE001  handed to the caller, who raises it
                done.set_exception(e)


_SPAWNER = _LastingThread()


def _group(limits: SandboxLimits) -> Cgroup | None:
    groups = cgroups()
    if groups is None:
        return None
    try:
        return groups.make(limits.memory_mb * 1024 * 1024, limits.pids, limits.cpus)
    except OSError:
        return None  # made by another process's rules: fall back to rlimits


def _user_processes() -> int:
    uid = os.geteuid()
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    count += 1
    return count


SPAWN_TRIES = 3
"""Starts tried before a sandbox is unavailable: joining a control group between fork
and exec fails now and then on a loaded cgroup-v1 host, and works when tried again."""


def retrying_spawn(attempt: Callable[[int], _T]) -> _T:
    """``attempt(report_fd)``, tried again when the child failed before it could exec
    (``preexec`` raised); what the child wrote to ``report_fd`` says why. After the
    last try, a SandboxUnavailableError with that reason."""
    for tries in range(1, SPAWN_TRIES + 1):
        read_end, write_end = os.pipe()
        try:
            return attempt(write_end)
        except subprocess.SubprocessError as e:
            os.close(write_end)
            write_end = -1
            said = os.read(read_end, 4096).decode(errors="replace").strip() or str(e)
            if tries == SPAWN_TRIES:
                raise SandboxUnavailableError(
                    f"Could not start a bubblewrap sandbox ({SPAWN_TRIES} tries): {said}",
                    hint="`shesha doctor` checks bubblewrap and control groups here.",
                ) from e
            time.sleep(0.05 * tries)
        finally:
            if write_end >= 0:
                os.close(write_end)
            os.close(read_end)
    raise AssertionError("unreachable")  # the loop returns or raises


def _preexec(limits: SandboxLimits, group: Cgroup | None, report: int) -> Callable[[], None]:
    """Set in the child before bwrap starts: its group, or the rlimits that stand in. What
    fails is written to ``report`` (the parent reads it), then raised."""
    file_size = limits.file_size_mb * 1024 * 1024
    memory = limits.memory_mb * 1024 * 1024
    nproc = None
    if group is None and os.geteuid() != 0:
        nproc = _user_processes() + limits.pids  # RLIMIT_NPROC counts all of the user's

    def apply() -> None:
        try:
            limit()
        except OSError as e:
            os.write(report, f"{e.strerror or e} ({e.filename or 'setrlimit'})".encode())
            raise

    def limit() -> None:
        # The group first: joining it opens a file, and the host's own open files (a busy
        # server, a Ray driver) may be past the sandbox's limit on them.
        if group is not None:
            group.join()
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        if group is not None:
            return
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if nproc is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))

    return apply
