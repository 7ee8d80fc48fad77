"""The `shesha` command end to end: a scripted model over HTTP, real Docker sandboxes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fixtures import make_pdf

from shesha.testing import Reply, ScriptedLLMServer

pytestmark = pytest.mark.docker

SHESHA = str(Path(sys.executable).with_name("shesha"))


def scripted(messages: list[dict[str, Any]], model: str) -> Reply:
    """Stateless: the step is the number of assistant turns so far."""
    if str(messages[0]["content"]).startswith("You follow one instruction"):
        return "a summary"
    question = str(messages[1]["content"])
    step = sum(1 for m in messages if m["role"] == "assistant")
    if "forever" in question:
        return (
            "```repl\nprint('still looking')\n```"
            if "used all" not in str(messages[-1])
            else "FINAL(partial)"
        )
    if step == 0:
        return "```repl\nprint(doc_names)\ns = llm_query('Summarise', context[0][:200])\n```"
    return "FINAL(There are 2 documents.)"


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer(scripted) as s:
        yield s


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "notes.md").write_text("# Notes\nThe renewal is automatic.")
    (docs / "lease.pdf").write_bytes(make_pdf(["Lease agreement renews every year."]))
    return tmp_path


def run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("SHESHA_", "OPENAI_"))}
    full_env.update({"SHESHA_HOME": str(cwd / "home"), "SHESHA_POOL_SIZE": "1"})
    full_env.update(env or {})
    return subprocess.run(
        [SHESHA, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,  # the exit code is what the tests check
    )


def model_args(server: ScriptedLLMServer) -> list[str]:
    return ["--model", "openai/scripted", "--api-base", server.api_base, "--api-key", "test"]


def test_ask_about_paths_prints_the_answer_on_stdout(
    server: ScriptedLLMServer, workdir: Path
) -> None:
    r = run(["ask", "How many documents?", "docs", *model_args(server)], workdir)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "There are 2 documents.\n"
    assert "success" in r.stderr


def test_ask_json_prints_exactly_one_object(server: ScriptedLLMServer, workdir: Path) -> None:
    r = run(["ask", "How many?", "docs", "--json", *model_args(server)], workdir)
    assert r.returncode == 0, r.stderr
    payload = json.loads(r.stdout)
    assert set(payload) >= {
        "answer", "status", "iterations", "subcalls", "usage", "cost_usd", "duration_s",
        "trace_path", "project",
    }  # fmt: skip
    assert payload["answer"] == "There are 2 documents."
    assert payload["subcalls"] == 1
    assert payload["project"].startswith("ask-docs-")
    assert Path(payload["trace_path"]).is_file()
    # The project made on the fly is stored like any other, and can be asked by name.
    again = run(
        ["ask", "Again?", "--project", payload["project"], "--json", *model_args(server)], workdir
    )
    assert json.loads(again.stdout)["answer"] == "There are 2 documents."


def test_a_limit_reached_exits_3_with_the_answer_so_far(
    server: ScriptedLLMServer, workdir: Path
) -> None:
    r = run(
        ["ask", "search forever", "docs", "--max-iterations", "2", *model_args(server)], workdir
    )
    assert r.returncode == 3, r.stderr
    assert r.stdout == "partial\n"


def test_a_bad_path_is_a_usage_error(server: ScriptedLLMServer, workdir: Path) -> None:
    r = run(["ask", "q", "missing-dir", *model_args(server)], workdir)
    assert r.returncode == 2
    assert "missing-dir: no such file or directory" in r.stderr


def test_a_missing_model_says_how_to_set_one(workdir: Path) -> None:
    r = run(["ask", "q", "docs"], workdir)
    assert r.returncode == 1
    assert "No model is configured" in r.stderr
    assert "SHESHA_MODEL" in r.stderr
    # The local model comes first: it needs no key and no internet.
    text = " ".join(r.stderr.split())
    assert text.index("--model local") < text.index("shesha models fetch") < text.index("openai/")


def test_with_no_model_ask_uses_an_installed_local_model_and_says_so(
    workdir: Path, local_models: Any
) -> None:
    # A file under the default model's name stands in for it: the message comes first,
    # then the server refuses the file, so no model has to run here.
    models = workdir / "home" / "models"
    models.mkdir(parents=True)
    (models / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf").write_bytes(b"GGUF not really")
    r = run(["ask", "q", "docs"], workdir)
    assert "No model is configured: using the local model qwen2.5-coder-1.5b" in r.stderr
    assert "does not match its sha256" in r.stderr
    assert r.returncode == 1
    doctor = run(["doctor", "--json"], workdir)
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert "shesha ask uses the local model qwen2.5-coder-1.5b" in checks["model"]["detail"]


def test_an_unreachable_api_base_fails_clearly_and_quickly(workdir: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    started = time.monotonic()
    args = ["--model", "openai/x", "--api-base", f"http://127.0.0.1:{port}/v1", "--api-key", "k"]
    r = run(["ask", "q", "docs", *args], workdir, env={"SHESHA_NUM_RETRIES": "0"})
    assert r.returncode == 1
    assert "Could not get an answer" in r.stderr
    assert time.monotonic() - started < 60


def test_an_invalid_config_file_names_the_setting_and_the_file(workdir: Path) -> None:
    (workdir / "shesha.toml").write_text("max_iterations = -1\n")
    r = run(["ask", "q", "docs", "--model", "m"], workdir)
    assert r.returncode == 1
    assert "max_iterations = -1" in r.stderr
    assert "shesha.toml" in r.stderr


def test_add_json_reports_stored_and_failed_and_exits_1(workdir: Path) -> None:
    (workdir / "docs" / "broken.pdf").write_bytes(b"%PDF-1.4 nothing")
    r = run(["add", "contracts", "docs", "--json"], workdir)
    assert r.returncode == 1
    payload = json.loads(r.stdout)
    assert payload["project"] == "contracts"
    assert [d["name"] for d in payload["stored"]] == ["lease.pdf", "notes.md"]
    assert payload["stored"][0] == {
        "name": "lease.pdf", "format": "pdf", "pages": 1, "chars": payload["stored"][0]["chars"],
        "warnings": [],
    }  # fmt: skip
    assert payload["failed"][0]["path"].endswith("broken.pdf")
    assert "damaged" in payload["failed"][0]["error"]


def test_projects_docs_and_traces(server: ScriptedLLMServer, workdir: Path) -> None:
    assert run(["add", "contracts", "docs"], workdir).returncode == 0
    listed = json.loads(run(["projects", "--json"], workdir).stdout)
    assert [p["name"] for p in listed["projects"]] == ["contracts"]
    shown = json.loads(run(["projects", "show", "contracts", "--json"], workdir).stdout)
    assert shown["documents"] == 2
    docs = json.loads(run(["docs", "contracts", "--json"], workdir).stdout)
    assert [d["name"] for d in docs["docs"]] == ["lease.pdf", "notes.md"]
    text = run(["docs", "contracts", "--show", "lease.pdf"], workdir).stdout
    assert text == "--- Page 1 ---\nLease agreement renews every year.\n"
    assert run(["ask", "q", "-p", "contracts", *model_args(server)], workdir).returncode == 0
    traces = json.loads(run(["traces", "contracts", "--json"], workdir).stdout)["traces"]
    assert traces[0]["status"] == "success"
    pretty = run(["trace", traces[0]["path"]], workdir)
    assert pretty.returncode == 0
    for part in ("question: q", "print(doc_names)", "There are 2 documents.", "1 sub-calls"):
        assert part in pretty.stdout
    assert run(["projects", "delete", "contracts", "--yes"], workdir).returncode == 0
    assert json.loads(run(["projects", "--json"], workdir).stdout)["projects"] == []


def test_doctor_checks_and_says_how_to_fix(server: ScriptedLLMServer, workdir: Path) -> None:
    failing = run(["doctor", "--json"], workdir)
    assert failing.returncode == 1
    checks = {c["name"]: c for c in json.loads(failing.stdout)["checks"]}
    assert checks["docker daemon"]["ok"] is True
    assert checks["sandbox image"]["ok"] is True
    assert checks["model"]["ok"] is False
    assert "SHESHA_MODEL" in checks["model"]["fix"]
    assert "--model local" in checks["model"]["fix"]
    env = {"SHESHA_MODEL": "openai/scripted", "SHESHA_API_BASE": server.api_base}
    passing = run(["doctor"], workdir, env=env)
    assert passing.returncode == 0, passing.stdout
    assert "FAIL" not in passing.stdout


def test_init_writes_a_config_that_loads(workdir: Path) -> None:
    assert run(["init"], workdir).returncode == 0
    assert (workdir / "shesha.toml").read_text().startswith("# shesha.toml")
    assert run(["init"], workdir).returncode == 1  # never overwrites without --force
    assert run(["doctor", "--json"], workdir).stdout  # the commented file is valid


def test_usage_errors_exit_2(workdir: Path) -> None:
    assert run(["ask"], workdir).returncode == 2
    assert run(["ask", "q"], workdir).returncode == 2
    assert run(["frobnicate"], workdir).returncode == 2


def test_doctor_checks_a_local_model(workdir: Path) -> None:
    r = run(["doctor", "--json"], workdir, env={"SHESHA_MODEL": "local/nope"})
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["model"]["ok"] is False
    assert "No local model named 'nope'" in checks["model"]["detail"]
