"""OpenTelemetry export: each query as a span tree (query → strategy → root calls, code
runs → sub-calls and tool calls), with tokens and cost, no document text or prompts
unless asked for, and never a slower or failed query. Checked with the SDK's in-memory
exporter, and against a real receiver: Arize Phoenix on loopback, read back through its
API."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shesha import Shesha
from shesha.llm.types import Message
from shesha.sandbox import SandboxPool
from shesha.telemetry import OtelTelemetry, otlp_traces_url
from shesha.testing import FunctionModel

REPO = Path(__file__).resolve().parents[2]
PHOENIX = REPO / ".venv-phoenix" / "bin" / "phoenix"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SECRET_TEXT = "The vault code is 7431-ZEBRA."
API_KEY = "sk-never-exported-9876"
SUBCALL = "You follow one instruction"
CODE = "summary = llm_query('What is the code?', context[0])\nprint(summary, lookup('vault'))"


def lookup(name: str) -> str:
    """A host tool: where a thing is kept."""
    return f"{name} is in room 2"


def model(messages: list[Message], name: str) -> str:
    if messages[0]["content"].startswith(SUBCALL):
        return "a code"
    step = sum(1 for m in messages if m["role"] == "assistant")
    return f"```repl\n{CODE}\n```" if step == 0 else "FINAL(room 2)"


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "vault.txt").write_text(SECRET_TEXT)
    return tmp_path / "docs"


def ask(sandboxes: SandboxPool, tmp_path: Path, docs: Path, **kwargs: Any) -> tuple[Any, Shesha]:
    sh = Shesha(
        home=str(tmp_path / "home"),
        llm=FunctionModel(model),
        sandboxes=sandboxes,
        tools=[lookup],
        api_key=API_KEY,
        strategy="code",
        **kwargs,
    )
    sh.project("vault").add([docs])
    return sh.project("vault").query("Where is the vault?"), sh


def by_name(spans: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


def parent_of(span: ReadableSpan, spans: Sequence[ReadableSpan]) -> str | None:
    if span.parent is None:
        return None
    return next(s.name for s in spans if s.context.span_id == span.parent.span_id)


def everything_said(spans: Sequence[ReadableSpan]) -> str:
    """Every attribute and event of every span, as text."""
    parts = [repr(dict(s.attributes or {})) for s in spans]
    parts += [repr(dict(e.attributes or {})) for s in spans for e in s.events]
    parts += [repr(dict(s.resource.attributes)) for s in spans]
    parts += [str(s.status.description) for s in spans]
    return "\n".join(parts)


def test_a_query_is_one_span_tree_with_tokens_and_no_text(
    sandboxes: SandboxPool, tmp_path: Path, docs: Path
) -> None:
    exporter = InMemorySpanExporter()
    telemetry = OtelTelemetry(exporter)
    result, sh = ask(sandboxes, tmp_path, docs, telemetry=telemetry)
    sh.close()
    telemetry.close()
    assert result.answer == "room 2"
    spans = exporter.get_finished_spans()
    names = by_name(spans)
    assert {parent_of(s, spans) for s in spans if s.name.startswith("chat")} == {"strategy code"}
    tree = {s.name: parent_of(s, spans) for s in spans if not s.name.startswith("chat")}
    assert tree == {
        "shesha.query": None,
        "strategy code": "shesha.query",
        "code 1.1": "strategy code",
        "llm_query function": "code 1.1",
        "tool lookup": "code 1.1",
    }
    assert len({s.context.trace_id for s in spans}) == 1
    root = names["shesha.query"]
    attributes = dict(root.attributes or {})
    u = result.usage
    assert attributes["gen_ai.usage.input_tokens"] == u.root.prompt_tokens + u.sub.prompt_tokens
    assert attributes["llm.token_count.total"] == u.total_tokens
    assert attributes["openinference.span.kind"] == "AGENT"
    assert (attributes["shesha.status"], attributes["shesha.steps"]) == ("success", 2)
    assert attributes["shesha.project"] == "vault"
    assert root.status.is_ok
    chats = [s for s in spans if s.name.startswith("chat")]
    assert len(chats) == 2
    assert all((s.attributes or {})["openinference.span.kind"] == "LLM" for s in chats)
    prompts = [int(str((s.attributes or {})["llm.token_count.prompt"])) for s in chats]
    assert sum(prompts) == u.root.prompt_tokens
    for span in spans:  # every child lies within its parent
        parent = next(
            (p for p in spans if span.parent and p.context.span_id == span.parent.span_id), None
        )
        if parent is not None:
            assert parent.start_time <= span.start_time <= span.end_time <= parent.end_time  # type: ignore[operator]
    said = everything_said(spans)
    assert "7431-ZEBRA" not in said  # the document
    assert "Where is the vault" not in said  # the question
    assert "llm_query(" not in said  # the code
    assert "room 2" not in said  # outputs and the answer
    assert "input.value" not in said
    assert API_KEY not in said


def test_an_error_that_quotes_the_document_is_exported_by_its_kind_only(
    sandboxes: SandboxPool, tmp_path: Path, docs: Path
) -> None:
    def failing(messages: list[Message], name: str) -> str:
        step = sum(1 for m in messages if m["role"] == "assistant")
        return "```repl\nfloat(context[0])\n```" if step == 0 else "FINAL(no number)"

    exporter = InMemorySpanExporter()
    telemetry = OtelTelemetry(exporter)
    sh = Shesha(
        home=str(tmp_path / "home"), llm=FunctionModel(failing), sandboxes=sandboxes,
        strategy="code", telemetry=telemetry,
    )  # fmt: skip
    sh.project("vault").add([docs])
    result = sh.project("vault").query("Is there a number?")
    sh.close()
    telemetry.close()
    assert result.trace_path is not None
    assert "7431-ZEBRA" in Path(result.trace_path).read_text()  # the trace has the error
    spans = exporter.get_finished_spans()
    code = by_name(spans)["code 1.1"]
    assert not code.status.is_ok
    assert "7431-ZEBRA" not in everything_said(spans)


def test_with_content_on_the_prompts_code_and_outputs_are_exported(
    sandboxes: SandboxPool, tmp_path: Path, docs: Path
) -> None:
    exporter = InMemorySpanExporter()
    telemetry = OtelTelemetry(exporter, content=True)
    _, sh = ask(sandboxes, tmp_path, docs, telemetry=telemetry)
    sh.close()
    telemetry.close()
    names = by_name(exporter.get_finished_spans())
    assert (names["shesha.query"].attributes or {})["input.value"] == "Where is the vault?"
    assert (names["shesha.query"].attributes or {})["output.value"] == "room 2"
    assert (names["code 1.1"].attributes or {})["input.value"] == CODE
    assert "vault is in room 2" in str((names["code 1.1"].attributes or {})["output.value"])
    assert SECRET_TEXT in str((names["llm_query function"].attributes or {})["input.value"])
    assert API_KEY not in everything_said(list(names.values()))


class Refusing(SpanExporter):
    """A receiver that fails every export, slowly."""

    def __init__(self) -> None:
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        time.sleep(0.5)
        raise ConnectionError("the receiver is down")

    def shutdown(self) -> None:
        pass


def test_a_failing_or_absent_receiver_never_fails_a_query(
    sandboxes: SandboxPool, tmp_path: Path, docs: Path
) -> None:
    refusing = Refusing()
    telemetry = OtelTelemetry(refusing)
    result, sh = ask(sandboxes, tmp_path, docs, telemetry=telemetry)
    assert result.answer == "room 2"
    assert refusing.calls == 0  # the query returned before anything was sent
    telemetry.close()
    assert refusing.calls == 1
    sh.close()
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    result, sh = ask(sandboxes, tmp_path / "b", docs, otel_endpoint=f"http://127.0.0.1:{closed}")
    assert result.answer == "room 2"
    sh.close()


def test_the_standard_variable_turns_the_export_on(
    sandboxes: SandboxPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Shesha(home=str(tmp_path / "a"), sandboxes=sandboxes).telemetry() is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    sh = Shesha(home=str(tmp_path / "b"), sandboxes=sandboxes)
    assert isinstance(sh.telemetry(), OtelTelemetry)
    sh.close()
    assert otlp_traces_url("http://127.0.0.1:4318/") == "http://127.0.0.1:4318/v1/traces"
    assert otlp_traces_url("http://h:1/v1/traces") == "http://h:1/v1/traces"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Arize Phoenix on loopback (`make phoenix`): required in CI, skipped elsewhere."""
    if not PHOENIX.is_file():
        said = f"Arize Phoenix is not installed at {PHOENIX}: run `make phoenix`"
        if IN_CI:
            pytest.fail(f"CI=true, so the OpenTelemetry receiver test must run, but: {said}")
        pytest.skip(said)
    port = free_port()
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(tmp_path_factory.mktemp("phoenix")),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(free_port()),
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    log = tmp_path_factory.mktemp("phoenix-log") / "phoenix.log"
    with log.open("w") as out:
        process = subprocess.Popen([str(PHOENIX), "serve"], env=env, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{url}/v1/projects", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"Phoenix did not start: {log.read_text()[-2000:]}")
        if process.poll() is not None:
            pytest.fail(f"Phoenix exited: {log.read_text()[-2000:]}")
        yield url
    finally:
        process.terminate()
        process.wait(30)


def test_a_querys_spans_arrive_in_phoenix(
    phoenix: str, sandboxes: SandboxPool, tmp_path: Path, docs: Path
) -> None:
    result, sh = ask(sandboxes, tmp_path, docs, otel_endpoint=phoenix)
    sh.close()  # sends what is queued
    assert result.answer == "room 2"
    spans: list[dict[str, Any]] = []
    for _ in range(60):
        r = httpx.get(f"{phoenix}/v1/projects/shesha/spans", params={"limit": 100}, timeout=10)
        if r.status_code == 200:
            spans = r.json()["data"]
            if len(spans) >= 7:
                break
        time.sleep(0.5)
    names = {s["name"]: s for s in spans}
    assert set(names) >= {"shesha.query", "strategy code", "code 1.1", "tool lookup"}
    ids = {s["context"]["span_id"]: s["name"] for s in spans}
    parent = {s["name"]: ids.get(s["parent_id"]) for s in spans}
    assert parent["shesha.query"] is None
    assert parent["strategy code"] == "shesha.query"
    assert parent["code 1.1"] == "strategy code"
    assert parent["llm_query function"] == "code 1.1"
    root = names["shesha.query"]["attributes"]
    assert root["llm.token_count.total"] == result.usage.total_tokens
    assert root["shesha.status"] == "success"
    assert "7431-ZEBRA" not in r.text
    assert API_KEY not in r.text
