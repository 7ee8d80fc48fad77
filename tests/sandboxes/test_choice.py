"""Which sandbox runs the code: ``auto`` takes Docker when it answers, else bubblewrap,
else says how to get either. Docker is "stopped" here by pointing DOCKER_HOST at a socket
that does not exist."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shesha import Shesha
from shesha.cli import app
from shesha.errors import SandboxUnavailableError
from shesha.rlm import read_trace
from shesha.sandbox.bwrap import bwrap_problem
from shesha.sandbox.choice import choose
from shesha.testing import FunctionModel

pytestmark = pytest.mark.bwrap


@pytest.fixture
def no_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bwrap_ready: None) -> Path:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    return tmp_path


@pytest.fixture
def no_bwrap(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PATH", "/nonexistent")
    bwrap_problem.cache_clear()
    yield
    monkeypatch.undo()
    bwrap_problem.cache_clear()


def answer(messages: list[dict[str, str]], model: str) -> str:
    steps = sum(1 for m in messages if m["role"] == "assistant")
    return (
        "```repl\nimport os\nprint(os.getuid(), len(context))\n```" if steps == 0 else "FINAL(done)"
    )


def test_without_docker_auto_runs_queries_under_bubblewrap(no_docker: Path) -> None:
    assert choose("auto") == "bwrap"
    (no_docker / "a.txt").write_text("hello")
    model = FunctionModel(answer)
    with Shesha(home=str(no_docker / "home"), llm=model, pool_size=1) as sh:
        p = sh.project("p")
        p.add([no_docker / "a.txt"])
        r = p.query("q")
    assert (r.status, r.sandbox) == ("success", "bwrap")
    assert "network" in (r.isolation or "")
    assert "65532 1" in model.calls[1][1][-1]["content"]
    header = read_trace(r.trace_path or "").header
    assert header is not None
    assert header.sandbox == "bwrap"


def test_doctor_names_the_sandbox_and_does_not_fail_for_docker(no_docker: Path) -> None:
    env = {"SHESHA_HOME": str(no_docker / "home"), "SHESHA_MODEL": "openai/x"}
    r = CliRunner().invoke(app, ["doctor", "--json"], env=env)
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["sandbox"]["ok"] is True
    assert checks["sandbox"]["detail"].startswith("bubblewrap: ")
    assert "docker daemon" not in checks


def test_with_neither_the_error_says_how_to_get_either(no_docker: Path, no_bwrap: None) -> None:
    with pytest.raises(SandboxUnavailableError, match="Docker does not answer") as e:
        choose("auto")
    assert "install bubblewrap" in (e.value.hint or "")
    with pytest.raises(SandboxUnavailableError, match="sandbox = bwrap, but bubblewrap"):
        choose("bwrap")


SCRIPT_THAT_NEVER_CLOSES = """
import pathlib, sys
from shesha import Shesha
from shesha.testing import FunctionModel
folder = pathlib.Path(sys.argv[1])
(folder / "a.txt").write_text("The CEO is Maria.")
sh = Shesha(home=str(folder / "home"), llm=FunctionModel(lambda m, n: "FINAL(Maria)"),
            sandbox="bwrap", pool_size=2)
project = sh.project("x")
project.add([folder / "a.txt"])
print(project.query("Who is the CEO?").answer)
"""


def test_a_script_that_never_closes_its_shesha_exits_cleanly(
    tmp_path: Path, bwrap_ready: None
) -> None:
    """Its sandboxes are closed at exit, quietly: no traceback from the atexit hook."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT_THAT_NEVER_CLOSES, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "Maria\n"), done.stderr
    assert "Traceback" not in done.stderr
    assert "Exception ignored" not in done.stderr
