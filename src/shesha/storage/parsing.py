"""Parsing files in worker processes, never in the caller's: each worker has a memory
limit, each file a time limit, and a worker that crashes, runs out of memory or runs past
its time is killed (with the OCR it started) and replaced, so one hostile file fails
alone and the rest of the batch goes on.

Workers are forked when the caller has one thread (a CLI); a server's many threads make a
fork unsafe, so there each is a fresh interpreter running this module. Neither runs the
caller's ``__main__`` again (multiprocessing's spawn and fork server would).

    python -m shesha.storage.parsing FD MEMORY_MB     a worker, on the socket FD
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TypeVar

from shesha.errors import SheshaError
from shesha.parser.bounds import DEFAULT, ParseBounds
from shesha.parser.document import ParsedDocument
from shesha.parser.ocr import OcrSettings
from shesha.parser.registry import parse_bytes
from shesha.storage.inputs import read_inside

PR_SET_PDEATHSIG = 1
"""prctl's option: the signal a process gets when its parent dies."""
K = TypeVar("K")
PageRead = Callable[[str, int, int], None]
"""Told (path, pages read, pages to read) as OCR goes."""
Outcome = ParsedDocument | str
"""A parsed document, or why the file failed."""


@dataclass(frozen=True)
class ParseLimits:
    """What one worker may use: memory (beyond what it starts with) and time per file."""

    memory_mb: int = 3072
    timeout_s: float = 600.0


@dataclass(frozen=True)
class ParseJob:
    path: str
    password: str | None = None
    ocr: OcrSettings | None = None
    bounds: ParseBounds = DEFAULT
    roots: tuple[str, ...] | None = None
    """Where the file must still be when it is read (a server's allowed folders)."""
    name: str | None = None
    """The name it is parsed under (its format comes from it): default, the path's."""


def _address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _die_with(parent: int) -> None:
    """Have the kernel kill this worker when its parent dies (Linux). A forked worker
    inherits the parent's end of its pipe, and its siblings' ends, so it would never see
    the pipe close: without this, a killed `shesha add` left its workers waiting forever."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the pipe tells
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above took effect
        os._exit(0)


def _serve(
    conn: Connection, memory_mb: int, forked_by: int | None = None,
    parents_end: Connection | None = None,
) -> None:  # fmt: skip
    """A worker: parse each job it is sent, telling the pages OCR reads as it goes.
    ``forked_by``: the pid of the parent that forked it (a fresh interpreter inherits no
    other end of its socket, so it sees it close, and needs no more: the parent's death
    signal follows the thread that started it, and a server's threads come and go)."""
    if parents_end is not None:
        parents_end.close()  # a fork's copy of the other end: the pipe can close
    if forked_by is not None:
        _die_with(forked_by)
    os.setsid()  # OCR's processes join its group: a kill reaches them too
    with contextlib.suppress(OSError, ValueError):  # no /proc: no limit but the time one
        limit = _address_space() + memory_mb * (1 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    while True:
        try:
            job: ParseJob | None = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        conn.send(("done", _parse(job, conn, memory_mb)))


def _parse(job: ParseJob, conn: Connection, memory_mb: int) -> Outcome:
    ocr = job.ocr
    if ocr is not None:
        ocr = replace(ocr, on_page=lambda done, total: conn.send(("page", done, total)))
    path = Path(job.path)
    roots = [Path(r) for r in job.roots] if job.roots is not None else None
    try:
        data = read_inside(path, roots)
    except OSError as e:
        return f"{path}: cannot be read ({e.strerror or e})"
    try:
        return parse_bytes(data, job.name or path.name, job.password, ocr, job.bounds)
    except SheshaError as e:
        return str(e)
    except MemoryError:
        return f"parsing it needs more than the parser's {memory_mb:,} MB of memory"
    except Exception as e:  # noqa: BLE001  a parser's bug or a library's on hostile input:
        # this file fails with the reason, and the batch goes on
        return f"the parser failed on this file ({type(e).__name__}: {e})"


class _Worker:
    """One worker process and the channel to it: forked when this process has one thread,
    else a fresh interpreter, since a fork of a threaded process may inherit a lock that
    another thread held, locked forever."""

    def __init__(self, limits: ParseLimits) -> None:
        self.deadline = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._forked: BaseProcess | None = None
        if threading.active_count() == 1:
            context = get_context("fork")
            ours, theirs = context.Pipe()
            forked = context.Process(
                target=_serve, args=(theirs, limits.memory_mb, os.getpid(), ours)
            )
            forked.daemon = True
            forked.start()
            theirs.close()
            self._forked, self.conn = forked, ours
            return
        here, there = socket.socketpair()
        try:
            self._proc = subprocess.Popen(
                # -P: nothing of the caller's working directory on the worker's path
                [sys.executable, "-P", "-m", "shesha.storage.parsing", str(there.fileno()),
                 str(limits.memory_mb)],
                pass_fds=(there.fileno(),),
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except OSError:
            here.close()
            raise
        finally:
            there.close()
        self.conn = Connection(here.detach())

    @property
    def pid(self) -> int | None:
        if self._proc is not None:
            return self._proc.pid
        return self._forked.pid if self._forked is not None else None

    @property
    def exitcode(self) -> int | None:
        if self._proc is not None:
            return self._proc.poll()
        return self._forked.exitcode if self._forked is not None else None

    def ended(self, timeout: float) -> bool:
        """Whether it has ended, once ``timeout`` has passed at most."""
        if self._proc is not None:
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        assert self._forked is not None
        self._forked.join(timeout=timeout)
        return not self._forked.is_alive()

    def kill(self) -> None:
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # the worker and its OCR
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.ended(5)
        self.conn.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)
        if self.ended(2):
            self.conn.close()
        else:
            self.kill()


def parse_all(
    jobs: Sequence[tuple[K, ParseJob]],
    workers: int,
    limits: ParseLimits = ParseLimits(),
    on_page: PageRead | None = None,
) -> Iterator[tuple[K, Outcome]]:
    """Parse each job in a worker process, ``workers`` at once; yield (key, outcome) as
    each file is done, in the order they finish."""
    if not jobs:
        return
    todo = deque(jobs)
    idle: list[_Worker] = []
    busy: dict[Connection, tuple[_Worker, K, ParseJob]] = {}
    count = max(1, min(workers, len(jobs)))
    try:
        while todo or busy:
            while todo and len(busy) < count:
                worker = idle.pop() if idle else _Worker(limits)
                key, job = todo.popleft()
                worker.conn.send(job)
                worker.deadline = time.monotonic() + limits.timeout_s
                busy[worker.conn] = (worker, key, job)
            soonest = min(w.deadline for w, _, _ in busy.values())
            ready = wait(list(busy), timeout=max(0.0, min(soonest - time.monotonic(), 1.0)))
            for conn in ready:
                assert isinstance(conn, Connection)
                worker, key, job = busy[conn]
                try:
                    kind, *rest = conn.recv()
                except (EOFError, OSError):
                    del busy[conn]
                    worker.ended(0.5)  # how it died, before a kill of ours could say so
                    code = worker.exitcode
                    worker.kill()
                    yield key, _crashed(code, limits)
                    continue
                if kind == "page":
                    if on_page is not None:
                        on_page(job.path, *rest)
                    continue
                del busy[conn]
                idle.append(worker)
                yield key, rest[0]
            now = time.monotonic()
            for conn, (worker, key, _) in list(busy.items()):
                if now >= worker.deadline:
                    del busy[conn]
                    worker.kill()
                    yield (
                        key,
                        (
                            f"parsing it took longer than {limits.timeout_s:g} s and was stopped "
                            "(raise parse_timeout_s for files that need longer, such as long scans)"
                        ),
                    )
    finally:
        for worker, _, _ in busy.values():
            worker.kill()
        for worker in idle:
            worker.stop()


def _crashed(code: int | None, limits: ParseLimits) -> str:
    how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    return (
        f"the parser crashed on this file ({how}); a file that needs more than the "
        f"parser's {limits.memory_mb:,} MB of memory ends so (raise parse_memory_mb if it "
        "is genuine)"
    )


def main(argv: Sequence[str]) -> int:
    """A worker started by :class:`_Worker`: the socket's descriptor and the memory limit."""
    _serve(Connection(int(argv[0])), int(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
