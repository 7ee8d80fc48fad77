"""The installed `shesha` command end to end: a scripted model over HTTP, real Docker
sandboxes. (tests/unit/test_cli.py covers the commands in-process.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fixtures import make_pdf

from shesha.testing import ScriptedLLMServer, ScriptedReply

pytestmark = pytest.mark.docker

SHESHA = str(Path(sys.executable).with_name("shesha"))


def scripted(messages: list[dict[str, Any]], model: str) -> ScriptedReply:
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
