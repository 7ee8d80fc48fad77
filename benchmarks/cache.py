"""Sub-call cache benchmark: an OOLONG-style question asked twice, then a third question
that maps the same chunks with the same instruction.

    python benchmarks/cache.py            # a readable table
    python benchmarks/cache.py --json     # one JSON object

A scripted model (an OpenAI-compatible server on 127.0.0.1 with 200 ms of latency, reached
through LiteLLM at temperature 0) and real Docker sandboxes; the project is stored, so its
cache lives on disk beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from report import emit

from shesha import Shesha
from shesha.bench import generate
from shesha.sandbox import InMemoryCorpus
from shesha.testing import ScriptedLLMServer

SUBCALL = "You follow one instruction"
TARGETS = {"second_run_subcall_requests": ("<=", 0), "third_run_hit_rate": (">=", 1.0)}
MAP = (
    "```repl\nlines = context[0].splitlines()\n"
    "chunks = ['\\n'.join(lines[i:i + 25]) for i in range(0, len(lines), 25)]\n"
    "labels = llm_query_batched('Label each record: complaint, praise, question or request. "
    "Answer with one label a line.', chunks)\nprint(len(chunks), 'chunks labelled')\n```"
)


def script(messages: list[dict[str, Any]], model: str) -> str:
    if str(messages[0]["content"]).startswith(SUBCALL):
        return "complaint"  # the scripted sub-model's labels; what they say does not matter here
    step = sum(1 for m in messages if m["role"] == "assistant")
    return MAP if step == 0 else "FINAL(labelled)"


def run(server: ScriptedLLMServer, sh: Shesha, question: str) -> dict[str, Any]:
    before = sum(1 for r in server.requests if str(r.messages[0]["content"]).startswith(SUBCALL))
    started = time.perf_counter()
    result = sh.get_project("records").query(question)
    wall = time.perf_counter() - started
    after = sum(1 for r in server.requests if str(r.messages[0]["content"]).startswith(SUBCALL))
    return {
        "wall_s": round(wall, 2),
        "subcalls": result.subcalls,
        "requests": after - before,
        "cached": result.usage.cached_subcalls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    _, tasks = generate.oolong(5, 1, [16_384])
    with tempfile.TemporaryDirectory() as tmp, ScriptedLLMServer(script, latency_s=0.2) as server:
        path = Path(tmp) / "records.txt"
        path.write_text(tasks[0].documents[0][1])
        with Shesha(
            home=str(Path(tmp) / "home"), model="openai/scripted", api_base=server.api_base,
            api_key="t", temperature=0, pool_size=1,
        ) as sh:  # fmt: skip
            sh.project("records").add([path])
            warm = InMemoryCorpus([("w.txt", "warm-up")])  # the pool and LiteLLM, started
            asyncio.run(sh.aquery_corpus("warm up", warm))
            first = run(server, sh, "How many instances are complaints?")
            second = run(server, sh, "How many instances are complaints?")
            third = run(server, sh, "Which label is the most frequent?")
    results = {
        "subcalls_per_run": first["subcalls"],
        "first_run_wall_s": first["wall_s"],
        "first_run_subcall_requests": first["requests"],
        "second_run_wall_s": second["wall_s"],
        "second_run_subcall_requests": second["requests"],
        "third_run_wall_s": third["wall_s"],
        "third_run_hit_rate": round(third["cached"] / max(1, third["subcalls"]), 3),
        "wall_saved_s": round(first["wall_s"] - second["wall_s"], 2),
    }
    emit(results, TARGETS, args.json)


if __name__ == "__main__":
    main()
