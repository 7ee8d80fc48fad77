"""The engine end to end: scripted HTTP model through LiteLLM, real Docker sandboxes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from shesha.llm import LLMClient, LLMSettings
from shesha.rlm import EngineConfig, QueryLimits, RLMEngine, read_trace
from shesha.sandbox import InMemoryCorpus, SandboxPool
from shesha.testing import ScriptedLLMServer, ScriptedReply

pytestmark = pytest.mark.docker

FILLER = "The quick brown fox jumps over the lazy dog. " * 2000
CORPUS = InMemoryCorpus(
    [
        ("one.txt", FILLER),
        ("two.txt", FILLER[:40_000] + " The magic number is 7349. " + FILLER[40_000:]),
        ("three.txt", FILLER),
    ]
)

SEARCH = """```repl
chunks = []
for name, text in zip(doc_names, context):
    for i in range(0, len(text), 20_000):
        chunks.append(text[i:i + 20_000])
answers = llm_query_batched('What is the magic number? Say NONE if absent.', chunks)
hits = [a for a in answers if a != 'NONE']
print(len(chunks), hits)
```"""


def scripted(root: list[ScriptedReply]) -> Any:
    state = {"i": 0}

    def script(messages: list[dict[str, Any]], model: str) -> ScriptedReply:
        if messages[0]["content"].startswith("You follow one instruction"):
            content = messages[1]["content"]
            return "7349" if "magic number is 7349" in content else "NONE"
        reply = root[min(state["i"], len(root) - 1)]
        state["i"] += 1
        return reply

    return script


def engine(server: ScriptedLLMServer, pool: SandboxPool, **limits: Any) -> RLMEngine:
    llm = LLMClient(LLMSettings(api_base=server.api_base, api_key="test", num_retries=0))
    config = EngineConfig(model="openai/root", limits=QueryLimits(**limits))
    return RLMEngine(llm, pool, config)


def test_a_needle_search_with_batched_sub_calls(pool: SandboxPool, tmp_path: Path) -> None:
    with ScriptedLLMServer(scripted([SEARCH, "```repl\nFINAL(hits[0])\n```"])) as server:
        result = asyncio.run(
            engine(server, pool).run("What is the magic number?", CORPUS, trace_dir=tmp_path)
        )
    sent_before = pool.stats().document_bytes_sent
    with ScriptedLLMServer(scripted([SEARCH, "```repl\nFINAL(hits[0])\n```"])) as server:
        again = asyncio.run(engine(server, pool).run("Again?", CORPUS, trace_dir=tmp_path))
    assert result.status == "success", result.error
    assert result.answer == "7349"
    assert result.subcalls == 15  # 3 documents of about 90,000 chars, in 20,000-char chunks
    assert result.usage.sub.calls == 15
    types = [e.type for e in read_trace(result.trace_path or "").events]
    assert types.count("subcall_response") == 15
    assert types[-1] == "summary"
    assert again.status == "success"
    assert pool.stats().document_bytes_sent == sent_before  # the corpus was not sent again


def test_a_runaway_cell_is_killed_and_the_model_can_go_on(pool: SandboxPool) -> None:
    loop = "```repl\nx = 1\nwhile True:\n    pass\n```"
    after = "```repl\nFINAL(str(len(context)) + ' ' + str('x' in globals()))\n```"
    with ScriptedLLMServer(scripted([loop, after])) as server:
        result = asyncio.run(engine(server, pool, exec_timeout_s=1).run("q", CORPUS))
        feedback = server.requests[1].messages[-1]["content"]
    assert result.answer == "3 False"  # a fresh container, with the documents loaded again
    assert 'status="timeout"' in feedback
    assert "longer than 1 s" in feedback


def test_three_queries_at_once_share_the_pool(pool: SandboxPool) -> None:
    code = "```repl\nimport socket\nFINAL(socket.gethostname())\n```"
    with ScriptedLLMServer(scripted([code]), latency_s=0.2) as server:
        eng = engine(server, pool)

        async def three() -> list[str | None]:
            results = await asyncio.gather(*(eng.run(f"q{i}", CORPUS) for i in range(3)))
            return [r.answer for r in results]

        hosts = asyncio.run(three())
    assert len(set(hosts)) == 3
