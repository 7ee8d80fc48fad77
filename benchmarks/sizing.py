"""Sizing figures for planning a deployment (docs/scaling.md): memory per container with
a 100 MB corpus, queries per second per container against a model with 200 ms latency,
and from the container's CPU time per query, how many containers one core can keep busy.

    python benchmarks/sizing.py            # a readable table
    python benchmarks/sizing.py --json     # one JSON object

Real Docker sandboxes (`make sandbox-image`) and a scripted model: an OpenAI-compatible
server on 127.0.0.1 that answers after 200 ms, reached through LiteLLM. Each query is a
typical three-step RLM run: a regex scan of a 1 MB document, a batch of 8 sub-calls over
its chunks, then FINAL.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from typing import Any

from report import emit

import docker
from shesha import Shesha
from shesha.sandbox import DockerSandbox, InMemoryCorpus, SandboxLimits, docker_pool
from shesha.testing import ScriptedLLMServer

LATENCY_S = 0.2
SUBCALL = "You follow one instruction"
SCAN = (
    "```repl\nimport re\nhits = [m.start() for m in re.finditer(r'order \\d+ shipped', "
    "context[0])]\nchunks = [context[0][i:i + 20000] for i in range(0, 160000, 20000)]\n"
    "print(len(hits), 'hits')\n```"
)
MAP = (
    "```repl\nlabels = llm_query_batched('Summarise in one word.', chunks)\nprint(labels[:2])\n```"
)
TARGETS: dict[str, tuple[str, float]] = {}


def script(messages: list[dict[str, Any]], model: str) -> str:
    if str(messages[0]["content"]).startswith(SUBCALL):
        return "orders"
    step = sum(1 for m in messages if m["role"] == "assistant")
    return [SCAN, MAP, "FINAL(done)"][min(step, 2)]


def working_set_mb(client: docker.DockerClient, container_id: str) -> float:
    """The container's memory less its reclaimable page cache, as `docker stats` shows."""
    stats = client.api.stats(container_id, stream=False)
    memory = stats["memory_stats"]
    cache = memory.get("stats", {}).get("total_inactive_file") or memory.get("stats", {}).get(
        "inactive_file", 0
    )
    return float(memory["usage"] - cache) / 2**20


def cpu_seconds(client: docker.DockerClient, container_id: str) -> float:
    stats = client.api.stats(container_id, stream=False)
    return float(stats["cpu_stats"]["cpu_usage"]["total_usage"]) / 1e9


def memory_with_corpus(mb: int) -> dict[str, float]:
    """One container: idle, then holding ``mb`` MB of documents, then after a scan."""
    client = docker.from_env()
    docs = [(f"d{i:03}.txt", ("x" * 99 + "\n") * (2**20 // 100)) for i in range(mb)]
    limits = SandboxLimits(memory_mb=2048)
    with docker_pool(1, limits=limits) as pool:
        with pool.acquire(InMemoryCorpus([("w.txt", "warm")])) as s:
            s.execute("x = 1")
            sandbox = s.sandbox
            assert isinstance(sandbox, DockerSandbox)
            idle = working_set_mb(client, sandbox.container_id)
        with pool.acquire(InMemoryCorpus(docs)) as s:
            s.execute("n = sum(len(d) for d in context)")
            sandbox = s.sandbox
            assert isinstance(sandbox, DockerSandbox)
            loaded = working_set_mb(client, sandbox.container_id)
            s.execute("import re\nm = sum(len(re.findall('xx', d)) for d in context)")
            scanned = working_set_mb(client, sandbox.container_id)
    client.close()
    return {"idle": idle, "loaded": loaded, "scanned": scanned}


async def throughput(sh: Shesha, corpus: InMemoryCorpus, containers: int, rounds: int) -> float:
    """Queries per second with ``containers`` queries in flight at once."""

    async def one_after_another() -> None:
        for _ in range(rounds):
            result = await sh.aquery_corpus("How many orders shipped?", corpus)
            assert result.answer == "done", result.status

    started = time.perf_counter()
    await asyncio.gather(*(one_after_another() for _ in range(containers)))
    return containers * rounds / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rounds", type=int, default=10, help="queries per container")
    args = parser.parse_args()
    line = "order 17 shipped to Lisbon; nothing else of note here.\n"
    corpus = InMemoryCorpus([("orders.txt", line * (2**20 // len(line)))])
    memory = memory_with_corpus(100)
    results: dict[str, Any] = {
        "memory_idle_mb": round(memory["idle"], 1),
        "memory_100mb_corpus_mb": round(memory["loaded"], 1),
        "memory_after_scan_mb": round(memory["scanned"], 1),
    }
    client = docker.from_env()
    with ScriptedLLMServer(script, latency_s=LATENCY_S) as server:
        for containers in (1, 2, 4):
            with Shesha(
                model="openai/scripted", api_base=server.api_base, api_key="t",
                temperature=0, pool_size=containers, cache=False,
            ) as sh:  # fmt: skip
                asyncio.run(throughput(sh, corpus, containers, 1))  # warm: pool, LiteLLM, corpus
                ids = [
                    str(c.id)
                    for c in client.containers.list(filters={"label": "io.shesha.sandbox"})
                ]
                cpu_before = sum(cpu_seconds(client, i) for i in ids)
                host_before = resource.getrusage(resource.RUSAGE_SELF)
                qps = asyncio.run(throughput(sh, corpus, containers, args.rounds))
                host_after = resource.getrusage(resource.RUSAGE_SELF)
                cpu_used = sum(cpu_seconds(client, i) for i in ids) - cpu_before
            queries = containers * args.rounds
            results[f"qps_{containers}_containers"] = round(qps, 2)
            if containers == 1:
                per_query_s = 1 / qps
                sandbox_cpu = cpu_used / queries
                host_cpu = (
                    host_after.ru_utime + host_after.ru_stime - host_before.ru_utime
                    - host_before.ru_stime
                ) / queries  # fmt: skip
                results["query_wall_s"] = round(per_query_s, 3)
                results["sandbox_cpu_s_per_query"] = round(sandbox_cpu, 4)
                results["host_cpu_s_per_query"] = round(host_cpu, 4)
                results["containers_per_core"] = round(per_query_s / max(sandbox_cpu, 1e-6), 1)
                results["queries_at_once_per_host_core"] = round(per_query_s / host_cpu, 1)
    client.close()
    emit(results, TARGETS, args.json)


if __name__ == "__main__":
    main()
