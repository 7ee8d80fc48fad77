"""The eval runner and `shesha eval` in-process: an oracle FunctionModel that answers
from each task's gold, and the runner as a local process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.oracle import oracle as gold_answers
from tests.oracle import read_tasks
from typer.testing import CliRunner, Result

from shesha import Shesha
from shesha.bench import generate
from shesha.bench.runner import EvalRunner
from shesha.bench.tasks import EvalTask, write_task_set
from shesha.cli import app
from shesha.errors import ConfigError
from shesha.llm.types import Message
from shesha.sandbox import SandboxPool
from shesha.testing import Fail, FunctionModel, ScriptedLLMServer, ScriptedReply


def oracle(tasks: list[EvalTask], answer: Callable[[EvalTask], str]) -> FunctionModel:
    return FunctionModel(gold_answers(tasks, answer), name="oracle")


@pytest.fixture
def task_set(tmp_path: Path) -> tuple[Path, list[EvalTask]]:
    spec, tasks = generate.oolong(4, 2, [1024, 2048])
    write_task_set(tmp_path / "tasks", spec, tasks)
    return tmp_path / "tasks", tasks


@pytest.fixture
def shesha_for(sandboxes: SandboxPool, tmp_path: Path) -> Callable[[FunctionModel], Shesha]:
    def make(model: FunctionModel) -> Shesha:
        return Shesha(home=str(tmp_path / "home"), llm=model, sandboxes=sandboxes)

    return make


def cli(tmp_path: Path, sandboxes: SandboxPool, model: FunctionModel | None, *args: str) -> Result:
    """`shesha ...` as a user would type it, with the oracle as its model."""

    def factory(**kwargs: Any) -> Shesha:
        return Shesha(llm=model, sandboxes=sandboxes, **kwargs)

    env = {"SHESHA_HOME": str(tmp_path / "home"), "SHESHA_MODEL": None}
    return CliRunner().invoke(app, list(args), obj=factory, env=env)


def test_an_oracle_scores_one_and_the_summary_says_so(
    task_set: tuple[Path, list[EvalTask]], shesha_for: Any, tmp_path: Path
) -> None:
    folder, tasks = task_set
    model = oracle(tasks, lambda t: t.gold)
    with shesha_for(model) as sh:
        rows = asyncio.run(EvalRunner(sh, folder, tmp_path / "out").run())
    assert [r.score for r in rows] == [1.0] * 4
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["mean_score"] == 1.0
    assert [g["length_tokens"] for g in summary["by_length"]] == [1024, 2048]
    fp = summary["fingerprint_data"]
    assert fp["model"] == "oracle"
    assert fp["task_set"]["seed"] == 4
    assert len(fp["prompt_hash"]) == 16
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4
    assert all(Path(json.loads(line)["trace_path"]).is_file() for line in lines)


def test_scores_follow_the_rules_for_imperfect_answers(
    task_set: tuple[Path, list[EvalTask]], shesha_for: Any, tmp_path: Path
) -> None:
    folder, tasks = task_set

    def off_by_one(t: EvalTask) -> str:
        return str(int(t.gold) + 1) if t.scoring == "numeric" else "wrong"

    with shesha_for(oracle(tasks, off_by_one)) as sh:
        rows = asyncio.run(EvalRunner(sh, folder, tmp_path / "out").run())
    for row, task in zip(rows, tasks, strict=True):
        assert row.score == (0.75 if task.scoring == "numeric" else 0.0)


def test_resume_skips_finished_tasks(
    task_set: tuple[Path, list[EvalTask]], shesha_for: Any, tmp_path: Path
) -> None:
    folder, tasks = task_set
    model = oracle(tasks, lambda t: t.gold)
    with shesha_for(model) as sh:
        first = asyncio.run(EvalRunner(sh, folder, tmp_path / "out").run(limit=2))
        asked = len(model.calls)
        rows = asyncio.run(EvalRunner(sh, folder, tmp_path / "out").run(resume=True))
    assert len(first) == 2
    assert len(rows) == 4
    # Only the two unfinished tasks ran: two steps each (look, then answer).
    assert len(model.calls) - asked == 2 * 2
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == 4


def test_workers_run_tasks_at_once_and_write_what_one_worker_writes(
    task_set: tuple[Path, list[EvalTask]], shesha_for: Any, tmp_path: Path
) -> None:
    folder, tasks = task_set
    answer = gold_answers(tasks, lambda t: t.gold)
    running, most, at_once = 0, 0, 1

    async def slow_oracle(messages: list[Any], model: str) -> str:
        # Each call waits (up to 10 s, so a busy machine cannot flake it) until as many
        # calls as the run should hold at once have been seen together; a run that
        # holds fewer never gets there, and `most` says so.
        nonlocal running, most
        running += 1
        most = max(most, running)
        deadline = time.monotonic() + 10
        while most < at_once and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        running -= 1
        return answer(messages, model)

    def rows_without_timings(out: Path) -> list[dict[str, Any]]:
        lines = (out / "results.jsonl").read_text().splitlines()
        return [
            {k: v for k, v in json.loads(line).items() if k not in ("latency_s", "trace_path")}
            for line in lines
        ]

    with shesha_for(FunctionModel(slow_oracle, name="oracle")) as sh:
        alone = asyncio.run(EvalRunner(sh, folder, tmp_path / "one").run(workers=1))
        assert most == 1
        at_once = 3
        together = asyncio.run(EvalRunner(sh, folder, tmp_path / "three").run(workers=3))
        with pytest.raises(ConfigError, match="workers must be at least 1"):
            asyncio.run(EvalRunner(sh, folder, tmp_path / "none").run(workers=0))
    assert most == 3  # three tasks at once (the pool has three sandboxes)
    assert [r.task_id for r in together] == [t.id for t in tasks]
    assert rows_without_timings(tmp_path / "three") == rows_without_timings(tmp_path / "one")
    assert [r.score for r in alone] == [r.score for r in together] == [1.0] * 4
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    three = json.loads((tmp_path / "three" / "summary.json").read_text())
    assert one["fingerprint"] == three["fingerprint"]
    assert one["mean_score"] == three["mean_score"]


def test_the_direct_baseline_is_truncated_to_its_window_and_says_so(
    task_set: tuple[Path, list[EvalTask]], shesha_for: Any, tmp_path: Path
) -> None:
    folder, tasks = task_set
    model = oracle(tasks, lambda t: t.gold)
    with shesha_for(model) as sh:
        runner = EvalRunner(sh, folder, tmp_path / "direct", method="direct", window_tokens=2000)
        rows = asyncio.run(runner.run())
    by_length = {r.length_tokens: r for r in rows}
    assert by_length[1024].truncated == 0.0
    assert by_length[2048].truncated > 0.2
    assert all(r.method == "direct" for r in rows)


def test_when_the_window_is_smaller_than_estimated_direct_cuts_more_and_asks_again(
    task_set: tuple[Path, list[EvalTask]], sandboxes: SandboxPool, tmp_path: Path
) -> None:
    folder, tasks = task_set
    gold = {t.question: t.gold for t in tasks}

    def dense(messages: list[dict[str, Any]], model: str) -> ScriptedReply:
        """A provider whose tokenizer packs 2 characters a token (not the 3.5 estimated)."""
        used = sum(len(str(m["content"])) for m in messages) // 2
        if used > 2000:
            return Fail(
                400,
                f"This model's maximum context length is 2000 tokens. However, you "
                f"requested {used} tokens ({used} in the messages, None in the completion).",
            )
        question = str(messages[-1]["content"]).rsplit("Question: ", 1)[1]
        return gold[question]

    with (
        ScriptedLLMServer(dense) as server,
        Shesha(
            home=str(tmp_path / "home"),
            model="openai/scripted",
            api_base=server.api_base,
            api_key="t",
            sandboxes=sandboxes,
        ) as sh,
    ):
        runner = EvalRunner(sh, folder, tmp_path / "direct", method="direct", window_tokens=2000)
        rows = asyncio.run(runner.run())
    long = [r for r in rows if r.length_tokens == 2048]
    assert [(r.status, r.score) for r in long] == [("success", 1.0)] * len(long)
    assert all(r.truncated > 0.3 for r in long)  # cut to what the provider said fits


def test_the_cli_generates_and_runs(sandboxes: SandboxPool, tmp_path: Path) -> None:
    gen = cli(tmp_path, sandboxes, None, "eval", "generate", "sniah", "--seed", "1", "--n", "2",
              "--lengths", "1k", "--out", str(tmp_path / "sn"))  # fmt: skip
    assert gen.exit_code == 0, gen.stderr
    model = oracle(read_tasks(tmp_path / "sn"), lambda t: t.gold)
    run = cli(tmp_path, sandboxes, model, "eval", "run", str(tmp_path / "sn"),
              "--out", str(tmp_path / "res"))  # fmt: skip
    assert run.exit_code == 0, run.stderr
    assert "1.000" in run.stdout
    assert (tmp_path / "res" / "summary.json").is_file()


def test_report_only_without_results_says_what_to_do(tmp_path: Path) -> None:
    script = Path(__file__).parents[2] / "examples" / "reproduce" / "sniah_rlm_vs_direct.py"
    done = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path / "empty"), "--report-only"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "no results" in done.stderr
    assert "without --report-only" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_qa_task_set_from_a_questions_file_runs_and_reports_by_type(
    sandboxes: SandboxPool, tmp_path: Path
) -> None:
    (tmp_path / "acme.txt").write_text("Acme was founded in 1987. The CEO is Maria Lopez.")
    rows = [
        {"id": "ceo", "question": "Who is the CEO?", "documents": ["acme.txt"],
         "gold": "Maria Lopez", "type": "name", "split": "test"},
        {"id": "year", "question": "When was Acme founded?", "documents": ["acme.txt"],
         "gold": "1987", "type": "date", "split": "test"},
        {"id": "dev", "question": "Dev only?", "documents": ["acme.txt"], "gold": "x",
         "split": "dev"},
    ]  # fmt: skip
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    questions = str(tmp_path / "q.jsonl")
    gen = cli(tmp_path, sandboxes, None, "eval", "generate", "qa", "--questions", questions,
              "--split", "test", "--out", str(tmp_path / "qa"))  # fmt: skip
    assert gen.exit_code == 0, gen.stderr
    tasks = read_tasks(tmp_path / "qa")
    assert [t.id for t in tasks] == ["ceo", "year"]
    model = oracle(tasks, lambda t: t.gold)
    run = cli(tmp_path, sandboxes, model, "eval", "run", str(tmp_path / "qa"),
              "--out", str(tmp_path / "res"))  # fmt: skip
    assert run.exit_code == 0, run.stderr
    assert "right, status success" in run.stdout
    summary = json.loads((tmp_path / "res" / "summary.json").read_text())
    by_type = {g["type"]: g for g in summary["by_type"]}
    assert by_type["name"]["right_and_success"] == 1
    assert by_type["date"]["share"] == 1.0


def test_max_cost_starts_no_task_once_spent_and_resume_goes_on(
    task_set: tuple[Path, list[EvalTask]], sandboxes: SandboxPool, tmp_path: Path
) -> None:
    """The run's cost cap, over all workers: a model with a known price (served by the
    scripted server) spends past the cap, and no task starts after that."""
    folder, tasks = task_set
    script = gold_answers(tasks, lambda t: t.gold)
    with ScriptedLLMServer(script) as server:
        settings: dict[str, Any] = {
            "home": str(tmp_path / "home"),
            "model": "openai/gpt-4o-mini",  # LiteLLM's price list knows it: each call costs
            "api_base": server.api_base,
            "api_key": "t",
        }
        with Shesha(sandboxes=sandboxes, **settings) as sh:
            full = asyncio.run(EvalRunner(sh, folder, tmp_path / "full").run())
            costs = [r.cost_usd for r in full]
            assert all(c is not None and c > 0 for c in costs)
            cap = sum(c for c in costs[:2] if c is not None) * 0.99  # spent within task 2
            capped = asyncio.run(EvalRunner(sh, folder, tmp_path / "capped").run(max_cost_usd=cap))
            asked = len(server.requests)
            rest = asyncio.run(EvalRunner(sh, folder, tmp_path / "capped").run(resume=True))
    assert [r.task_id for r in capped] == [t.id for t in tasks[:2]]
    summary = json.loads((tmp_path / "capped" / "summary.json").read_text())
    assert summary["tasks"] == 4  # the resumed run's summary: all of them
    assert [r.task_id for r in rest] == [t.id for t in tasks]
    assert len(server.requests) - asked == 2 * 2  # only the two not run before


def test_a_capped_run_says_it_stopped_at_the_cap(
    task_set: tuple[Path, list[EvalTask]], sandboxes: SandboxPool, tmp_path: Path
) -> None:
    folder, tasks = task_set
    with ScriptedLLMServer(gold_answers(tasks, lambda t: t.gold)) as server, Shesha(
        sandboxes=sandboxes, home=str(tmp_path / "home"), model="openai/gpt-4o-mini",
        api_base=server.api_base, api_key="t",
    ) as sh:  # fmt: skip
        rows = asyncio.run(EvalRunner(sh, folder, tmp_path / "out").run(max_cost_usd=0.0))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert rows == []
    assert (summary["stopped"], summary["not_run"], summary["tasks"]) == ("max_cost_usd", 4, 0)
    assert json.loads((tmp_path / "out" / "executor.json").read_text())["tasks"] == 0


def test_resume_runs_again_a_task_whose_workers_were_all_lost(
    task_set: tuple[Path, list[EvalTask]], shesha_for: Any, tmp_path: Path
) -> None:
    """A row with status ``lost`` (every Ray worker died under it) is not a result:
    ``resume`` runs that task again and its new row replaces it."""
    folder, tasks = task_set
    model = oracle(tasks, lambda t: t.gold)
    with shesha_for(model) as sh:
        first = asyncio.run(EvalRunner(sh, folder, tmp_path / "out").run())
        results = tmp_path / "out" / "results.jsonl"
        lines = results.read_text().splitlines()
        lost = first[0].model_copy(update={"status": "lost", "score": 0.0, "answer": None})
        results.write_text("\n".join([lost.model_dump_json(), *lines[1:]]) + "\n")
        asked = len(model.calls)
        rows = asyncio.run(EvalRunner(sh, folder, tmp_path / "out").run(resume=True))
    assert len(model.calls) - asked == 2  # only the lost task, two steps
    assert [r.status for r in rows] == ["success"] * 4
    assert [r.score for r in rows] == [1.0] * 4


def test_eval_run_paces_every_worker_s_calls_at_the_rate_given(
    task_set: tuple[Path, list[EvalTask]], sandboxes: SandboxPool, tmp_path: Path
) -> None:
    folder, tasks = task_set
    answer = gold_answers(tasks, lambda t: t.gold)
    arrived: list[float] = []

    def timed(messages: list[Message], model: str) -> str:
        arrived.append(time.monotonic())
        return answer(messages, model)

    run = cli(tmp_path, sandboxes, FunctionModel(timed), "eval", "run", str(folder), "--workers",
              "2", "--calls-per-minute", "600", "--out", str(tmp_path / "res"))  # fmt: skip
    assert run.exit_code == 0, run.stderr
    assert len(arrived) == 8  # 4 tasks, two steps each
    # One call every 0.1 s across both workers (a call may start late, never early).
    assert max(arrived) - min(arrived) >= 7 * 0.1 - 0.1


@pytest.mark.parametrize("bad", ["0", "-3", "often"])
def test_eval_run_refuses_a_rate_that_is_not_a_positive_number(
    task_set: tuple[Path, list[EvalTask]], sandboxes: SandboxPool, tmp_path: Path, bad: str
) -> None:
    folder, tasks = task_set
    run = cli(tmp_path, sandboxes, oracle(tasks, lambda t: t.gold), "eval", "run", str(folder),
              "--calls-per-minute", bad, "--out", str(tmp_path / "res"))  # fmt: skip
    assert run.exit_code != 0
    assert "calls-per-minute" in run.output or "calls_per_minute" in run.output
    assert not (tmp_path / "res").exists()  # nothing half-written
