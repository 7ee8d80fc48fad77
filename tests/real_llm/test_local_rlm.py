"""The real local model (Qwen2.5-Coder-1.5B on the CPU) through the whole RLM loop.

Greedy decoding and fixed threads make runs repeatable; correctness is asserted only
where this small model reliably gets it right: a count that one line of code settles (in a
document too long to read whole, so the model must write code), and a fact stated in a
short note (read whole).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import docker
from shesha import Shesha
from shesha.local.registry import ModelRegistry
from shesha.rlm import read_trace
from shesha.rlm.events import PassagesShown, PhraseCounted, RecordsMapped, StrategyChosen

pytestmark = [pytest.mark.real_llm, pytest.mark.docker]

FRUIT = "\n".join(
    f"Day {i}: the market sold {'apples' if i % 3 == 0 else 'pears'} and bread."
    for i in range(1, 601)
)  # 600 lines, about 27,000 characters: more than the local profile reads whole
ANGRY = (
    "The kettle broke after one day and I want my money back.",
    "Terrible service, the parcel came smashed and nobody answered.",
)
HAPPY = (
    "Wonderful shop, my order came early and works perfectly.",
    "Thank you so much, the staff were kind and helpful.",
)
TICKETS = "ticket,customer,message\n" + "\n".join(
    f'{i},C{i % 5},"{(ANGRY if i % 8 < 5 else HAPPY)[i % 2]}"' for i in range(40)
)  # 40 rows, 25 of them complaints, in four distinct messages
MEMO = (
    "Memo to the sales team.\nThe spring offsite will be held in Lisbon, Portugal, from "
    "12 to 14 May. Flights are booked by the office; hotels are paid by the company.\n"
    "Please send your dietary needs to Rosa Almeida before 1 May.\n"
)


@pytest.fixture(scope="module")
def sh(
    local_models: ModelRegistry,
    docker_client: docker.DockerClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Shesha]:
    home = tmp_path_factory.mktemp("local-home")
    with Shesha(
        home=str(home), models_dir=str(local_models.dir), model="local", pool_size=1,
        local_threads=2, max_iterations=6,
    ) as instance:  # fmt: skip
        yield instance


def test_the_local_model_runs_the_loop_and_counts_correctly(sh: Shesha, tmp_path: Path) -> None:
    (tmp_path / "market.txt").write_text(FRUIT)
    p = sh.project("market")
    p.add([tmp_path / "market.txt"])
    r = p.query("How many times does the word apples appear?", strategy="code")
    assert r.status in {"success", "max_iterations"}
    assert r.iterations >= 1
    assert r.usage.total_cost_usd == 0.0  # known, and zero
    trace = read_trace(r.trace_path or "")
    types = ["header"] * (trace.header is not None) + [e.type for e in trace.events]
    assert types[0] == "header"
    assert types[-1] == "summary"
    assert "exec_result" in types, "the model's code ran in the sandbox"
    assert r.status == "success"
    assert r.answer is not None
    assert "200" in r.answer
    assert [e.strategy for e in trace.events if isinstance(e, StrategyChosen)] == ["code"]


def test_the_engine_counts_a_word_the_model_names(sh: Shesha, tmp_path: Path) -> None:
    (tmp_path / "market.txt").write_text(FRUIT)
    p = sh.project("market-count")
    p.add([tmp_path / "market.txt"])
    r = p.query("How many times does the word apples appear?")
    assert (r.status, r.answer) == ("success", "200")
    assert r.iterations == 1  # one call names the word; code counts it
    trace = read_trace(r.trace_path or "")
    assert [e.strategy for e in trace.events if isinstance(e, StrategyChosen)] == ["count"]
    (counted,) = [e for e in trace.events if isinstance(e, PhraseCounted)]
    assert counted.phrase.lower() == "apples"


def test_a_short_note_is_read_whole_and_answered(sh: Shesha, tmp_path: Path) -> None:
    (tmp_path / "memo.txt").write_text(MEMO)
    p = sh.project("memo")
    p.add([tmp_path / "memo.txt"])
    r = p.query("In which city is the spring offsite held?")
    assert r.status == "success"
    assert "Lisbon" in (r.answer or "")
    assert r.iterations == 1  # read, then answered: no code was needed


def test_past_the_window_a_fact_is_read_from_a_short_window_of_the_best_passages(
    sh: Shesha, tmp_path: Path
) -> None:
    half = len(FRUIT) // 2
    (tmp_path / "log.txt").write_text(FRUIT[:half] + "\n\n" + MEMO + "\n" + FRUIT[half:])
    p = sh.project("log-memo")
    p.add([tmp_path / "log.txt"])
    r = p.query("In which city is the spring offsite held?")
    assert r.status == "success"
    assert "Lisbon" in (r.answer or "")
    trace = read_trace(r.trace_path or "")
    assert [e.strategy for e in trace.events if isinstance(e, StrategyChosen)] == ["retrieve"]
    first = next(e for e in trace.events if isinstance(e, PassagesShown))
    assert first.round == 1
    assert first.chars <= 4_000  # the local profile's short first read
    assert r.iterations == 1  # the short read answered: it was not widened
    memo_at = p.text("log.txt").index("The spring offsite")
    assert any(s.start <= memo_at < s.end for s in first.passages), "the memo was read"


def test_a_second_question_ends_with_a_status_and_a_complete_trace(sh: Shesha) -> None:
    p = sh.project("market")
    r = p.query("Which day numbers sold apples? List the first three.")
    # The loop must end cleanly; "stalled" is an end too (a guess it would not accept).
    assert r.status in {"success", "max_iterations", "stalled"}
    trace = read_trace(r.trace_path or "")
    assert trace.header is not None
    assert trace.events[-1].type == "summary"
    # Past the window, a question about some of the lines is read from the best passages
    # (or, when they do not give it, worked out with code).
    assert any(e.type in ("passages", "code") for e in trace.events)


def test_records_are_labelled_by_sub_calls_and_counted_by_code(sh: Shesha, tmp_path: Path) -> None:
    (tmp_path / "tickets.csv").write_text(TICKETS)
    p = sh.project("tickets")
    p.add([tmp_path / "tickets.csv"])
    r = p.query("How many of the messages are complaints?")
    assert (r.status, r.answer) == ("success", "25")
    trace = read_trace(r.trace_path or "")
    assert [e.strategy for e in trace.events if isinstance(e, StrategyChosen)] == ["map"]
    (mapped,) = [e for e in trace.events if isinstance(e, RecordsMapped)]
    assert (mapped.records, mapped.distinct, mapped.read) == (40, 4, ["message"])
    assert r.subcalls >= 4  # each distinct message was read by a sub-call
