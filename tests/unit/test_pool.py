"""Pool logic with fake sandboxes passed in through the factory."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from shesha.errors import SandboxBusyError, SandboxError, SandboxUnavailableError, StorageError
from shesha.sandbox import ExecResult, InMemoryCorpus, SandboxPool
from shesha.sandbox.corpus import Corpus
from shesha.sandbox.execution import ToolOutcome, ToolSpec


class FakeSandbox:
    def __init__(self, name: int) -> None:
        self.name = name
        self.loaded_version: str | None = None
        self.alive = True
        self.sent = 0
        self.resets = 0
        self.healthy = True
        self.next_status = "ok"
        self.code = ""

    @property
    def bytes_sent(self) -> int:
        return self.sent

    def ping(self, timeout: float = 5.0) -> dict[str, Any]:
        if not self.healthy:
            raise SandboxError("no pong")
        return {"kind": "pong"}

    def reset(self, timeout: float = 5.0) -> None:
        self.resets += 1

    def load(self, corpus: Corpus, timeout: float = 300.0) -> int:
        n = sum(len(t.encode()) for _, t in corpus.documents())
        self.sent += n
        self.loaded_version = corpus.version
        return n

    def start(
        self,
        code: str,
        *,
        timeout: float | None = None,
        max_output_chars: int | None = None,
        tools: Sequence[ToolSpec] = (),
    ) -> None:
        self.code = code

    def next(self) -> ExecResult:
        status, self.next_status = self.next_status, "ok"
        return ExecResult(status=status, stdout=f"{self.name}:{self.code}")  # type: ignore[arg-type]

    def answer(self, results: Sequence[str]) -> None:
        raise AssertionError("these fakes never ask for sub-calls")

    def answer_tool(self, outcome: ToolOutcome) -> None:
        raise AssertionError("these fakes never call tools")

    def kill(self) -> None:
        self.alive = False


class Factory:
    def __init__(self, fail: bool = False) -> None:
        self.made: list[FakeSandbox] = []
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self) -> FakeSandbox:
        if self.fail:
            raise SandboxUnavailableError("no daemon")
        with self.lock:
            s = FakeSandbox(len(self.made))
            self.made.append(s)
            return s


DOCS = InMemoryCorpus([("a.txt", "alpha"), ("b.txt", "beta")])
OTHER = InMemoryCorpus([("c.txt", "gamma")])


def test_start_makes_size_containers() -> None:
    factory = Factory()
    with SandboxPool(3, factory=factory) as pool:
        assert len(factory.made) == 3
        assert pool.stats().idle == 3


def test_second_acquire_of_the_same_corpus_sends_nothing() -> None:
    with SandboxPool(2, factory=Factory()) as pool:
        with pool.acquire(DOCS) as first:
            assert first.document_bytes_sent == len(b"alphabeta")
        with pool.acquire(DOCS) as second:
            assert second.document_bytes_sent == 0
        assert pool.stats().document_bytes_sent == len(b"alphabeta")


def test_acquire_prefers_the_container_that_holds_the_corpus() -> None:
    factory = Factory()
    with SandboxPool(3, factory=factory) as pool:
        with pool.acquire(DOCS) as s:
            holder = s.execute("x").stdout.split(":")[0]
        with pool.acquire(OTHER):
            pass
        with pool.acquire(DOCS) as s:
            assert s.execute("x").stdout.split(":")[0] == holder


def test_acquire_with_no_corpus_never_sees_another_projects_documents() -> None:
    with SandboxPool(1, factory=Factory()) as pool:
        with pool.acquire(DOCS):
            pass
        with pool.acquire(None) as s:
            assert s.corpus.documents() == ()
            assert s.document_bytes_sent == 0
            assert s.corpus.version != DOCS.version


def test_all_busy_times_out_with_a_clear_error() -> None:
    with (
        SandboxPool(1, factory=Factory()) as pool,
        pool.acquire(DOCS),
        pytest.raises(SandboxBusyError, match="stayed busy"),
    ):
        pool.acquire(DOCS, timeout=0.1)


def test_a_waiter_gets_the_container_when_it_is_released() -> None:
    with SandboxPool(1, factory=Factory()) as pool:
        held = pool.acquire(DOCS)
        timer = threading.Timer(0.1, held.close)
        timer.start()
        with pool.acquire(DOCS, timeout=5) as s:
            assert s.document_bytes_sent == 0
        timer.join()


def test_unhealthy_container_is_discarded_and_replaced() -> None:
    factory = Factory()
    with SandboxPool(1, factory=factory) as pool:
        factory.made[0].healthy = False
        with pool.acquire(DOCS, timeout=5) as s:
            assert s.execute("x").stdout.startswith("1:")
        assert factory.made[0].alive is False
        assert pool.stats().discarded == 1


def test_a_lost_sandbox_is_replaced_and_reloaded_on_the_next_execution() -> None:
    factory = Factory()
    with SandboxPool(1, factory=factory) as pool, pool.acquire(DOCS) as s:
        factory.made[0].next_status = "timeout"
        assert s.execute("loop").status == "timeout"
        after = s.execute("again")
        assert after.status == "ok"
        assert after.stdout.startswith("1:")
        assert s.restarts == 1
        assert factory.made[1].loaded_version == DOCS.version


def test_start_fails_clearly_when_no_container_starts() -> None:
    pool = SandboxPool(2, factory=Factory(fail=True))
    with pytest.raises(SandboxUnavailableError, match="no daemon"):
        pool.start()


def test_close_kills_every_container_and_refuses_new_work() -> None:
    factory = Factory()
    pool = SandboxPool(3, factory=factory).start()
    pool.close()
    assert all(not s.alive for s in factory.made)
    with pytest.raises(SandboxError, match="closed"):
        pool.acquire(DOCS)


def test_corpus_version_depends_on_names_texts_and_order() -> None:
    a = InMemoryCorpus([("x", "1"), ("y", "2")])
    assert a.version == InMemoryCorpus([("x", "1"), ("y", "2")]).version
    assert a.version != InMemoryCorpus([("y", "2"), ("x", "1")]).version
    assert a.version != InMemoryCorpus([("x", "12"), ("y", "")]).version


NO_DOCKER = """
import sys
from shesha.sandbox import InMemoryCorpus
from shesha.testing import process_sandboxes
with process_sandboxes(1) as pool, pool.acquire(InMemoryCorpus([("a.txt", "hi")])) as s:
    print(s.execute("print(context[0])").stdout.strip())
print(sorted(m for m in sys.modules if m == "docker" or m.startswith("docker.")))
"""


def test_a_pool_of_other_sandboxes_never_imports_docker() -> None:
    # The pool knows no kind of sandbox: Docker is one factory among the others, so a
    # machine that runs bubblewrap or processes never loads the Docker SDK.
    done = subprocess.run(
        [sys.executable, "-c", NO_DOCKER], capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["hi", "[]"]


class Vanishing:
    """A corpus whose texts are gone by the time a sandbox loads them (a document
    replaced while a query ran)."""

    version = "v-gone"

    def documents(self) -> Sequence[tuple[str, str]]:
        raise StorageError("Project 'p': a document was removed or replaced.")

    def sizes(self) -> Sequence[tuple[str, int]]:
        return [("a.txt", 5)]


def test_a_corpus_that_fails_to_load_never_keeps_its_sandbox() -> None:
    # Regression: a non-sandbox error while loading left the sandbox marked busy for
    # good; after pool_size of them every acquire failed.
    with SandboxPool(1, factory=Factory()) as pool:
        for _ in range(3):
            with pytest.raises(StorageError):
                pool.acquire(Vanishing(), timeout=5)
        assert pool.stats().busy == 0
        with pool.acquire(DOCS, timeout=5) as s:
            assert s.execute("x").status == "ok"
