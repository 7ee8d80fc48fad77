"""The Python API in-process: Shesha(llm=FunctionModel(...), sandboxes=process_sandboxes())."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.oracle import make_docs

from shesha import QueryResult, Shesha
from shesha.errors import ConfigError, StorageError
from shesha.llm.types import Message
from shesha.rlm import TraceEvent
from shesha.sandbox import SandboxPool
from shesha.testing import FunctionModel

SUBCALL = "You follow one instruction"


def two_steps(messages: list[Message], model: str) -> str:
    """Looks at the documents, then answers with how many there are."""
    if messages[0]["content"].startswith(SUBCALL):
        return "sub:" + messages[-1]["content"].split("\n")[0]
    if sum(1 for m in messages if m["role"] == "assistant") == 0:
        return "```repl\nnames = list(doc_names)\nprint(names)\n```"
    return "```repl\nFINAL(f'{len(context)} docs: {names}')\n```"


@pytest.fixture
def sh(sandboxes: SandboxPool, tmp_path: Path) -> Iterator[Shesha]:
    with Shesha(
        home=str(tmp_path / "home"), llm=FunctionModel(two_steps), sandboxes=sandboxes
    ) as s:
        yield s


def test_project_add_query_documents_remove(sh: Shesha, tmp_path: Path) -> None:
    p = sh.project("contracts")
    report = p.add([make_docs(tmp_path / "in", 2)])
    assert report.ok
    assert [d.name for d in p.documents()] == ["d0.txt", "d1.txt"]
    events: list[TraceEvent] = []
    r = p.query("How many?", on_event=events.append)
    assert isinstance(r, QueryResult)
    assert (r.status, r.answer) == ("success", "2 docs: ['d0.txt', 'd1.txt']")
    assert r.trace_path is not None
    assert Path(r.trace_path).parent == p.stored.traces_dir
    assert events[-1].type == "summary"
    p.remove("d1.txt")
    assert p.query("How many?").answer == "1 docs: ['d0.txt']"
    assert sh.projects() == ["contracts"]
    sh.delete_project("contracts")
    assert sh.projects() == []
    with pytest.raises(StorageError):
        sh.get_project("contracts")


def test_the_function_model_answers_root_and_sub_calls(
    sandboxes: SandboxPool, tmp_path: Path
) -> None:
    def fn(messages: list[Message], model: str) -> str:
        if messages[0]["content"].startswith(SUBCALL):
            return f"{model} read it"
        if len(messages) == 2:
            return "```repl\nprint(llm_query('Read', context[0]))\n```"
        return "FINAL(all done)"

    model = FunctionModel(fn)
    with Shesha(home=str(tmp_path), llm=model, sandboxes=sandboxes, sub_model="small") as sh:
        p = sh.project("p")
        p.add([make_docs(tmp_path / "in", 1)])
        r = p.query("q")
    assert (r.status, r.answer, r.subcalls) == ("success", "all done", 1)
    assert [m for m, _ in model.calls] == ["function", "small", "function"]
    assert "small read it" in model.calls[-1][1][-1]["content"]
    assert r.usage.root.calls == 2
    assert r.usage.sub.calls == 1
    assert r.usage.total_cost_usd == 0.0


def test_sandboxes_passed_in_are_used_and_stay_open(sandboxes: SandboxPool, tmp_path: Path) -> None:
    with Shesha(home=str(tmp_path), llm=FunctionModel(two_steps), sandboxes=sandboxes) as sh:
        sh.project("a").add([make_docs(tmp_path / "a", 1)])
        assert sh.project("a").query("q").status == "success"
        assert sh.sandboxes() is sandboxes
        assert not sh.pool_started  # no Docker pool was started
    with sandboxes.acquire() as session:  # the Shesha is closed; the pool is not
        assert session.execute("print(1)").stdout == "1\n"


def test_concurrent_queries_across_projects(sh: Shesha, tmp_path: Path) -> None:
    projects = [sh.project(f"p{i}") for i in range(3)]
    for i, p in enumerate(projects):
        p.add([make_docs(tmp_path / f"src{i}", i + 1)])

    async def ask_all() -> list[QueryResult]:
        return list(await asyncio.gather(*(p.aquery("How many?") for p in projects)))

    results = asyncio.run(ask_all())
    assert [r.status for r in results] == ["success"] * 3
    assert [(r.answer or "").split()[0] for r in results] == ["1", "2", "3"]


def test_query_works_inside_a_running_event_loop(sh: Shesha, tmp_path: Path) -> None:
    p = sh.project("loop")
    p.add([make_docs(tmp_path / "loop", 2)])

    async def in_a_handler() -> QueryResult:
        return p.query("How many?")  # the sync API, called from async code

    r = asyncio.run(in_a_handler())
    assert (r.status, (r.answer or "").split()[0]) == ("success", "2")


def test_per_query_overrides_and_their_validation(sh: Shesha, tmp_path: Path) -> None:
    p = sh.project("o")
    p.add([make_docs(tmp_path / "o", 1)])
    r = p.query("q", max_iterations=1)
    assert r.status == "max_iterations"
    with pytest.raises(ConfigError, match="Unknown query option"):
        p.query("q", max_iteration=1)
    with pytest.raises(ConfigError, match="max_cost_usd"):
        p.query("q", max_cost_usd=-1)


def test_no_model_is_a_clear_error(sandboxes: SandboxPool, tmp_path: Path) -> None:
    with Shesha(home=str(tmp_path / "h"), sandboxes=sandboxes) as bare:
        assert not bare.has_model
        p = bare.project("x")
        with pytest.raises(ConfigError, match="No model is configured") as err:
            p.query("q")
    assert "--model local" in str(err.value)


def test_an_invalid_constructor_setting_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pool_size = 0 \\(from the arguments\\)"):
        Shesha(home=str(tmp_path), pool_size=0)


def test_a_closed_shesha_refuses_queries(sandboxes: SandboxPool, tmp_path: Path) -> None:
    sh = Shesha(home=str(tmp_path), llm=FunctionModel(two_steps), sandboxes=sandboxes)
    p = sh.project("c")
    p.add([make_docs(tmp_path / "c", 1)])
    sh.close()
    with pytest.raises(ConfigError, match="closed"):
        p.query("q")
