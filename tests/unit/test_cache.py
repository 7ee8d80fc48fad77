"""The sub-call cache: keys, the folder, and what the engine and the API do with it."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from tests.oracle import make_docs

from shesha import Shesha
from shesha.errors import LLMError
from shesha.llm.types import Message
from shesha.rlm import EngineConfig, RLMEngine, read_trace
from shesha.rlm.cache import CachedAnswer, DiskCache, cache_key
from shesha.rlm.events import SubcallResponse
from shesha.rlm.trace import prompt_key
from shesha.sandbox import InMemoryCorpus, SandboxPool
from shesha.testing import FunctionModel

SUBCALL = "You follow one instruction"
MAP = "```repl\nparts = llm_query_batched('Count the lines', context)\nprint(parts)\n```"


def mapper(messages: list[Message], model: str) -> str:
    if messages[0]["content"].startswith(SUBCALL):
        return f"{messages[-1]['content'].count(chr(10))} lines"
    step = sum(1 for m in messages if m["role"] == "assistant")
    return MAP if step == 0 else "FINAL(counted)"


def answer(text: str = "yes") -> CachedAnswer:
    return CachedAnswer(text, "m", 10, 2, 0.001)


def test_the_key_ignores_the_query_boundary_and_nothing_else() -> None:
    a = [{"role": "user", "content": 'x <t id="' + "a" * 32 + '">doc</t id="' + "a" * 32 + '">'}]
    b = [{"role": "user", "content": 'x <t id="' + "b" * 32 + '">doc</t id="' + "b" * 32 + '">'}]
    assert cache_key("m", a, "t=0") == cache_key("m", b, "t=0")
    # text that only looks like a boundary is text: two passages that differ there differ
    inner_a = 'x <t id="' + "c" * 32 + '">doc id="' + "1" * 32 + '"</t id="' + "c" * 32 + '">'
    inner_b = 'x <t id="' + "c" * 32 + '">doc id="' + "2" * 32 + '"</t id="' + "c" * 32 + '">'
    first = [{"role": "user", "content": inner_a}]
    second = [{"role": "user", "content": inner_b}]
    assert cache_key("m", first, "t=0") != cache_key("m", second, "t=0")
    assert prompt_key(first) != prompt_key(second)
    assert cache_key("m", a, "t=0") != cache_key("other", a, "t=0")
    assert cache_key("m", a, "t=0") != cache_key("m", a, "t=0.5")
    assert cache_key("m", a, "t=0") != cache_key("m", [{"role": "user", "content": "y"}], "t=0")


def test_the_folder_keeps_answers_and_drops_the_least_recently_used(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", max_bytes=1000)
    cache.put("a" * 64, answer("first"))
    assert cache.get("a" * 64) == answer("first")
    assert cache.get("b" * 64) is None
    for i in range(30):
        cache.put(f"{i:064d}", answer("x" * 40))
    cache.get("a" * 64)  # not used since it was put: it goes first anyway
    files = list((tmp_path / "c").glob("*/*.json"))
    assert sum(f.stat().st_size for f in files) <= 1000
    assert cache.get(f"{29:064d}") is not None  # the newest stays


def test_writers_at_once_never_leave_half_an_entry(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c")

    def write(n: int) -> None:
        for _ in range(50):
            cache.put("k" * 64, answer(str(n) * 500))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = cache.get("k" * 64)
    assert got is not None
    assert len(set(got.text)) == 1  # one writer's whole answer
    assert not [p for p in (tmp_path / "c").rglob("*") if ".tmp-" in p.name]


def test_a_second_run_asks_the_sub_model_nothing(sandboxes: SandboxPool, tmp_path: Path) -> None:
    model = FunctionModel(mapper)
    cache = DiskCache(tmp_path / "cache")
    corpus = InMemoryCorpus([("a.txt", "1\n2\n"), ("b.txt", "1\n"), ("c.txt", "1\n2\n3\n")])
    engine = RLMEngine(model, sandboxes, EngineConfig(model="m", cache_salt="t=0"), cache=cache)

    def subcalls_made() -> int:
        return sum(1 for _, m in model.calls if m[0]["content"].startswith(SUBCALL))

    first = asyncio.run(engine.run("How many lines?", corpus))
    assert (subcalls_made(), first.usage.cached_subcalls) == (3, 0)
    second = asyncio.run(engine.run("How many lines, again?", corpus, trace_dir=tmp_path / "t"))
    assert subcalls_made() == 3  # none more
    assert (second.answer, second.subcalls, second.usage.cached_subcalls) == ("counted", 3, 3)
    assert second.usage.sub.calls == 0
    assert second.usage.saved_tokens > 0
    responses = [
        e for e in read_trace(second.trace_path or "").events if isinstance(e, SubcallResponse)
    ]
    assert [r.cached for r in responses] == [True, True, True]


def test_identical_prompts_in_one_batch_are_asked_once(
    sandboxes: SandboxPool, tmp_path: Path
) -> None:
    calls: list[int] = []

    async def slow(messages: list[Message], model: str) -> str:
        if messages[0]["content"].startswith(SUBCALL):
            calls.append(1)
            await asyncio.sleep(0.2)
            return "positive"
        step = sum(1 for m in messages if m["role"] == "assistant")
        code = "```repl\nprint(llm_query_batched('Tone?', ['great'] * 10 + ['fine']))\n```"
        return code if step == 0 else "FINAL(done)"

    engine = RLMEngine(
        FunctionModel(slow), sandboxes, EngineConfig(model="m"), cache=DiskCache(tmp_path)
    )
    r = asyncio.run(engine.run("q", InMemoryCorpus([("a.txt", "x")])))
    assert r.subcalls == 11
    assert len(calls) == 2
    assert r.usage.cached_subcalls == 9


def shesha_with(sandboxes: SandboxPool, tmp_path: Path, **settings: Any) -> Shesha:
    return Shesha(
        home=str(tmp_path / "home"), llm=FunctionModel(mapper), sandboxes=sandboxes, **settings
    )


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    return make_docs(tmp_path / "docs", 3)


def test_a_project_caches_at_temperature_zero_and_not_otherwise(
    sandboxes: SandboxPool, tmp_path: Path, docs: Path
) -> None:
    with shesha_with(sandboxes, tmp_path, temperature=0) as sh:
        p = sh.project("p")
        p.add([docs])
        assert p.query("q").usage.cached_subcalls == 0
        assert p.query("q").usage.cached_subcalls == 3
        assert list((p.stored.path / "cache" / "subcalls").glob("*/*.json"))
        assert p.query("q", cache=False).usage.cached_subcalls == 0  # --no-cache
    with shesha_with(sandboxes, tmp_path) as sh:  # the provider's temperature: may vary
        assert sh.get_project("p").query("q").usage.cached_subcalls == 0


def test_when_the_first_of_identical_prompts_fails_the_others_ask_again(
    sandboxes: SandboxPool, tmp_path: Path
) -> None:
    calls: list[int] = []

    async def flaky(messages: list[Message], model: str) -> str:
        if messages[0]["content"].startswith(SUBCALL):
            calls.append(1)
            await asyncio.sleep(0.1)
            if len(calls) == 1:
                raise LLMError("the provider hiccuped")
            return "positive"
        step = sum(1 for m in messages if m["role"] == "assistant")
        return (
            "```repl\nprint(llm_query_batched('Tone?', ['great'] * 3))\n```"
            if step == 0
            else "FINAL(done)"
        )

    engine = RLMEngine(
        FunctionModel(flaky), sandboxes, EngineConfig(model="m"), cache=DiskCache(tmp_path)
    )
    r = asyncio.run(engine.run("q", InMemoryCorpus([("a.txt", "x")]), trace_dir=tmp_path / "t"))
    outputs = [e for e in read_trace(r.trace_path or "").events if isinstance(e, SubcallResponse)]
    assert [o.error is not None for o in outputs].count(True) == 1
    assert sum(1 for o in outputs if o.text == "positive") == 2
