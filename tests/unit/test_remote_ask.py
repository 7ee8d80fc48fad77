"""The light remote `shesha ask` (``shesha.remote_ask``): a question to a running server
on the standard library alone, printing what the full CLI prints; everything else goes to
the full CLI."""

from __future__ import annotations

import http.server
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shesha import Shesha
from shesha.cli import app
from shesha.client import answers
from shesha.llm.types import Message
from shesha.remote_ask import find, parse, run
from shesha.sandbox import SandboxPool
from shesha.testing import FunctionModel, RunningServer

HEAVY = ("typer", "click", "rich", "pydantic", "httpx", "litellm", "fastapi", "docker")


def scripted(messages: list[Message], model: str) -> str:
    if messages[0]["content"].startswith("You follow one instruction"):
        return "a summary"
    if "forever" in messages[1]["content"]:
        return "```repl\nprint(1)\n```"
    if not any(m["role"] == "assistant" for m in messages):
        return "```repl\ns = llm_query('Summarise', context[0][:200])\nprint(len(context))\n```"
    return "FINAL(There is 1 document.)"


@dataclass
class Served:
    url: str
    env: dict[str, str]

    def light(self, *args: str) -> tuple[int | None, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = run(list(args), env=self.env, out=out, err=err)
        return code, out.getvalue(), err.getvalue()

    def full(self, *args: str) -> tuple[int, str, str]:
        r = CliRunner().invoke(app, list(args), env=self.env)
        return r.exit_code, r.stdout, r.stderr


@pytest.fixture
def served(
    tmp_path: Path, sandboxes: SandboxPool, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Served]:
    monkeypatch.chdir(tmp_path)  # no shesha.toml here
    home = tmp_path / "home"
    (tmp_path / "notes.md").write_text("The renewal is automatic.")
    with (
        Shesha(home=str(home), llm=FunctionModel(scripted), sandboxes=sandboxes) as sh,
        RunningServer(sh, announce=True) as url,  # recorded in home, as --background does
    ):
        sh.project("docs").add([tmp_path / "notes.md"])
        yield Served(url, {"SHESHA_HOME": str(home)})


def tail(stderr: str) -> str:
    """The summary line with its figures that differ from run to run blanked."""
    line = stderr.strip().splitlines()[-1]
    return re.sub(r"[\d.]+ s · trace: .*", "N s · trace: T", line)


def test_a_question_to_a_running_server_prints_what_the_full_cli_prints(served: Served) -> None:
    code, out, err = served.light("ask", "-p", "docs", "How many documents?")
    full_code, full_out, full_err = served.full("ask", "-p", "docs", "How many documents?")
    assert (code, out) == (0, "There is 1 document.\n")
    assert (full_code, full_out) == (code, out)
    assert tail(err) == tail(full_err)
    assert tail(err).startswith("success · 2 steps · 1 sub-calls · ")
    assert "step 1: running code: s = llm_query" in err  # a log, not a terminal: a line a step


def test_the_json_answer_is_the_full_cli_s(served: Served) -> None:
    code, out, _ = served.light("ask", "--project=docs", "How many?", "--json", "--no-cache")
    _, full_out, _ = served.full("ask", "--project=docs", "How many?", "--json", "--no-cache")
    light, full = json.loads(out), json.loads(full_out)
    assert code == 0
    assert light.keys() == full.keys()
    for key in ("answer", "status", "iterations", "subcalls", "usage", "cost_usd", "project"):
        assert light[key] == full[key], key
    assert light["usage"]["cached_subcalls"] == 0  # --no-cache reached the server


def test_a_limit_exits_3_with_the_answer_so_far(served: Served) -> None:
    code, out, err = served.light("ask", "-p", "docs", "search forever", "--max-iterations", "2")
    assert code == 3
    assert out == ""
    full_code, _, full_err = served.full(
        "ask", "-p", "docs", "search forever", "--max-iterations", "2"
    )
    assert full_code == 3
    stopped = [line for line in err.splitlines() if line.startswith("stopped: ")]
    assert len(stopped) == 1
    assert stopped == [line for line in full_err.splitlines() if line.startswith("stopped: ")]


def test_the_server_s_refusal_is_said_as_the_full_cli_says_it(served: Served) -> None:
    code, out, err = served.light("ask", "-p", "nothing-here", "q")
    full_code, _, full_err = served.full("ask", "-p", "nothing-here", "q")
    assert (code, out) == (1, "")
    assert full_code == 1
    assert err.splitlines()[0] == " ".join(full_err.split("\n")[0].split())
    assert "nothing-here" in err


def test_with_no_server_the_full_cli_takes_the_question(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"SHESHA_HOME": str(tmp_path / "home")}  # nothing recorded there
    assert run(["ask", "-p", "docs", "q"], env=env) is None
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert run(["ask", "-p", "docs", "q", "--server", f"http://127.0.0.1:{port}"], env=env) is None
    assert run(["ask", "-p", "docs", "q"], env={**env, "SHESHA_SERVER": "off"}) is None


class _SlowStatus(http.server.BaseHTTPRequestHandler):
    """A shesha server that takes 1.5 s to say so: as a busy machine's may."""

    def do_GET(self) -> None:
        time.sleep(1.5)
        body = json.dumps({"service": "shesha", "home": "/nowhere"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet


def test_a_server_slow_to_answer_its_status_is_still_used(tmp_path: Path) -> None:
    # A second late is far cheaper than running the question in-process instead (found
    # as a flake: under load the light path gave up on a test's server after 1 s).
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowStatus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert answers(url, None) is not None  # the full CLI's check
        question = parse(["ask", "-p", "docs", "q", "--server", url])
        assert question is not None
        assert find(question, env={"SHESHA_HOME": str(tmp_path)}) is not None  # the light one
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_off_or_for_another_data_directory_is_not_used(
    served: Served, tmp_path: Path
) -> None:
    assert served.light("ask", "-p", "docs", "q", "--server", "off")[0] is None
    # The recorded server serves another home than the one asked for: run in-process.
    other = tmp_path / "other-home"
    other.mkdir()
    recorded = Path(served.env["SHESHA_HOME"]) / "server.json"
    (other / "server.json").write_text(recorded.read_text())
    assert run(["ask", "-p", "docs", "q"], env={"SHESHA_HOME": str(other)}) is None


@pytest.mark.parametrize(
    "argv",
    [
        [], ["projects"], ["ask"], ["ask", "--help"], ["ask", "q", "docs"],  # paths: added
        ["ask", "q"], ["ask", "-p", "x", "q", "--model", "m"], ["-v", "ask", "-p", "x", "q"],
        ["ask", "-p", "x", "q", "--strategy", "bogus"],
        ["ask", "-p", "x", "q", "--timeout", "soon"],
        ["ask", "-p"], ["ask", "-p", "x", "one", "two"],
    ],
)  # fmt: skip
def test_what_the_light_path_does_not_take_goes_to_the_full_cli(argv: list[str]) -> None:
    assert parse(argv) is None


def test_the_options_it_takes_become_the_query_s_settings() -> None:
    q = parse(
        ["ask", "What renews?", "-p", "docs", "--strategy", "MAP", "--max-iterations=4",
         "--max-cost", "0.5", "--timeout", "30", "--verify", "--no-cache", "--json"]
    )  # fmt: skip
    assert q is not None
    assert (q.text, q.project, q.json_out) == ("What renews?", "docs", True)
    assert q.overrides == {
        "strategy": "map", "max_iterations": 4, "max_cost_usd": 0.5, "max_wall_s": 30.0,
        "verify_citations": True, "cache": False,
    }  # fmt: skip


def test_the_light_path_loads_no_heavy_library() -> None:
    code = (
        "import sys, shesha.remote_ask, shesha.launch\n"
        f"print([m for m in sys.modules if m.split('.')[0] in {HEAVY!r}])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_shesha_command_answers_a_server_s_question_without_the_full_cli(
    served: Served,
) -> None:
    start = "from shesha.launch import main\nmain()"  # sys.argv: -c, then the arguments
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", start, "ask", "-p", "docs", "How many?"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, **served.env},
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "There is 1 document.\n"), done.stderr[-2000:]
    loaded = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "shesha.remote_ask" in loaded
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}, "the full CLI was loaded"
