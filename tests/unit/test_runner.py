"""The in-container runner, run here as a plain subprocess over a socket pair.

These tests speak the wire protocol to the real runner program; Docker is not needed.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shesha.sandbox.image import RUNNER_PATH, runner_hash
from shesha.sandbox.protocol import FrameChannel


class RunnerClient:
    def __init__(self, scratch: Path) -> None:
        host, child = socket.socketpair()
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(RUNNER_PATH), "--scratch", str(scratch)],
            stdin=child.fileno(),
            stdout=child.fileno(),
            stderr=subprocess.PIPE,
        )
        child.close()
        self.chan = FrameChannel(host, docker_mux=False)
        self._id = 0

    def send(self, header: dict[str, Any], payload: bytes = b"") -> int:
        self._id += 1
        header = {**header, "id": self._id}
        self.chan.send(header, payload)
        return self._id

    def recv(self) -> dict[str, Any]:
        return self.chan.recv(time.monotonic() + 10).header

    def request(self, header: dict[str, Any], payload: bytes = b"") -> dict[str, Any]:
        rid = self.send(header, payload)
        reply = self.recv()
        assert reply.get("id") == rid
        return reply

    def exec(self, code: str, **extra: Any) -> dict[str, Any]:
        reply = self.request({"kind": "exec", "code": code, **extra})
        assert reply["kind"] == "result"
        return reply

    def load(self, docs: list[tuple[str, str]], version: str = "v1") -> dict[str, Any]:
        blobs = [t.encode() for _, t in docs]
        return self.request(
            {
                "kind": "load",
                "version": version,
                "names": [n for n, _ in docs],
                "lengths": [len(b) for b in blobs],
            },
            b"".join(blobs),
        )

    def close(self) -> None:
        self.chan.close()
        self.proc.wait(timeout=10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[RunnerClient]:
    client = RunnerClient(tmp_path)
    yield client
    client.close()


def test_ping_reports_the_runner_hash_and_protocol(runner: RunnerClient) -> None:
    pong = runner.request({"kind": "ping"})
    assert pong["kind"] == "pong"
    assert pong["runner"] == runner_hash()
    assert pong["protocol"] == 2
    assert pong["version"] is None


def test_loaded_documents_are_context_and_doc_names_in_order(runner: RunnerClient) -> None:
    loaded = runner.load([("b.txt", "héllo"), ("a.md", "wörld ✓")], version="abc")
    assert loaded == {"kind": "loaded", "version": "abc", "documents": 2, "chars": 12, "id": 1}
    out = runner.exec("print(context, doc_names)")
    assert out["stdout"] == "['héllo', 'wörld ✓'] ['b.txt', 'a.md']\n"
    assert out["error"] is None


def test_namespace_persists_between_executions(runner: RunnerClient) -> None:
    runner.exec("x = 41")
    assert runner.exec("print(x + 1)")["stdout"] == "42\n"


def test_reset_clears_variables_but_keeps_documents(runner: RunnerClient) -> None:
    runner.load([("a", "doc")])
    runner.exec("x = 1; context.append('junk')")
    assert runner.request({"kind": "reset"})["kind"] == "reset_ok"
    out = runner.exec("print(context); print(x)")
    assert out["stdout"] == "['doc']\n"
    assert "NameError" in out["error"]


def test_re_is_ready_without_an_import(runner: RunnerClient) -> None:
    # The prompts show re.findall; small models often leave out the import.
    runner.load([("a", "one two three")])
    assert runner.exec("print(re.findall(r't\\w+', context[0]))")["stdout"] == "['two', 'three']\n"


def test_cut_output_says_how_to_print_less(runner: RunnerClient) -> None:
    out = runner.exec("print('x' * 5000)", max_output=1000)
    assert "print only what you need" in out["stdout"]


def test_last_expression_is_displayed_like_a_repl(runner: RunnerClient) -> None:
    assert runner.exec("y = 2\ny * 21")["stdout"] == "42\n"
    assert runner.exec("None")["stdout"] == ""


def test_final_sets_the_answer_as_text(runner: RunnerClient) -> None:
    out = runner.exec("FINAL(6 * 7)")
    assert out["final"] == "42"
    assert runner.exec("print('no final here')")["final"] is None


@pytest.mark.parametrize(
    "code", ["answer = 'yes'\nFINAL_VAR('answer')", "answer = 'yes'\nFINAL_VAR(answer)"]
)
def test_final_var_takes_a_string_or_a_bare_identifier(runner: RunnerClient, code: str) -> None:
    assert runner.exec(code)["final"] == "yes"


def test_final_var_of_a_missing_variable_is_an_error_and_sets_nothing(
    runner: RunnerClient,
) -> None:
    out = runner.exec("FINAL_VAR('nope')")
    assert out["final"] is None
    assert "no variable named 'nope'" in out["error"]


def test_final_whose_value_raises_sets_nothing(runner: RunnerClient) -> None:
    code = "class Bad:\n    def __str__(self):\n        raise ValueError('boom')\nFINAL(Bad())"
    out = runner.exec(code)
    assert out["final"] is None
    assert "ValueError: boom" in out["error"]


def test_errors_come_back_as_tracebacks_of_the_cell_only(runner: RunnerClient) -> None:
    out = runner.exec("def f():\n    return 1 / 0\nf()")
    assert "ZeroDivisionError" in out["error"]
    assert "return 1 / 0" in out["error"]
    assert "runner.py" not in out["error"]


def test_syntax_errors_are_reported(runner: RunnerClient) -> None:
    out = runner.exec("def (")
    assert "SyntaxError" in out["error"]


def test_system_exit_does_not_end_the_runner(runner: RunnerClient) -> None:
    out = runner.exec("raise SystemExit(3)")
    assert "SystemExit" in out["error"]
    assert runner.request({"kind": "ping"})["kind"] == "pong"


def test_stdout_and_stderr_are_captured_separately(runner: RunnerClient) -> None:
    out = runner.exec("import sys\nprint('out')\nprint('err', file=sys.stderr)")
    assert out["stdout"] == "out\n"
    assert out["stderr"] == "err\n"


def test_long_output_keeps_head_and_tail_with_a_marker(runner: RunnerClient) -> None:
    code = "for i in range(100000):\n    print(f'line {i}')"
    out = runner.exec(code, max_output=1000)
    text = out["stdout"]
    assert text.startswith("line 0\n")
    assert text.endswith("line 99999\n")
    assert "characters omitted" in text
    assert len(text) < 1400
    assert out["stdout_chars"] == sum(len(f"line {i}\n") for i in range(100000))


def test_cpu_time_and_peak_memory_are_reported(runner: RunnerClient) -> None:
    out = runner.exec("x = sum(i * i for i in range(300000))")
    assert out["cpu_s"] > 0
    assert out["peak_rss_kb"] > 1000


def test_llm_query_asks_the_host_and_blocks_for_the_answer(runner: RunnerClient) -> None:
    rid = runner.send({"kind": "exec", "code": "r = llm_query('Summarise', 'the text')\nprint(r)"})
    sub = runner.recv()
    assert sub["kind"] == "subcall"
    assert sub["items"] == [{"instruction": "Summarise", "content": "the text"}]
    runner.chan.send({"kind": "subcall_result", "id": sub["id"], "results": ["a summary"]})
    result = runner.recv()
    assert result["id"] == rid
    assert result["stdout"] == "a summary\n"


@pytest.mark.parametrize(
    ("code", "items"),
    [
        (
            "r = llm_query_batched('Label', ['one', 'two'])",
            [
                {"instruction": "Label", "content": "one"},
                {"instruction": "Label", "content": "two"},
            ],
        ),
        (
            "r = llm_query_batched(['prompt one', 'prompt two'])",
            [
                {"instruction": "prompt one", "content": ""},
                {"instruction": "prompt two", "content": ""},
            ],
        ),
    ],
    ids=["instruction-and-contents", "list-of-prompts"],
)
def test_llm_query_batched_forms(
    runner: RunnerClient, code: str, items: list[dict[str, str]]
) -> None:
    runner.send({"kind": "exec", "code": code + "\nprint(r)"})
    sub = runner.recv()
    assert sub["items"] == items
    runner.chan.send({"kind": "subcall_result", "id": sub["id"], "results": ["A", "B"]})
    assert runner.recv()["stdout"] == "['A', 'B']\n"


def test_llm_query_batched_of_nothing_makes_no_request(runner: RunnerClient) -> None:
    assert runner.exec("print(llm_query_batched('x', []))")["stdout"] == "[]\n"


def test_llm_query_rejects_a_non_text_instruction(runner: RunnerClient) -> None:
    assert "TypeError" in runner.exec("llm_query(5)")["error"]


def test_direct_writes_to_fd_1_cannot_forge_frames(runner: RunnerClient) -> None:
    out = runner.exec("import os\nos.write(1, b'\\x00\\x00\\x00\\x05garbage')\nprint('ok')")
    assert out["stdout"] == "ok\n"
    assert runner.request({"kind": "ping"})["kind"] == "pong"


def test_unknown_message_kind_is_refused_with_an_error_frame(runner: RunnerClient) -> None:
    runner.send({"kind": "teleport"})
    reply = runner.recv()
    assert reply["kind"] == "error"
    assert "teleport" in reply["error"]


def test_final_of_none_is_refused_as_an_unfound_answer(runner: RunnerClient) -> None:
    out = runner.exec("result = None\nFINAL_VAR('result')")
    assert out["final"] is None
    assert "no answer has been found yet" in out["error"]
