"""Engine benchmark: per-iteration overhead, parallel sub-calls, a 1M-character needle search.

    python benchmarks/engine.py          # a readable table
    python benchmarks/engine.py --json   # one JSON object

Drives the real engine with a scripted model (an OpenAI-compatible server on 127.0.0.1,
reached through LiteLLM) and real Docker sandboxes.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

from report import emit

from shesha.llm import LLMClient, LLMSettings
from shesha.rlm import EngineConfig, QueryLimits, RLMEngine, TraceEvent
from shesha.rlm.events import ExecDone
from shesha.sandbox import InMemoryCorpus, SandboxPool, docker_pool
from shesha.testing import ScriptedLLMServer, ScriptedReply

TARGETS = {
    "iteration_overhead_ms_p50": ("<=", 10.0),
    "batched_16_wall_s": ("<=", 0.45),
}


def repl(code: str) -> str:
    return f"```repl\n{code}\n```"


def is_subcall(messages: list[dict[str, Any]]) -> bool:
    return str(messages[0]["content"]).startswith("You follow one instruction")


def script(root: list[str], sub: Any = None) -> Any:
    state = {"i": 0}

    def reply(messages: list[dict[str, Any]], model: str) -> ScriptedReply:
        if is_subcall(messages):
            return sub(messages[1]["content"]) if sub else "ok"
        text = root[min(state["i"], len(root) - 1)]
        state["i"] += 1
        return text

    return reply


def make_engine(server: ScriptedLLMServer, pool: SandboxPool, iterations: int = 40) -> RLMEngine:
    llm = LLMClient(LLMSettings(api_base=server.api_base, api_key="bench", num_retries=0))
    config = EngineConfig(model="openai/root", limits=QueryLimits(max_iterations=iterations))
    return RLMEngine(llm, pool, config)


def iteration_overhead(pool: SandboxPool, corpus: InMemoryCorpus, n: int) -> list[float]:
    """Engine time per iteration: from a root reply's arrival to the next root request,
    which covers code extraction, the sandbox round trip, history and trace writes."""
    events: list[TraceEvent] = []
    # Each step prints something new: the same empty step again would be a stall.
    root = [repl(f"x = {i}\nprint(x)") for i in range(n)] + [repl("FINAL('done')")]
    with ScriptedLLMServer(script(root)) as server:
        result = asyncio.run(
            make_engine(server, pool, n + 5).run("q", corpus, on_event=events.append)
        )
    assert result.answer == "done", result
    gaps = []
    last_response = None
    for e in events:
        if e.type == "llm_response":
            last_response = e.ts
        elif e.type == "llm_request" and last_response is not None:
            gaps.append((e.ts - last_response) * 1000)
    return gaps


def subcall_wall(pool: SandboxPool, corpus: InMemoryCorpus, code: str) -> float:
    events: list[TraceEvent] = []
    with ScriptedLLMServer(script([repl(code + "\nFINAL('ok')")]), latency_s=0.2) as server:
        asyncio.run(make_engine(server, pool).run("q", corpus, on_event=events.append))
    (result,) = [e for e in events if isinstance(e, ExecDone)]
    assert result.subcalls == 16, result
    return (result.duration_ms or 0) / 1000


def needle(pool: SandboxPool) -> tuple[float, str | None]:
    filler = "Paris is the capital of France and the city of light. "
    text = (filler * (1_000_000 // len(filler) + 1))[:1_000_000]
    at = 730_000
    text = text[:at] + " The secret passphrase is heliotrope-42. " + text[at:]
    corpus = InMemoryCorpus([("haystack.txt", text)])
    root = [
        repl("print(len(context), len(context[0]))\nprint(context[0][:200])"),
        repl(
            "chunks = [context[0][i:i + 100_000] for i in range(0, len(context[0]), 100_000)]\n"
            "found = llm_query_batched('Quote the secret passphrase, or say NONE.', chunks)\n"
            "print([f for f in found if f != 'NONE'])"
        ),
        repl("FINAL([f for f in found if f != 'NONE'][0])"),
    ]

    def sub(content: str) -> str:
        return "heliotrope-42" if "passphrase is heliotrope-42" in content else "NONE"

    with ScriptedLLMServer(script(root, sub)) as server:
        started = time.perf_counter()
        result = asyncio.run(make_engine(server, pool).run("What is the passphrase?", corpus))
        elapsed = time.perf_counter() - started
    return elapsed, result.answer


def bench(iterations: int) -> dict[str, Any]:
    corpus = InMemoryCorpus([("doc.txt", "hello " * 1000)])
    with docker_pool(3) as pool:
        with pool.acquire(corpus):
            pass  # warm: the corpus is loaded once
        iteration_overhead(pool, corpus, 5)  # warm-up (imports, connections)
        gaps = iteration_overhead(pool, corpus, iterations)
        batched = subcall_wall(
            pool, corpus, "r = llm_query_batched('x', [str(i) for i in range(16)])"
        )
        sequential = subcall_wall(pool, corpus, "r = [llm_query('x', str(i)) for i in range(16)]")
        needle_s, needle_answer = needle(pool)
    return {
        "iterations_timed": len(gaps),
        "iteration_overhead_ms_p50": round(statistics.median(gaps), 3),
        "iteration_overhead_ms_p95": round(sorted(gaps)[int(0.95 * (len(gaps) - 1))], 3),
        "batched_16_wall_s": round(batched, 3),
        "sequential_16_wall_s": round(sequential, 3),
        "batched_speedup": round(sequential / batched, 1),
        "needle_1m_chars_s": round(needle_s, 3),
        "needle_found": needle_answer == "heliotrope-42",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="shesha engine benchmark")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--iterations", type=int, default=30, help="iterations to time")
    args = parser.parse_args()
    results = bench(args.iterations)
    emit(results, TARGETS, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
