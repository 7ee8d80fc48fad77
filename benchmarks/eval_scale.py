"""Evaluation throughput against the number of workers (`shesha eval run --workers N`).

    python benchmarks/eval_scale.py            # 12 S-NIAH tasks, 1, 2 and 4 workers
    python benchmarks/eval_scale.py --quick    # 4 tasks, 1 and 2 workers: what CI runs
    python benchmarks/eval_scale.py --json     # one JSON object

The model is a scripted OpenAI-compatible server on 127.0.0.1 that answers each task from
its gold after 200 ms (every call), reached through LiteLLM as a provider would be; the
sandboxes are the real pool (Docker, else bubblewrap), one per worker. Each task is two
root calls and one code run. The figures: tasks per second at each worker count, the
speed-up over one worker, and the seconds each task costs beyond its model calls.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from report import emit

from shesha import Shesha
from shesha.bench import generate
from shesha.bench.runner import EvalRunner
from shesha.bench.tasks import write_task_set
from shesha.sandbox import InMemoryCorpus
from shesha.testing import ScriptedLLMServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, for tests.oracle
from tests.oracle import oracle  # the model the eval tests answer with

LATENCY_S = 0.2
CALLS_PER_TASK = 2
TARGETS = {"speedup_2_workers": (">=", 1.6)}


def measure(folder: Path, out: Path, server: ScriptedLLMServer, workers: int) -> float:
    """Seconds for the whole task set with ``workers`` at once (the pool warm)."""
    with Shesha(
        home=str(out / "home"), model="openai/scripted", api_base=server.api_base,
        api_key="t", temperature=0, pool_size=workers,
    ) as sh:  # fmt: skip
        warm = InMemoryCorpus([("w.txt", "warm-up")])
        asyncio.run(sh.aquery_corpus("warm up", warm))  # the pool and LiteLLM, started
        started = time.perf_counter()
        asyncio.run(EvalRunner(sh, folder, out / "run").run(workers=workers))
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="4 tasks, 1 and 2 workers")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    n, counts = (2, [1, 2]) if args.quick else (6, [1, 2, 4])
    spec, tasks = generate.sniah(7, n, [2048, 4096])
    results: dict[str, Any] = {"tasks": len(tasks)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "tasks"
        write_task_set(folder, spec, tasks)
        script = oracle(tasks, lambda t: t.gold)
        with ScriptedLLMServer(script, latency_s=LATENCY_S) as server:
            seconds = {w: measure(folder, Path(tmp) / f"w{w}", server, w) for w in counts}
    model_s = len(tasks) * CALLS_PER_TASK * LATENCY_S
    for w, s in seconds.items():
        results[f"tasks_per_s_{w}_workers"] = round(len(tasks) / s, 2)
    for w, s in seconds.items():
        if w > 1:
            results[f"speedup_{w}_workers"] = round(seconds[1] / s, 2)
    results["overhead_per_task_s"] = round((seconds[1] - model_s) / len(tasks), 3)
    emit(results, TARGETS, args.json)


if __name__ == "__main__":
    main()
