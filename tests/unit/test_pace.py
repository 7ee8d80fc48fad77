"""A rate limit on model calls: ``calls_per_minute`` spaces each model's calls over every
query of one Shesha, whatever thread runs them; ``CallRate`` is the schedule."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from shesha import Shesha
from shesha.errors import ConfigError
from shesha.llm.pace import CallRate
from shesha.llm.types import Message
from shesha.sandbox import InMemoryCorpus, SandboxPool
from shesha.testing import FunctionModel

CORPUS = InMemoryCorpus([("a.txt", "The secret code is 4711.")])


def test_a_rate_spaces_one_model_s_calls_and_not_another_s() -> None:
    now = [100.0]
    rate = CallRate(600, clock=lambda: now[0])
    assert [rate.reserve("a") for _ in range(3)] == pytest.approx([0.0, 0.1, 0.2])
    assert rate.reserve("b") == 0.0  # another model has a schedule of its own
    now[0] += 1.0  # idle a while: nothing is owed, and no burst is saved up
    assert [rate.reserve("a") for _ in range(2)] == pytest.approx([0.0, 0.1])


@pytest.mark.parametrize("bad", [0, -5, "fast"])
def test_a_rate_that_is_not_a_positive_number_is_refused_by_name(bad: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Invalid setting calls_per_minute"):
        Shesha(home=str(tmp_path), calls_per_minute=bad)


def timed_model(times: list[float]) -> FunctionModel:
    async def reply(messages: list[Message], model: str) -> str:
        times.append(time.monotonic())
        await asyncio.sleep(0.01)
        return "4711"

    return FunctionModel(reply)


def ask_at_once(sh: Shesha, n: int) -> list[str | None]:
    async def all_of_them() -> list[str | None]:
        results = await asyncio.gather(
            *(sh.aquery_corpus("What is the code?", CORPUS, strategy="read") for _ in range(n))
        )
        return [r.answer for r in results]

    return asyncio.run(all_of_them())


def span(times: list[float]) -> float:
    """From the first call to the last. A call may start late (a busy machine wakes it
    late), never early, so only the first call's lateness can shorten it."""
    return max(times) - min(times)


SLACK_S = 0.1


def test_queries_at_once_share_one_shesha_s_rate(sandboxes: SandboxPool, tmp_path: Path) -> None:
    times: list[float] = []
    with Shesha(
        home=str(tmp_path), llm=timed_model(times), sandboxes=sandboxes, calls_per_minute=300
    ) as sh:
        assert ask_at_once(sh, 4) == ["4711"] * 4
    assert len(times) == 4
    assert span(times) >= 3 * 0.2 - SLACK_S  # one call every 0.2 s, whichever query


def test_without_a_rate_the_same_queries_call_at_once(
    sandboxes: SandboxPool, tmp_path: Path
) -> None:
    """The control: what the rate holds back does happen without it."""
    times: list[float] = []
    with Shesha(home=str(tmp_path), llm=timed_model(times), sandboxes=sandboxes) as sh:
        assert ask_at_once(sh, 3) == ["4711"] * 3
    assert span(times) < 0.2  # what one turn of the rate above would take


def test_queries_on_several_threads_share_the_rate(sandboxes: SandboxPool, tmp_path: Path) -> None:
    """The way `shesha eval run --workers N` and the server run queries: a thread and an
    event loop each."""
    times: list[float] = []
    with Shesha(
        home=str(tmp_path), llm=timed_model(times), sandboxes=sandboxes, calls_per_minute=300
    ) as sh:
        threads = [threading.Thread(target=ask_at_once, args=(sh, 1)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(times) == 3
    assert span(times) >= 2 * 0.2 - SLACK_S
