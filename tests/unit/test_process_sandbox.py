"""Executions are pulled step by step (start, next, answer), through the pool, with the
real runner as a local child process (``shesha.testing.process_sandboxes``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from shesha.sandbox import ExecResult, InMemoryCorpus, SandboxLimits, SandboxPool
from shesha.sandbox.execution import SubcallBatch, SubcallItem
from shesha.testing import process_sandboxes

DOCS = InMemoryCorpus([("a.txt", "alpha beta"), ("b.txt", "gamma")])


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    with process_sandboxes(2, SandboxLimits(exec_timeout_s=5)) as p:
        yield p


def test_code_that_asks_for_sub_calls_hands_the_batch_back(pool: SandboxPool) -> None:
    with pool.acquire(DOCS) as session:
        session.start("print(llm_query_batched('Upper', ['x', 'y']))")
        step = session.next()
        assert isinstance(step, SubcallBatch)
        assert list(step.items) == [SubcallItem("Upper", "x"), SubcallItem("Upper", "y")]
        session.answer(["X", "Y"])
        result = session.next()
    assert isinstance(result, ExecResult)
    assert (result.status, result.stdout, result.subcalls) == ("ok", "['X', 'Y']\n", 2)


def test_time_waiting_for_answers_does_not_count_against_the_limit(pool: SandboxPool) -> None:
    with pool.acquire(DOCS) as session:
        session.start("print(llm_query('slow', ''))", timeout=0.5)
        step = session.next()
        assert isinstance(step, SubcallBatch)
        time.sleep(1.0)  # the host thinks for twice the code's limit
        session.answer(["done"])
        result = session.next()
    assert isinstance(result, ExecResult)
    assert (result.status, result.stdout) == ("ok", "done\n")


def test_code_past_its_limit_is_killed_and_the_next_run_has_context_again(
    pool: SandboxPool,
) -> None:
    with pool.acquire(DOCS) as session:
        started = time.monotonic()
        lost = session.execute("x = 1\nwhile True: pass", timeout=0.5)
        assert lost.status == "timeout"
        assert time.monotonic() - started < 3
        again = session.execute("print(len(context), 'x' in globals())")
    assert (again.status, again.stdout) == ("ok", "2 False\n")
    assert session.restarts == 1


def test_cancel_stops_running_code_at_once_and_the_pool_replaces_it(pool: SandboxPool) -> None:
    session = pool.acquire(DOCS)
    session.start("import time\ntime.sleep(30)", timeout=60)
    threading.Timer(0.3, session.cancel).start()
    started = time.monotonic()
    result = session.next()
    session.close()
    assert isinstance(result, ExecResult)
    assert result.status == "cancelled"
    assert time.monotonic() - started < 5
    with pool.acquire(DOCS) as fresh:
        assert fresh.execute("print(context[1])").stdout == "gamma\n"


def test_a_second_acquire_of_the_same_documents_sends_nothing(pool: SandboxPool) -> None:
    corpus = InMemoryCorpus([("only.txt", "once")])
    with pool.acquire(corpus) as first:
        first.execute("y = 2")
    with pool.acquire(corpus) as second:
        assert second.document_bytes_sent == 0
        assert second.execute("print(context[0], 'y' in globals())").stdout == "once False\n"
