"""The eval runner end to end: a scripted oracle model over HTTP, real Docker sandboxes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shesha import Shesha
from shesha.bench import generate
from shesha.bench.runner import EvalRunner
from shesha.bench.tasks import EvalTask, write_task_set
from shesha.testing import Reply, ScriptedLLMServer

pytestmark = pytest.mark.docker


def oracle(tasks: list[EvalTask], answer: Callable[[EvalTask], str]) -> Any:
    """Answers each task from its gold. Questions repeat across tasks, so a task is found by
    its question and its document's size (RLM: from the system prompt; direct: the text)."""

    def find(messages: list[dict[str, Any]]) -> EvalTask | None:
        system, user = str(messages[0]["content"]), str(messages[1]["content"])
        for t in tasks:
            name, text = t.documents[0]
            if t.question not in user:
                continue
            if f"{name} ({len(text):,} chars)" in system or text[:200] in user:
                return t
        return None

    def script(messages: list[dict[str, Any]], model: str) -> Reply:
        task = find(messages)
        if task is None:
            return "FINAL(unknown)"
        if str(messages[0]["content"]).startswith("Answer the question using"):
            return answer(task)  # the direct baseline: the answer itself
        if not any(m["role"] == "assistant" for m in messages):
            # Look first, as a model must: here, code that finds (prints) the answer.
            return f"```repl\nprint(context[0][:100], {answer(task)!r})\n```"
        return f"```repl\nFINAL({answer(task)!r})\n```"

    return script


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHESHA_")}
    env.update({"SHESHA_HOME": str(tmp_path / "home"), "SHESHA_POOL_SIZE": "1"})
    return env


def eval_run(
    task_dir: Path, server: ScriptedLLMServer, out: Path
) -> subprocess.CompletedProcess[str]:
    """`shesha eval run` against the scripted server, as a user would type it."""
    shesha = str(Path(sys.executable).with_name("shesha"))
    return subprocess.run(
        [shesha, "eval", "run", str(task_dir), "--model", "openai/oracle", "--api-base",
         server.api_base, "--api-key", "t", "--out", str(out)],
        env=cli_env(out.parent), capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip


def read_tasks(task_dir: Path) -> list[EvalTask]:
    return [
        EvalTask.model_validate_json(line)
        for line in (task_dir / "tasks.jsonl").read_text().splitlines()
    ]


@pytest.fixture
def task_set(tmp_path: Path) -> tuple[Path, list[EvalTask]]:
    spec, tasks = generate.oolong(4, 2, [1024, 2048])
    write_task_set(tmp_path / "tasks", spec, tasks)
    return tmp_path / "tasks", tasks


@pytest.fixture
def server_for(tmp_path: Path) -> Iterator[Callable[[Any], ScriptedLLMServer]]:
    servers: list[ScriptedLLMServer] = []

    def make(script: Any) -> ScriptedLLMServer:
        s = ScriptedLLMServer(script).start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


def shesha_for(server: ScriptedLLMServer, tmp_path: Path) -> Shesha:
    return Shesha(home=str(tmp_path / "home"), model="openai/oracle", api_base=server.api_base,
                  api_key="t", pool_size=1)  # fmt: skip


def test_an_oracle_scores_one_and_the_summary_says_so(
    task_set: tuple[Path, list[EvalTask]], server_for: Any, tmp_path: Path
) -> None:
    folder, tasks = task_set
    server = server_for(oracle(tasks, lambda t: t.gold))
    with shesha_for(server, tmp_path) as sh:
        rows = asyncio.run(EvalRunner(sh, folder, tmp_path / "out").run())
    assert [r.score for r in rows] == [1.0] * 4
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["mean_score"] == 1.0
    assert [g["length_tokens"] for g in summary["by_length"]] == [1024, 2048]
    fp = summary["fingerprint_data"]
    assert fp["model"] == "openai/oracle"
    assert fp["task_set"]["seed"] == 4
    assert len(fp["prompt_hash"]) == 16
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4
    assert all(Path(json.loads(line)["trace_path"]).is_file() for line in lines)


def test_scores_follow_the_rules_for_imperfect_answers(
    task_set: tuple[Path, list[EvalTask]], server_for: Any, tmp_path: Path
) -> None:
    folder, tasks = task_set

    def off_by_one(t: EvalTask) -> str:
        return str(int(t.gold) + 1) if t.scoring == "numeric" else "wrong"

    server = server_for(oracle(tasks, off_by_one))
    with shesha_for(server, tmp_path) as sh:
        rows = asyncio.run(EvalRunner(sh, folder, tmp_path / "out").run())
    for row, task in zip(rows, tasks, strict=True):
        assert row.score == (0.75 if task.scoring == "numeric" else 0.0)


def test_resume_skips_finished_tasks(
    task_set: tuple[Path, list[EvalTask]], server_for: Any, tmp_path: Path
) -> None:
    folder, tasks = task_set
    server = server_for(oracle(tasks, lambda t: t.gold))
    with shesha_for(server, tmp_path) as sh:
        first = asyncio.run(EvalRunner(sh, folder, tmp_path / "out").run(limit=2))
        asked = len(server.requests)
        rows = asyncio.run(EvalRunner(sh, folder, tmp_path / "out").run(resume=True))
    assert len(first) == 2
    assert len(rows) == 4
    # Only the two unfinished tasks ran: two steps each (look, then answer).
    assert len(server.requests) - asked == 2 * 2
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == 4


def test_the_direct_baseline_is_truncated_to_its_window_and_says_so(
    task_set: tuple[Path, list[EvalTask]], server_for: Any, tmp_path: Path
) -> None:
    folder, tasks = task_set
    server = server_for(oracle(tasks, lambda t: t.gold))
    with shesha_for(server, tmp_path) as sh:
        runner = EvalRunner(sh, folder, tmp_path / "direct", method="direct", window_tokens=2000)
        rows = asyncio.run(runner.run())
    by_length = {r.length_tokens: r for r in rows}
    assert by_length[1024].truncated == 0.0
    assert by_length[2048].truncated > 0.2
    assert all(r.method == "direct" for r in rows)


def test_the_cli_generates_and_runs(server_for: Any, tmp_path: Path) -> None:
    shesha = str(Path(sys.executable).with_name("shesha"))
    env = cli_env(tmp_path)
    gen = subprocess.run(
        [shesha, "eval", "generate", "sniah", "--seed", "1", "--n", "2", "--lengths", "1k",
         "--out", str(tmp_path / "sn")],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    server = server_for(oracle(read_tasks(tmp_path / "sn"), lambda t: t.gold))
    run = eval_run(tmp_path / "sn", server, tmp_path / "res")
    assert run.returncode == 0, run.stderr
    assert "1.000" in run.stdout
    assert (tmp_path / "res" / "summary.json").is_file()


def test_the_sniah_reproduction_script_writes_its_table_plot_and_run_record(
    server_for: Any, tmp_path: Path
) -> None:
    _, tasks = generate.sniah(0, 2, [512, 2048], None)
    server = server_for(oracle(tasks, lambda t: t.gold))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHESHA_")}
    env.update({"SHESHA_HOME": str(tmp_path / "home"), "SHESHA_POOL_SIZE": "1"})
    script = Path(__file__).parents[2] / "examples" / "reproduce" / "sniah_rlm_vs_direct.py"
    out = tmp_path / "study"
    run = subprocess.run(
        [sys.executable, str(script), "--model", "openai/oracle", "--api-base", server.api_base,
         "--n", "2", "--lengths", "512,2k", "--haystack", "none", "--window-tokens", "1024",
         "--out", str(out)],
        env={**env, "OPENAI_API_KEY": "t"}, capture_output=True, text=True, check=False,
        timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    table = json.loads((out / "table.json").read_text())
    assert [r["mean_score"] for r in table["rlm"]] == [1.0, 1.0]
    assert [r["length_tokens"] for r in table["direct"]] == [512, 2048]
    assert table["direct"][1]["mean_truncated"] > 0.4  # 2K tokens cut to a 1K window
    assert "| 2,048 | 1.00 |" in (out / "table.md").read_text()
    assert (out / "sniah.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((out / "run.json").read_text())
    assert record["command"].startswith("python ")
    assert record["machine"]["cores"] == os.cpu_count()
    assert record["direct_window_tokens"] == 1024
    assert set(record["methods"]) == {"rlm", "direct"}
    assert record["git_commit"]
    (out / "table.md").unlink()
    again = subprocess.run(
        [sys.executable, str(script), "--model", "openai/oracle", "--out", str(out),
         "--report-only"],
        env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "| 2,048 | 1.00 |" in (out / "table.md").read_text()


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
    server_for: Any, tmp_path: Path
) -> None:
    shesha = str(Path(sys.executable).with_name("shesha"))
    env = cli_env(tmp_path)
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
    gen = subprocess.run(
        [shesha, "eval", "generate", "qa", "--questions", str(tmp_path / "q.jsonl"),
         "--split", "test", "--out", str(tmp_path / "qa")],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    tasks = read_tasks(tmp_path / "qa")
    assert [t.id for t in tasks] == ["ceo", "year"]
    server = server_for(oracle(tasks, lambda t: t.gold))
    run = eval_run(tmp_path / "qa", server, tmp_path / "res")
    assert run.returncode == 0, run.stderr
    assert "right, status success" in run.stdout
    summary = json.loads((tmp_path / "res" / "summary.json").read_text())
    by_type = {g["type"]: g for g in summary["by_type"]}
    assert by_type["name"]["right_and_success"] == 1
    assert by_type["date"]["share"] == 1.0
