"""The Python API end to end against real Docker: a scripted model over HTTP, and a
FunctionModel with no server at all. (tests/unit/test_api.py covers the rest in-process.)"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.oracle import make_docs

from shesha import QueryResult, Shesha
from shesha.testing import FunctionModel, ScriptedLLMServer, ScriptedReply

pytestmark = pytest.mark.docker


def scripted(messages: list[dict[str, Any]], model: str) -> ScriptedReply:
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


def test_a_function_model_answers_against_real_docker_with_no_http_server(
    tmp_path: Path,
) -> None:
    fn = FunctionModel(lambda messages, model: str(scripted(list(messages), model)))
    with Shesha(home=str(tmp_path / "home"), llm=fn, pool_size=1) as sh:
        p = sh.project("contracts")
        p.add([make_docs(tmp_path / "in", 2)])
        r = p.query("How many?")
        assert sh.pool_started
    assert r.status == "success"
    assert (r.answer or "").startswith("2 docs on ")
    assert len(fn.calls) == 2


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


def test_the_function_model_example_runs_against_docker() -> None:
    script = Path(__file__).parents[2] / "examples" / "function_model.py"
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "lease.txt · success · 2 sub-calls · 5 calls"
