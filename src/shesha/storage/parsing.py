"""Parsing files in worker processes, never in the caller's: each worker has a memory
limit, each file a time limit, and a worker that crashes, runs out of memory or runs past
its time is killed (with the OCR it started) and replaced, so one hostile file fails
alone and the rest of the batch goes on.

Workers are forked when the caller has one thread (a CLI); a server's many threads make a
fork unsafe, so there a fork server starts them, with the parsers already imported.
Neither re-imports the caller's ``__main__``.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import TypeVar

from shesha.errors import SheshaError
from shesha.parser.bounds import DEFAULT, ParseBounds
from shesha.parser.document import ParsedDocument
from shesha.parser.ocr import OcrSettings
from shesha.parser.registry import parse_file

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


def _address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _serve(conn: Connection, memory_mb: int) -> None:
    """A worker: parse each job it is sent, telling the pages OCR reads as it goes."""
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
    try:
        return parse_file(job.path, password=job.password, ocr=ocr, bounds=job.bounds)
    except SheshaError as e:
        return str(e)
    except MemoryError:
        return f"parsing it needs more than the parser's {memory_mb:,} MB of memory"
    except Exception as e:  # noqa: BLE001  a parser's bug or a library's on hostile input:
        # this file fails with the reason, and the batch goes on
        return f"the parser failed on this file ({type(e).__name__}: {e})"


def _context() -> BaseContext:
    if threading.active_count() == 1:
        return get_context("fork")
    context = get_context("forkserver")
    context.set_forkserver_preload(["shesha.storage.parsing"])
    return context


class _Worker:
    def __init__(self, context: BaseContext, limits: ParseLimits) -> None:
        ours, theirs = context.Pipe()
        self.conn = ours
        self.process: BaseProcess = context.Process(  # type: ignore[attr-defined]
            target=_serve, args=(theirs, limits.memory_mb), daemon=True
        )
        self.process.start()
        theirs.close()
        self.deadline = 0.0

    def kill(self) -> None:
        pid = self.process.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # the worker and its OCR
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.kill()
        else:
            self.conn.close()


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
    context = _context()
    todo = deque(jobs)
    idle: list[_Worker] = []
    busy: dict[Connection, tuple[_Worker, K, ParseJob]] = {}
    count = max(1, min(workers, len(jobs)))
    try:
        while todo or busy:
            while todo and len(busy) < count:
                worker = idle.pop() if idle else _Worker(context, limits)
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
                    code = worker.process.exitcode
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
