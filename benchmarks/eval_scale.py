"""Evaluation throughput against the number of workers (`shesha eval run --workers N`).

    python benchmarks/eval_scale.py            # 12 S-NIAH tasks, 1, 2 and 4 workers, Ray
    python benchmarks/eval_scale.py --quick    # 4 tasks, 1 and 2 workers, Ray: what CI runs
    python benchmarks/eval_scale.py --json     # one JSON object
    python benchmarks/eval_scale.py --no-ray   # without the Ray cluster

The model is a scripted OpenAI-compatible server on 127.0.0.1 that answers each task from
its gold after 200 ms (every call), reached through LiteLLM as a provider would be; the
sandboxes are the real pool (Docker, else bubblewrap), one per worker. Each task is two
root calls and one code run. The figures: tasks per second at each worker count, the
speed-up over one worker, and the seconds each task costs beyond its model calls.

With Ray installed (the ``ray`` extra), the same tasks then run on a 3-node Ray cluster
this script starts on loopback (a head and two workers, one CPU each, bubblewrap
sandboxes): with one Ray worker (what Ray adds per task over the local executor) and with
three (one per node); what asking the cluster's keeper of ``calls_per_minute`` for a
turn adds to a model call; and the bytes of the task set, against those the busiest
node received (each task goes to the node that runs it).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from report import emit

from shesha import Shesha
from shesha.bench import generate
from shesha.bench.ray_executor import ClusterPace, PaceKeeper, RayExecutor
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


def measure_ray(folder: Path, out: Path, server: ScriptedLLMServer) -> dict[str, Any]:
    """Seconds with 1 and 3 Ray workers on a 3-node loopback cluster, and its report."""
    # Ray reads these at import: every Ray process on loopback, the address kept as given.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray  # noqa: PLC0415  the ray extra, after the variables above
    from ray.cluster_utils import Cluster  # noqa: PLC0415

    node: dict[str, Any] = {
        "num_cpus": 1,
        "node_ip_address": "127.0.0.1",
        "object_store_memory": 80 * 2**20,
    }
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    figures: dict[str, Any] = {}
    try:
        for _ in range(2):
            cluster.add_node(**node)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, _node_ip_address="127.0.0.1", log_to_driver=False)
        settings: dict[str, Any] = {
            "model": "openai/scripted", "api_base": server.api_base, "api_key": "t",
            "temperature": 0, "sandbox": "bwrap",
        }  # fmt: skip
        for label, workers in (("1", 1), ("3", 3)):
            with Shesha(home=str(out / f"home{label}"), **settings) as sh:
                # Each run starts its workers (a Shesha and a sandbox each): one task a
                # worker measures that start; the whole set minus it, the steady rate.
                runner = EvalRunner(sh, folder, out / f"start{label}")
                started = time.perf_counter()
                asyncio.run(
                    runner.run(executor=RayExecutor(runner, workers=workers), limit=workers)
                )
                figures[f"start_{label}"] = time.perf_counter() - started
                runner = EvalRunner(sh, folder, out / f"ray{label}")
                started = time.perf_counter()
                asyncio.run(runner.run(executor=RayExecutor(runner, workers=workers)))
                figures[f"ray_{label}"] = time.perf_counter() - started
            report = json.loads((out / f"ray{label}" / "executor.json").read_text())
            figures[f"report_{label}"] = report
        figures["pace_s_per_call"] = asyncio.run(pace_cost(ray))
    finally:
        ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]
    return figures


async def pace_cost(ray: Any, calls: int = 300) -> float:
    """Seconds a model call spends asking the cluster's keeper of ``calls_per_minute``
    for its turn, at a rate too high to wait for (the keeper on another process, as on
    the driver's node)."""
    keeper = ray.remote(num_cpus=0)(PaceKeeper).remote(6e7)
    pace = ClusterPace(keeper)
    await pace.wait("warm-up")
    started = time.perf_counter()
    for _ in range(calls):
        await pace.wait("openai/scripted")
    seconds = (time.perf_counter() - started) / calls
    ray.kill(keeper)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="4 tasks, 1 and 2 workers")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray cluster")
    args = parser.parse_args()
    with_ray = not args.no_ray and importlib.util.find_spec("ray") is not None
    n, counts = (2, [1, 2]) if args.quick else (6, [1, 2, 4])
    spec, tasks = generate.sniah(7, n, [2048, 4096])
    results: dict[str, Any] = {"tasks": len(tasks)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "tasks"
        write_task_set(folder, spec, tasks)
        script = oracle(tasks, lambda t: t.gold)
        with ScriptedLLMServer(script, latency_s=LATENCY_S) as server:
            seconds = {w: measure(folder, Path(tmp) / f"w{w}", server, w) for w in counts}
            cluster = measure_ray(folder, Path(tmp) / "ray", server) if with_ray else None
    model_s = len(tasks) * CALLS_PER_TASK * LATENCY_S
    for w, s in seconds.items():
        results[f"tasks_per_s_{w}_workers"] = round(len(tasks) / s, 2)
    for w, s in seconds.items():
        if w > 1:
            results[f"speedup_{w}_workers"] = round(seconds[1] / s, 2)
    results["overhead_per_task_s"] = round((seconds[1] - model_s) / len(tasks), 3)
    if cluster is not None:
        steady: dict[str, float] = {}  # the whole run less the one that started workers
        for label, w in (("1", 1), ("3", 3)):
            rate = (len(tasks) - w) / (cluster[f"ray_{label}"] - cluster[f"start_{label}"])
            steady[label] = rate
        results["ray_tasks_per_s_1_workers"] = round(steady["1"], 2)
        results["ray_tasks_per_s_3_workers"] = round(steady["3"], 2)
        results["ray_speedup_3_workers_3_nodes"] = round(
            results["ray_tasks_per_s_3_workers"] / results["ray_tasks_per_s_1_workers"], 2
        )
        results["ray_overhead_per_task_s"] = round(
            1 / results["ray_tasks_per_s_1_workers"] - seconds[1] / len(tasks), 3
        )
        results["ray_run_start_s_3_workers"] = round(
            cluster["start_3"] - seconds[1] / len(tasks), 2
        )
        results["ray_rate_limit_ms_per_call"] = round(cluster["pace_s_per_call"] * 1000, 2)
        report = cluster["report_3"]
        received = [n["task_bytes_received"] for n in report["nodes"].values()]
        results["ray_nodes_used"] = len(report["nodes"])
        results["ray_task_set_bytes"] = report["task_set_bytes"]
        results["ray_task_bytes_received_max_node"] = max(received)
    emit(results, TARGETS, args.json)


if __name__ == "__main__":
    main()
