"""Generators (determinism, gold answers checked independently) and scoring rules."""

from __future__ import annotations

import re
from collections import Counter
from itertools import combinations
from pathlib import Path

import pytest

from shesha import Shesha
from shesha.bench import generate
from shesha.bench.runner import EvalRunner
from shesha.bench.scoring import (
    constant_baseline,
    parse_pairs,
    score,
    score_exact,
    score_numeric,
    score_pairs_f1,
)
from shesha.bench.tasks import EvalTask, Scoring, parse_lengths, read_task_set, write_task_set
from shesha.errors import ConfigError
from shesha.local.registry import DEFAULT_LOCAL_MODEL

RECORD = re.compile(r"Date: (\S+) \|\| User: (\d+) \|\| Instance: (.*)")
LABEL_OF = {text: label for label, texts in generate.TEMPLATES.items() for text in texts}


def records(task: EvalTask) -> list[tuple[int, str]]:
    """(user, label) for each record, read back from the document text alone."""
    out = []
    for line in task.documents[0][1].splitlines():
        m = RECORD.fullmatch(line)
        assert m, line
        out.append((int(m.group(2)), LABEL_OF[m.group(3)]))
    return out


@pytest.mark.parametrize("kind", ["sniah", "oolong", "oolong-pairs"])
def test_the_same_seed_gives_the_same_bytes(kind: str, tmp_path: Path) -> None:
    make = {
        "sniah": generate.sniah,
        "oolong": generate.oolong,
        "oolong-pairs": generate.oolong_pairs,
    }
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        spec, tasks = make[kind](seed, 3, [1024, 2048])
        write_task_set(tmp_path / name, spec, tasks)
    a, b, c = ((tmp_path / x / "tasks.jsonl").read_bytes() for x in "abc")
    assert a == b
    assert a != c


def test_task_sets_round_trip(tmp_path: Path) -> None:
    spec, tasks = generate.oolong(1, 2, [1024])
    write_task_set(tmp_path, spec, tasks)
    spec2, tasks2 = read_task_set(tmp_path)
    assert spec2 == spec
    assert tasks2 == tasks


def test_sniah_places_one_needle_at_the_given_depth_and_length(tmp_path: Path) -> None:
    hay = tmp_path / "hay"
    hay.mkdir()
    (hay / "essay.txt").write_text("An essay sentence about startups. " * 400)
    spec, tasks = generate.sniah(3, 4, [2048], hay)
    assert spec.haystack == str(hay)
    for task in tasks:
        text = task.documents[0][1]
        assert text.count("The special magic number for") == 1
        assert f"is: {task.gold}." in text
        assert abs(len(text) - 2048 * 4) < 100
        position = text.index("The special magic number")
        assert abs(position / len(text) - task.meta["depth"]) < 0.05
        assert "startups" in text


def test_sniah_tasks_of_one_length_share_one_haystack(tmp_path: Path) -> None:
    # As in RULER: one haystack per length, so tasks differ only by needle and depth (and a
    # local server can reuse the shared prefix of consecutive direct prompts).
    hay = tmp_path / "hay"
    hay.mkdir()
    (hay / "essay.txt").write_text("".join(f"Sentence number {i} is here. " for i in range(5000)))
    _, tasks = generate.sniah(3, 4, [1024, 2048], hay)

    def without_needle(task: EvalTask) -> str:
        text = task.documents[0][1]
        needle = f" The special magic number for {task.meta['key']} is: {task.gold}. "
        assert needle in text
        return text.replace(needle, "", 1)

    short = {without_needle(t) for t in tasks if t.length_tokens == 1024}
    long = {without_needle(t) for t in tasks if t.length_tokens == 2048}
    assert len(short) == 1
    assert len(long) == 1
    assert short.pop()[:200] != long.pop()[:200]


def test_sniah_falls_back_to_filler_text() -> None:
    spec, tasks = generate.sniah(1, 1, [1024], None)
    assert spec.haystack == "generated filler"
    assert "special magic number" in tasks[0].documents[0][1]


def test_oolong_gold_answers_match_an_independent_count() -> None:
    _, tasks = generate.oolong(5, 9, [2048])
    kinds = set()
    for task in tasks:
        recs = records(task)
        counts = Counter(label for _, label in recs)
        kind = task.meta["question_kind"]
        kinds.add(kind)
        if kind == "count":
            label = re.search(r"label '(\w+)'", task.question).group(1)  # type: ignore[union-attr]
            assert task.gold == str(counts[label])
        elif kind == "most_frequent":
            assert task.gold == counts.most_common(1)[0][0]
        else:
            m = re.search(r"user (\d+) have more '(\w+)' instances than user (\d+)", task.question)
            assert m is not None
            a, label, b = int(m.group(1)), m.group(2), int(m.group(3))
            per = Counter((u, lab) for u, lab in recs)
            assert task.gold == ("yes" if per[(a, label)] > per[(b, label)] else "no")
    assert kinds == {"count", "most_frequent", "compare"}


def test_pairs_gold_matches_an_independent_join() -> None:
    _, tasks = generate.oolong_pairs(2, 3, [2048])
    for task in tasks:
        label, threshold = task.meta["label"], task.meta["threshold"]
        per = Counter(u for u, lab in records(task) if lab == label)
        users = sorted(u for u, c in per.items() if c >= threshold)
        assert parse_pairs(task.gold) == set(combinations(users, 2))


def test_scoring_rules() -> None:
    assert score_numeric("There are 12 of them", "12") == 1.0
    assert score_numeric("14", "12") == pytest.approx(0.75**2)
    assert score_numeric("none", "12") == 0.0
    assert score_numeric("1,204", "1204") == 1.0
    assert score_exact("Praise.", "praise") == 1.0
    assert score_exact("Answer: yes", "yes") == 1.0
    assert score_exact("no, I think yes", "yes") == 0.0
    assert score_pairs_f1("(1, 2), (3, 4)", "(1, 2), (3, 4)") == 1.0
    assert score_pairs_f1("(2, 1)", "(1, 2), (3, 4)") == pytest.approx(2 / 3)
    assert score_pairs_f1("", "(1, 2)") == 0.0
    task = EvalTask(id="t", kind="sniah", length_tokens=1, documents=[], question="q",
                    gold="1234567", scoring="contains")  # fmt: skip
    assert score(task, "The number is 1234567.") == 1.0
    assert score(task, None) == 0.0


def test_lengths_parse() -> None:
    assert parse_lengths("8k, 32k,1m,500") == [8192, 32768, 1048576, 500]
    with pytest.raises(ConfigError):
        parse_lengths("big")


def test_the_fingerprint_pins_the_local_model_file_and_greedy_decoding(tmp_path: Path) -> None:
    # "local" names whichever model is the default today; a result must name the file.
    spec, tasks = generate.sniah(0, 1, [512], None)
    write_task_set(tmp_path / "tasks", spec, tasks)
    with Shesha(home=str(tmp_path / "home"), model="local") as sh:
        local = EvalRunner(sh, tmp_path / "tasks", tmp_path / "out").fingerprint_data
    with Shesha(home=str(tmp_path / "home"), model="openai/gpt-x") as sh:
        remote = EvalRunner(sh, tmp_path / "tasks", tmp_path / "out").fingerprint_data
    assert local["local_model"]["name"] == DEFAULT_LOCAL_MODEL
    assert len(local["local_model"]["sha256"]) == 64
    assert local["temperature"] == 0.0
    assert remote["local_model"] is None
    assert remote["temperature"] is None


def test_the_constant_baseline_is_the_best_single_answer_per_kind_of_question() -> None:
    def task(kind: str, gold: str, scoring: Scoring, length: int = 1) -> EvalTask:
        return EvalTask(id=f"{kind}-{gold}", kind="oolong", length_tokens=length, documents=[],
                        question="q", gold=gold, scoring=scoring,
                        meta={"question_kind": kind})  # fmt: skip

    tasks = [
        task("compare", "no", "exact"), task("compare", "no", "exact"),
        task("compare", "yes", "exact"),  # "no" every time: 2 of 3
        task("count", "10", "numeric"), task("count", "11", "numeric"),  # "10": 1 + 0.75
    ]  # fmt: skip
    assert constant_baseline(tasks) == pytest.approx((2 + 1.75) / 5)
    assert constant_baseline([]) == 0.0
    # Chosen on another set: "yes" there, so 1 of 3 here; no counts there, so 0 for them.
    other = [task("compare", "yes", "exact"), task("compare", "yes", "exact", length=2)]
    assert constant_baseline(tasks, chosen_on=other) == pytest.approx(1 / 5)
    # A kind with one task, chosen on itself, scores 1: why a split is not its own prior.
    assert constant_baseline([task("most", "praise", "exact")]) == 1.0
