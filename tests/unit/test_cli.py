"""The `shesha` command in-process: typer's CliRunner, a FunctionModel and the runner as
a local process, given to the CLI through its factory (``obj``)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.fixtures import make_pdf
from typer.testing import CliRunner, Result

from shesha import Shesha
from shesha.cli import app
from shesha.llm import LLMClient, LLMSettings
from shesha.llm.types import Message
from shesha.rlm import read_trace
from shesha.rlm.events import LLMResponse
from shesha.sandbox import InMemoryCorpus, SandboxPool
from shesha.testing import FunctionModel, RunningServer, ScriptedLLMServer


def scripted(messages: list[Message], model: str) -> str:
    """Stateless: the step is the number of assistant turns so far."""
    if messages[0]["content"].startswith("You follow one instruction"):
        return "a summary"
    question = messages[1]["content"]
    step = sum(1 for m in messages if m["role"] == "assistant")
    if "forever" in question:
        return (
            "FINAL(partial)" if "used all" in messages[-1]["content"] else "```repl\nprint(1)\n```"
        )
    if step == 0:
        return "```repl\nprint(doc_names)\ns = llm_query('Summarise', context[0][:200])\n```"
    return "FINAL(There are 2 documents.)"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "notes.md").write_text("# Notes\nThe renewal is automatic.")
    (docs / "lease.pdf").write_bytes(make_pdf(["Lease agreement renews every year."]))
    monkeypatch.chdir(tmp_path)  # where shesha.toml is looked for, as in a shell
    return tmp_path


class Cli:
    """Runs shesha's commands in this process. ``local``: the model and sandboxes are
    passed in through the CLI's factory. ``server``: a server holds them, recorded in the
    data directory, and the CLI finds it there as it would a `shesha serve --background`."""

    def __init__(self, workdir: Path, sandboxes: SandboxPool, mode: str) -> None:
        self.model = FunctionModel(scripted)
        self.env = {"SHESHA_HOME": str(workdir / "home"), "SHESHA_MODEL": None}
        self.sandboxes = sandboxes
        self.mode = mode
        self.url: str | None = None

    def factory(self, **kwargs: Any) -> Shesha:
        return Shesha(llm=self.model, sandboxes=self.sandboxes, **kwargs)

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Result:
        obj = self.factory if self.mode == "local" else None
        return CliRunner().invoke(app, list(args), obj=obj, env={**self.env, **(env or {})})


@pytest.fixture(params=["local", "server"])
def cli(workdir: Path, sandboxes: SandboxPool, request: pytest.FixtureRequest) -> Iterator[Cli]:
    c = Cli(workdir, sandboxes, request.param)
    if c.mode == "local":
        yield c
        return
    with (
        Shesha(home=str(workdir / "home"), llm=c.model, sandboxes=sandboxes) as sh,
        RunningServer(sh, allow_paths=[workdir], announce=True) as url,
    ):
        c.url = url
        yield c


def plain(workdir: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """The CLI as a user runs it: no model or sandboxes passed in."""
    full = {"SHESHA_HOME": str(workdir / "home"), "SHESHA_MODEL": None, **(env or {})}
    return CliRunner().invoke(app, list(args), env=full)


def test_ask_about_paths_prints_the_answer_on_stdout(cli: Cli) -> None:
    r = cli("ask", "How many documents?", "docs")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "There are 2 documents.\n"
    assert "success" in r.stderr
    if cli.url is not None:  # the server answered it, not this process
        assert len(httpx.get(f"{cli.url}/api/queries").json()["queries"]) == 1


def test_ask_json_prints_exactly_one_object(cli: Cli) -> None:
    r = cli("ask", "How many?", "docs", "--json")
    assert r.exit_code == 0, r.stderr
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
    again = cli("ask", "Again?", "--project", payload["project"], "--json")
    assert json.loads(again.stdout)["answer"] == "There are 2 documents."


def test_a_limit_reached_exits_3_with_the_answer_so_far(cli: Cli) -> None:
    r = cli("ask", "search forever", "docs", "--max-iterations", "2")
    assert r.exit_code == 3, r.stderr
    assert r.stdout == "partial\n"


def test_a_bad_path_is_a_usage_error(cli: Cli) -> None:
    r = cli("ask", "q", "missing-dir")
    assert r.exit_code == 2
    assert "missing-dir: no such file or directory" in r.stderr


def test_a_missing_model_says_how_to_set_one(workdir: Path) -> None:
    r = plain(workdir, "ask", "q", "docs")
    assert r.exit_code == 1
    assert "No model is configured" in r.stderr
    assert "SHESHA_MODEL" in r.stderr
    # The local model comes first: it needs no key and no internet.
    text = " ".join(r.stderr.split())
    assert text.index("--model local") < text.index("shesha models fetch") < text.index("openai/")
    assert "pip install 'shesha[local]'" in text  # brackets are text, not markup


def test_an_unreachable_api_base_fails_clearly_and_quickly(
    workdir: Path, sandboxes: SandboxPool
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    started = time.monotonic()
    args = ["--model", "openai/x", "--api-base", f"http://127.0.0.1:{port}/v1", "--api-key", "k"]
    r = CliRunner().invoke(
        app,
        ["ask", "q", "docs", *args],
        obj=lambda **kw: Shesha(sandboxes=sandboxes, **kw),  # the real LiteLLM client
        env={"SHESHA_HOME": str(workdir / "home"), "SHESHA_NUM_RETRIES": "0"},
    )
    assert r.exit_code == 1
    assert "Could not get an answer" in r.stderr
    assert time.monotonic() - started < 60


def test_an_invalid_config_file_names_the_setting_and_the_file(cli: Cli, workdir: Path) -> None:
    (workdir / "shesha.toml").write_text("max_iterations = -1\n")
    r = cli("ask", "q", "docs")
    assert r.exit_code == 1
    assert "max_iterations = -1" in r.stderr
    assert "shesha.toml" in r.stderr


def test_add_json_reports_stored_and_failed_and_exits_1(cli: Cli, workdir: Path) -> None:
    (workdir / "docs" / "broken.pdf").write_bytes(b"%PDF-1.4 nothing")
    r = cli("add", "contracts", "docs", "--json")
    assert r.exit_code == 1
    payload = json.loads(r.stdout)
    assert payload["project"] == "contracts"
    assert [d["name"] for d in payload["stored"]] == ["lease.pdf", "notes.md"]
    assert payload["stored"][0] == {
        "name": "lease.pdf", "format": "pdf", "pages": 1, "chars": payload["stored"][0]["chars"],
        "encoding": None, "encoding_source": None, "encoding_confidence": None, "warnings": [],
    }  # fmt: skip
    assert payload["failed"][0]["path"].endswith("broken.pdf")
    assert "damaged" in payload["failed"][0]["error"]


def test_projects_docs_and_traces(cli: Cli) -> None:
    assert cli("add", "contracts", "docs").exit_code == 0
    listed = json.loads(cli("projects", "--json").stdout)
    assert [p["name"] for p in listed["projects"]] == ["contracts"]
    shown = json.loads(cli("projects", "show", "contracts", "--json").stdout)
    assert shown["documents"] == 2
    docs = json.loads(cli("docs", "contracts", "--json").stdout)
    assert [d["name"] for d in docs["docs"]] == ["lease.pdf", "notes.md"]
    text = cli("docs", "contracts", "--show", "lease.pdf").stdout
    assert text == "--- Page 1 ---\nLease agreement renews every year.\n"
    assert cli("ask", "q", "-p", "contracts").exit_code == 0
    traces = json.loads(cli("traces", "contracts", "--json").stdout)["traces"]
    assert traces[0]["status"] == "success"
    pretty = cli("trace", traces[0]["path"])
    assert pretty.exit_code == 0
    for part in ("question: q", "print(doc_names)", "There are 2 documents.", "1 sub-calls"):
        assert part in pretty.stdout
    assert cli("projects", "delete", "contracts", "--yes").exit_code == 0
    assert json.loads(cli("projects", "--json").stdout)["projects"] == []


def test_a_missing_project_is_one_line_and_a_hint(cli: Cli) -> None:
    r = cli("docs", "nope")
    assert r.exit_code == 1
    assert r.stderr.splitlines()[0] == (
        f"error: No project named 'nope' in {cli.env['SHESHA_HOME']}/projects."
    )
    assert r.stderr.splitlines()[1].startswith("hint: ")


def test_init_writes_a_config_that_loads(workdir: Path) -> None:
    assert plain(workdir, "init").exit_code == 0
    assert (workdir / "shesha.toml").read_text().startswith("# shesha.toml")
    assert plain(workdir, "init").exit_code == 1  # never overwrites without --force
    assert json.loads(plain(workdir, "doctor", "--json").stdout)["checks"][0]["ok"] is True


def test_usage_errors_exit_2(workdir: Path) -> None:
    assert plain(workdir, "ask").exit_code == 2
    assert plain(workdir, "ask", "q").exit_code == 2
    assert plain(workdir, "frobnicate").exit_code == 2


def test_doctor_checks_a_local_model(workdir: Path) -> None:
    r = plain(workdir, "doctor", "--json", env={"SHESHA_MODEL": "local/nope"})
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["model"]["ok"] is False
    assert "No local model named 'nope'" in checks["model"]["detail"]


def test_doctor_says_whether_a_server_runs(cli: Cli) -> None:
    r = cli("doctor", "--json")
    server = {c["name"]: c for c in json.loads(r.stdout)["checks"]}["server"]
    assert server["ok"] is True
    if cli.url is None:
        assert server["detail"].startswith("none running")
    else:
        assert server["detail"].startswith(cli.url)


def test_a_trace_shows_the_prompt_tokens_the_server_reused(
    workdir: Path, sandboxes: SandboxPool
) -> None:
    steps = ["```repl\nprint(len(context))\n```", "FINAL(2)"]
    with ScriptedLLMServer(steps, prompt_cache=True) as server:
        llm = LLMClient(LLMSettings(api_base=server.api_base, api_key="k", num_retries=0))
        with Shesha(home=str(workdir / "home"), llm=llm, sandboxes=sandboxes) as sh:
            result = asyncio.run(sh.aquery_corpus(
                "How many documents?", InMemoryCorpus([("a.txt", "one"), ("b.txt", "two")]),
                trace_dir=workdir / "traces", model="openai/scripted", strategy="code",
            ))  # fmt: skip
    assert result.answer == "2"
    replies = [e for e in read_trace(result.trace_path or "").events if isinstance(e, LLMResponse)]
    first, second = replies
    assert first.cached_prompt_tokens == 0  # nothing read before
    assert 0 < second.cached_prompt_tokens < second.prompt_tokens  # the history, reused
    shown = plain(workdir, "trace", str(result.trace_path)).stdout
    assert f"{second.prompt_tokens} ({second.cached_prompt_tokens} reused) + " in shown


def test_models_list_says_how_big_each_model_is(workdir: Path) -> None:
    models = workdir / "models"
    gguf = workdir / "mine.gguf"
    gguf.write_bytes(b"GGUF" + bytes(1000))
    env = {"SHESHA_MODELS_DIR": str(models)}
    assert plain(workdir, "models", "add", str(gguf), "--name", "mine", env=env).exit_code == 0
    listed = json.loads(plain(workdir, "models", "list", "--json", env=env).stdout)["models"]
    sizes = {m["name"]: (m["present"], m["size_bytes"]) for m in listed}
    assert sizes["mine"] == (True, 1004)  # on disk
    assert sizes["qwen2.5-coder-1.5b"][0] is False
    assert sizes["qwen2.5-coder-1.5b"][1] > 1_000_000_000  # what fetching it downloads
    shown = plain(workdir, "models", "list", env=env).stdout
    assert "0 MB" in shown
    assert "1,117 MB" in shown


CLI_START = """
import sys
import shesha.cli
heavy = ("shesha.api", "shesha.rlm.engine", "shesha.bench.ray_executor", "docker", "ray",
         "litellm", "fastapi")
print(" ".join(m for m in heavy if m in sys.modules))
"""


def test_the_cli_starts_without_the_engine_docker_or_ray() -> None:
    # What every command pays before it runs, `shesha ask` against a server included:
    # the engine, Docker's SDK and Ray load only in the commands that use them.
    done = subprocess.run(
        [sys.executable, "-c", CLI_START], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == []
