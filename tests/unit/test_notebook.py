"""Results and traces render in Jupyter: the answer, the status line and each step, every
text escaped; and the example notebook runs for real in a kernel."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from shesha.llm.types import Message
from shesha.rlm.config import EngineConfig
from shesha.rlm.engine import RLMEngine
from shesha.rlm.result import QueryResult
from shesha.rlm.trace import read_trace
from shesha.rlm.usage import Usage
from shesha.sandbox import InMemoryCorpus, SandboxPool
from shesha.testing import FunctionModel

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "notebook.ipynb"
HOSTILE = "<script>alert('doc')</script><img src=x onerror=alert(1)>"


def hostile_run(sandboxes: SandboxPool, tmp_path: Path) -> QueryResult:
    def fn(messages: list[Message], _: str) -> str:
        if len(messages) == 2:
            return "```repl\nprint(context[0])\n```"
        return 'FINAL("<b>bold</b> & done")'

    engine = RLMEngine(FunctionModel(fn), sandboxes, EngineConfig(model="m", strategy="code"))
    corpus = InMemoryCorpus([("a.html", HOSTILE)])
    return asyncio.run(engine.run("<i>Which?</i>", corpus, trace_dir=tmp_path / "traces"))


def test_a_result_renders_with_every_text_escaped(sandboxes: SandboxPool, tmp_path: Path) -> None:
    result = hostile_run(sandboxes, tmp_path)
    html = result._repr_html_()
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; done" in html  # the answer
    assert "&lt;script&gt;alert(&#x27;doc&#x27;)&lt;/script&gt;" in html  # the output
    for raw in ("<script", "<img", "<b>bold", "<i>"):
        assert raw not in html
    assert "success · 2 steps" in html
    assert html.count("<details>") == 3  # a collapsed line per step (0: the engine's)
    assert "strategy: code" in html
    assert "print(context[0])" in html


def test_a_trace_renders_its_question_and_steps(sandboxes: SandboxPool, tmp_path: Path) -> None:
    result = hostile_run(sandboxes, tmp_path)
    html = read_trace(result.trace_path or "")._repr_html_()
    assert "&lt;i&gt;Which?&lt;/i&gt;" in html
    assert "<i>" not in html
    assert "success · 2 steps" in html
    assert html.count("<details>") == 3


def test_a_result_without_a_trace_still_renders() -> None:
    bare = QueryResult(answer=None, status="error", error="no <model>", iterations=0,
                       usage=Usage(), subcalls=0, duration_s=0.0)  # fmt: skip
    html = bare._repr_html_()
    assert "(no answer)" in html
    assert "no &lt;model&gt;" in html


@pytest.mark.timeout(300)
def test_the_example_notebook_runs_in_a_real_kernel(tmp_path: Path) -> None:
    notebook = nbformat.read(EXAMPLE, as_version=4)  # type: ignore[no-untyped-call]
    NotebookClient(notebook, timeout=240, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # fmt: skip
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert len(html) == 2  # the result, then the trace
    assert "<strong>Answer:</strong> Lisbon" in html[0]
    assert "&lt;b&gt;Lisbon&lt;/b&gt;" in html[0]  # the document's markup, shown as text
    assert "<strong>Question:</strong> Where is the offsite?" in html[1]
    plain = [json.dumps(o.get("data", {}).get("text/plain")) for o in outputs]
    assert any("Lisbon" in p and "<" not in p for p in plain)  # await p.aquery(...)
