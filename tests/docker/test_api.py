"""The Python API: Shesha().project(...).query(...), its async twin, concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shesha import QueryResult, Shesha
from shesha.errors import ConfigError, StorageError
from shesha.rlm import TraceEvent
from shesha.testing import Reply, ScriptedLLMServer

pytestmark = pytest.mark.docker


def scripted(messages: list[dict[str, Any]], model: str) -> Reply:
    step = sum(1 for m in messages if m["role"] == "assistant")
    if step == 0:
        return "```repl\nimport socket\nhost = socket.gethostname()\nprint(doc_names)\n```"
    return "```repl\nFINAL(f'{len(context)} docs on {host}')\n```"


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer(scripted, latency_s=0.2) as s:
        yield s


@pytest.fixture
def sh(server: ScriptedLLMServer, tmp_path: Path) -> Iterator[Shesha]:
    with Shesha(
        home=str(tmp_path / "home"),
        model="openai/scripted",
        api_base=server.api_base,
        api_key="test",
        pool_size=3,
    ) as instance:
        yield instance


def make_docs(root: Path, n: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"d{i}.txt").write_text(f"document {i}")
    return root


def test_project_add_query_documents_remove(sh: Shesha, tmp_path: Path) -> None:
    p = sh.project("contracts")
    report = p.add([make_docs(tmp_path / "in", 2)])
    assert report.ok
    assert [d.name for d in p.documents()] == ["d0.txt", "d1.txt"]
    events: list[TraceEvent] = []
    r = p.query("How many?", on_event=events.append)
    assert isinstance(r, QueryResult)
    assert r.status == "success"
    assert r.answer is not None
    assert r.answer.startswith("2 docs on ")
    assert r.trace_path is not None
    assert Path(r.trace_path).parent == p.stored.traces_dir
    assert events[-1].type == "summary"
    p.remove("d1.txt")
    assert p.query("How many?").answer.startswith("1 docs")  # type: ignore[union-attr]
    assert sh.projects() == ["contracts"]
    sh.delete_project("contracts")
    assert sh.projects() == []
    with pytest.raises(StorageError):
        sh.get_project("contracts")


def test_the_pool_starts_lazily_and_is_shared(sh: Shesha, tmp_path: Path) -> None:
    assert not sh.pool_started
    sh.project("a").add([make_docs(tmp_path / "a", 1)])
    assert not sh.pool_started  # adding documents needs no sandbox
    sh.project("a").query("q")
    assert sh.pool_started
    pool = sh.pool()
    sh.project("b").add([make_docs(tmp_path / "b", 1)])
    sh.project("b").query("q")
    assert sh.pool() is pool
    assert pool.stats().started == 3  # one pool of 3, shared by both projects


def test_concurrent_queries_across_projects_use_the_pools_containers(
    sh: Shesha, tmp_path: Path
) -> None:
    projects = [sh.project(f"p{i}") for i in range(3)]
    for i, p in enumerate(projects):
        p.add([make_docs(tmp_path / f"src{i}", i + 1)])

    async def ask_all() -> list[QueryResult]:
        return list(await asyncio.gather(*(p.aquery("How many?") for p in projects)))

    results = asyncio.run(ask_all())
    assert [r.status for r in results] == ["success"] * 3
    answers = [r.answer or "" for r in results]
    assert [a.split()[0] for a in answers] == ["1", "2", "3"]
    assert len({a.split()[-1] for a in answers}) == 3  # three different containers


def test_per_query_overrides_and_their_validation(sh: Shesha, tmp_path: Path) -> None:
    p = sh.project("o")
    p.add([make_docs(tmp_path / "o", 1)])
    r = p.query("q", max_iterations=1)
    assert r.status == "max_iterations"
    with pytest.raises(ConfigError, match="Unknown query option"):
        p.query("q", max_iteration=1)
    with pytest.raises(ConfigError, match="max_cost_usd"):
        p.query("q", max_cost_usd=-1)


def test_no_model_is_a_clear_error(tmp_path: Path) -> None:
    with Shesha(home=str(tmp_path / "h")) as bare:
        p = bare.project("x")
        with pytest.raises(ConfigError, match="No model is configured"):
            p.query("q")


def test_an_invalid_constructor_setting_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pool_size = 0 \\(from the arguments\\)"):
        Shesha(home=str(tmp_path), pool_size=0)
