"""A pool of warm sandboxes, each remembering which corpus it holds. The pool knows no
kind of sandbox: a factory starts each one (``container.DockerFactory``,
``BwrapSandbox.factory``, ``ProcessSandbox.factory``, ``hosts.DockerHosts``)."""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TypeVar

from shesha.errors import (
    SandboxBusyError,
    SandboxError,
    SandboxUnavailableError,
)
from shesha.sandbox.corpus import Corpus, InMemoryCorpus
from shesha.sandbox.execution import (
    ExecResult,
    ExecStep,
    Steps,
    SubcallHandler,
    ToolOutcome,
    ToolSpec,
    run_to_end,
)

EMPTY_CORPUS = InMemoryCorpus(())
_T = TypeVar("_T")


class Sandbox(Steps, Protocol):
    """What the pool needs of one container (``DockerSandbox`` in production): code run
    step by step (``Steps``), and the container's own life."""

    loaded_version: str | None
    alive: bool

    @property
    def bytes_sent(self) -> int: ...

    def ping(self, timeout: float = ...) -> dict[str, Any]: ...
    def reset(self, timeout: float = ...) -> None: ...
    def load(self, corpus: Corpus, timeout: float = ...) -> int: ...
    def kill(self) -> None: ...


SandboxFactory = Callable[[], Sandbox]
"""Starts one container and returns it once it answers a ping."""


@dataclass
class PoolStats:
    size: int
    idle: int
    busy: int
    starting: int
    started: int
    discarded: int
    document_bytes_sent: int


_live_pools: weakref.WeakSet[SandboxPool] = weakref.WeakSet()


def _close_live_pools() -> None:
    for pool in list(_live_pools):
        pool.close()


atexit.register(_close_live_pools)


class SandboxPool:
    """N warm containers (3 by default), started in parallel on :meth:`start`.

    ``acquire(corpus)`` hands out a container that holds ``corpus`` as ``context``,
    preferring one that already has it loaded, so a second query on the same project
    sends no document bytes. Containers that break, time out or run out of memory are
    discarded and replaced in the background.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        factory: SandboxFactory,
        acquire_timeout: float = 60.0,
        health_timeout: float = 5.0,
        kind: str = "custom",
        isolation: str = "unknown",
        on_close: Callable[[], None] | None = None,
    ) -> None:
        """``factory`` starts one sandbox (``docker_pool`` gives the default, Docker);
        ``kind`` and ``isolation`` say what it is and what it enforces (reported with each
        result); ``on_close`` runs once the pool has closed (the factory's own close)."""
        if size < 1:
            raise ValueError("a sandbox pool needs at least one container")
        self.size = size
        self.kind = kind
        self.isolation = isolation
        self._on_close = on_close
        self.acquire_timeout = acquire_timeout
        self.health_timeout = health_timeout
        self._factory = factory
        self._cond = threading.Condition()
        self._idle: list[Sandbox] = []
        self._busy: set[int] = set()
        self._all: dict[int, Sandbox] = {}
        self._starting = 0
        self._started = 0
        self._discarded = 0
        self._document_bytes = 0
        self._last_error: BaseException | None = None
        self._closed = False
        self._running = False
        _live_pools.add(self)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> SandboxPool:
        """Start every container in parallel and wait until each answers a ping."""
        with self._cond:
            if self._running:
                return self
            if self._closed:
                raise SandboxError("this sandbox pool has been closed")
            self._running = True
        with ThreadPoolExecutor(max_workers=self.size) as ex:
            outcomes = list(ex.map(self._launch_one, range(self.size)))
        errors = [e for e in outcomes if e is not None]
        with self._cond:
            if len(errors) == self.size:
                self._running = False
                raise errors[0]
            for _ in errors:  # some started: replace the rest in the background
                self._spawn_locked()
        return self

    def _launch_one(self, _: int = 0) -> BaseException | None:
        try:
            sandbox = self._factory()
        except (SandboxError, OSError) as e:
            with self._cond:
                self._last_error = e
                self._cond.notify_all()
            return e
        with self._cond:
            if self._closed:
                sandbox.kill()
                return None
            self._all[id(sandbox)] = sandbox
            self._idle.append(sandbox)
            self._started += 1
            self._cond.notify_all()
        return None

    def _spawn_locked(self) -> None:
        """Start one replacement in the background. Call with the lock held."""
        self._starting += 1

        def run() -> None:
            try:
                self._launch_one()
            finally:
                with self._cond:
                    self._starting -= 1
                    self._cond.notify_all()

        threading.Thread(target=run, name="shesha-sandbox-start", daemon=True).start()

    def close(self) -> None:
        """Kill every container, in parallel. Idempotent, and fast."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            victims = list(self._all.values())
            self._all.clear()
            self._idle.clear()
            self._cond.notify_all()
        # Plain threads, not an executor: at interpreter exit (the atexit hook below)
        # executors take no new work, and a pool a script never closed must still close.
        killers = [threading.Thread(target=s.kill, daemon=True) for s in victims]
        for killer in killers:
            killer.start()
        for killer in killers:
            killer.join()
        if self._on_close is not None:
            self._on_close()
        _live_pools.discard(self)

    def __enter__(self) -> SandboxPool:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- acquire / release -------------------------------------------------------------

    def acquire(self, corpus: Corpus | None = None, timeout: float | None = None) -> SandboxLease:
        """A container holding ``corpus`` as ``context`` (none: an empty context), with a
        fresh namespace. Use it as a context manager, or call ``close()`` on it."""
        corpus = corpus if corpus is not None else EMPTY_CORPUS
        sandbox, sent = self._checkout(corpus, timeout)
        return SandboxLease(self, sandbox, corpus, sent)

    def _checkout(self, corpus: Corpus, timeout: float | None) -> tuple[Sandbox, int]:
        if not self._running:
            self.start()
        deadline = time.monotonic() + (self.acquire_timeout if timeout is None else timeout)
        while True:
            sandbox = self._take_idle(corpus.version, deadline)
            try:
                if sandbox.loaded_version == corpus.version:
                    # A fresh worker for this query (already waiting, if the last query's
                    # release cleaned up); the reply doubles as the health check.
                    sandbox.reset(timeout=self.health_timeout)
                    return sandbox, 0
                sandbox.ping(timeout=self.health_timeout)
                sent = sandbox.load(corpus)  # another corpus: the runner starts afresh
            except SandboxError:
                self._discard(sandbox)  # unhealthy: replace it and try another
                continue
            except BaseException:
                # The corpus could not be read (or the caller gave up): the sandbox may be
                # half loaded, so it is replaced, never kept out of the pool.
                self._discard(sandbox)
                raise
            with self._cond:
                self._document_bytes += sent
            return sandbox, sent

    def _take_idle(self, version: str, deadline: float) -> Sandbox:
        with self._cond:
            while True:
                if self._closed:
                    raise SandboxError("this sandbox pool has been closed")
                if self._idle:
                    sandbox = self._pick(version)
                    self._idle.remove(sandbox)
                    self._busy.add(id(sandbox))
                    return sandbox
                if len(self._all) + self._starting < self.size:
                    if self._starting == 0 and not self._busy and self._last_error is not None:
                        error, self._last_error = self._last_error, None
                        raise SandboxUnavailableError(
                            f"No sandbox container could be started: {error}"
                        ) from error
                    self._spawn_locked()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SandboxBusyError(
                        f"All {self.size} sandbox containers stayed busy for "
                        f"{self.acquire_timeout:g} s.",
                        hint="Raise the pool size, or run fewer queries at once.",
                    )
                self._cond.wait(remaining)

    def _pick(self, version: str) -> Sandbox:
        for s in self._idle:
            if s.loaded_version == version:
                return s
        for s in self._idle:
            if s.loaded_version is None:
                return s
        return self._idle[0]  # least recently used

    def _release(self, sandbox: Sandbox) -> None:
        """Back to the idle list once nothing of the query is left in it: its processes,
        files and interpreter state are gone, and a fresh worker waits."""
        try:
            sandbox.reset(timeout=self.health_timeout)
        except SandboxError:
            self._discard(sandbox)
            return
        with self._cond:
            self._busy.discard(id(sandbox))
            if self._closed or not sandbox.alive or id(sandbox) not in self._all:
                return
            self._idle.append(sandbox)
            self._cond.notify_all()

    def _discard(self, sandbox: Sandbox) -> None:
        """Drop a broken container and start a replacement in the background."""
        with self._cond:
            self._busy.discard(id(sandbox))
            known = self._all.pop(id(sandbox), None) is not None
            if known:
                self._discarded += 1
            if known and not self._closed:
                self._spawn_locked()
        threading.Thread(target=sandbox.kill, name="shesha-sandbox-kill", daemon=True).start()

    def stats(self) -> PoolStats:
        with self._cond:
            return PoolStats(
                size=self.size,
                idle=len(self._idle),
                busy=len(self._busy),
                starting=self._starting,
                started=self._started,
                discarded=self._discarded,
                document_bytes_sent=self._document_bytes,
            )


class SandboxLease:
    """One query's hold on a container that has its corpus loaded.

    Code runs step by step: :meth:`start`, then :meth:`next` until it returns the
    ``ExecResult``, with :meth:`answer` after each ``SubcallBatch``. When an execution
    loses the container (timeout, out of memory, crash), the next one transparently gets
    a fresh container with the same corpus loaded.
    """

    def __init__(self, pool: SandboxPool, sandbox: Sandbox, corpus: Corpus, sent: int) -> None:
        self._pool = pool
        self._sandbox: Sandbox | None = sandbox
        self.corpus = corpus
        self.document_bytes_sent = sent
        self.restarts = 0
        self.losses = 0
        """Times the container was lost (and the namespace with it)."""
        self._closed = False

    @property
    def sandbox(self) -> Sandbox | None:
        """The sandbox this lease holds now (None after a loss, until the next start)."""
        return self._sandbox

    def start(
        self,
        code: str,
        *,
        timeout: float | None = None,
        max_output_chars: int | None = None,
        tools: Sequence[ToolSpec] = (),
    ) -> None:
        if self._closed:
            raise SandboxError("this sandbox lease has been closed")
        if self._sandbox is None:
            self._sandbox, sent = self._pool._checkout(self.corpus, None)
            self.document_bytes_sent += sent
            self.restarts += 1
        self._guarded(
            self._sandbox,
            lambda s: s.start(
                code, timeout=timeout, max_output_chars=max_output_chars, tools=tools
            ),
        )

    def next(self) -> ExecStep:
        sandbox = self._running()
        step = self._guarded(sandbox, lambda s: s.next())
        if isinstance(step, ExecResult) and step.sandbox_lost:
            self._lose(sandbox)
        return step

    def answer(self, results: Sequence[str]) -> None:
        self._guarded(self._running(), lambda s: s.answer(results))

    def answer_tool(self, outcome: ToolOutcome) -> None:
        self._guarded(self._running(), lambda s: s.answer_tool(outcome))

    def execute(
        self,
        code: str,
        *,
        on_subcall: SubcallHandler | None = None,
        timeout: float | None = None,
        max_output_chars: int | None = None,
    ) -> ExecResult:
        """Run code to the end, answering sub-calls with ``on_subcall``."""
        return run_to_end(
            self, code, on_subcall=on_subcall, timeout=timeout, max_output_chars=max_output_chars
        )

    def reset(self) -> None:
        """A fresh namespace; the documents stay loaded."""
        if self._closed:
            raise SandboxError("this sandbox lease has been closed")
        if self._sandbox is not None:
            self._guarded(self._sandbox, lambda s: s.reset())

    def cancel(self) -> None:
        """Stop running code at once, from any thread: the container is killed and
        replaced, and a waiting :meth:`next` returns a lost result."""
        sandbox = self._sandbox
        if sandbox is not None:
            sandbox.kill()

    def _running(self) -> Sandbox:
        if self._closed or self._sandbox is None:
            raise SandboxError("no code is running in this sandbox lease")
        return self._sandbox

    def _guarded(self, sandbox: Sandbox, step: Callable[[Sandbox], _T]) -> _T:
        try:
            return step(sandbox)
        except SandboxError:  # a protocol error too: the container is gone either way
            self._lose(sandbox)
            raise

    def _lose(self, sandbox: Sandbox) -> None:
        self._sandbox = None
        self.losses += 1
        self._pool._discard(sandbox)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        sandbox, self._sandbox = self._sandbox, None
        if sandbox is None:
            return
        if sandbox.alive:
            self._pool._release(sandbox)
        else:  # cancelled, or lost: replace it
            self._pool._discard(sandbox)

    def __enter__(self) -> SandboxLease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
