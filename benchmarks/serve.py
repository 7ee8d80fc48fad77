"""`shesha serve` benchmark: what a CLI call costs with and without a warm server (the
light remote path, ``shesha.remote_ask``, and the full CLI, reached with ``-v``), what a
re-query sends, and how a server shares 3 containers among 12 queries.

    python benchmarks/serve.py            # a readable table
    python benchmarks/serve.py --json     # one JSON object
    python benchmarks/serve.py --cold-only --pythonpath OLD/src   # another checkout's cold CLI

Real processes throughout: `shesha serve --background` with real Docker sandboxes, the
`shesha` command as a user types it, and scripted models (OpenAI-compatible servers on
127.0.0.1, reached through LiteLLM). "Overhead" is a command's wall time minus the time
its model calls took.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from report import emit

from shesha.rlm import read_trace
from shesha.rlm.events import LLMResponse
from shesha.testing import ScriptedLLMServer

SHESHA = str(Path(sys.executable).with_name("shesha"))
TARGETS = {
    "cli_overhead_s": ("<=", 0.3),
    "requery_bytes_sent": ("<=", 0),
}


def script(messages: list[dict[str, Any]], model: str) -> str:
    if not any(m["role"] == "assistant" for m in messages):
        return "```repl\nprint(len(context))\n```"
    return "FINAL(done)"


def model_seconds(trace_path: str) -> float:
    return sum(
        (e.duration_ms or 0) / 1000
        for e in read_trace(trace_path).events
        if isinstance(e, LLMResponse)
    )


class Bench:
    def __init__(self, root: Path, api_base: str, pythonpath: str | None) -> None:
        self.root = root
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SHESHA_")}
        self.env.update(
            {
                "SHESHA_HOME": str(root / "home"),
                "SHESHA_MODEL": "openai/scripted",
                "SHESHA_API_BASE": api_base,
                "SHESHA_API_KEY": "t",
                "SHESHA_POOL_SIZE": "3",
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            }
        )
        if pythonpath:
            self.env["PYTHONPATH"] = pythonpath

    def shesha(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [SHESHA, *args], env=self.env, cwd=self.root, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            sys.exit(f"shesha {' '.join(args)} failed:\n{done.stderr}")
        return done

    def ask_overhead(self, *extra: str, root: tuple[str, ...] = ()) -> float:
        """``root``: options before ``ask`` (``-v`` sends the command to the full CLI)."""
        started = time.perf_counter()
        done = self.shesha(
            *root, "ask", "How many documents?", "--project", "bench", "--json", *extra
        )
        wall = time.perf_counter() - started
        return wall - model_seconds(json.loads(done.stdout)["trace_path"])


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def cold(bench: Bench, rounds: int) -> float:
    """A CLI call that runs in-process: imports, pool start, corpus load, the query."""
    return median([bench.ask_overhead("--server", "off") for _ in range(rounds)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cold-only", action="store_true", help="only cold_cli_overhead_s")
    parser.add_argument("--pythonpath", help="run the CLI from this source tree (a before)")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        ScriptedLLMServer(script) as fast,
        ScriptedLLMServer(script, latency_s=0.2) as slow,
    ):
        root = Path(tmp)
        (root / "docs").mkdir()
        for i in range(20):
            (root / "docs" / f"d{i}.txt").write_text(f"Document {i}. " * 2000)
        bench = Bench(root, fast.api_base, args.pythonpath)
        bench.shesha("add", "bench", "docs")
        results["cold_cli_overhead_s"] = cold(bench, max(1, args.rounds // 2))
        if args.cold_only:
            emit(results, TARGETS, args.json)
            return
        bench.shesha(
            "serve", "--background", "--port", "0", "--allow-path", str(root),
            "--allow-endpoint-overrides",  # the slow queries name their own scripted model
        )  # fmt: skip
        try:
            results.update(warm(bench, slow.api_base, args.rounds))
        finally:
            bench.shesha("serve", "stop")
    emit(results, TARGETS, args.json)


def warm(bench: Bench, slow_api: str, rounds: int) -> dict[str, Any]:
    state = json.loads((bench.root / "home" / "server.json").read_text())
    http = httpx.Client(base_url=state["url"], timeout=120)
    bench.ask_overhead()  # the first query loads the corpus into a container
    sent = http.get("/api/status").json()["pool"]["document_bytes_sent"]
    overheads = [bench.ask_overhead() for _ in range(rounds)]
    full = [bench.ask_overhead(root=("-v",)) for _ in range(rounds)]
    requery = http.get("/api/status").json()["pool"]["document_bytes_sent"] - sent

    def one(i: int) -> dict[str, Any]:
        body = {"question": f"question {i}", "api_base": slow_api}
        run = http.post("/api/projects/bench/queries", json=body).json()
        with http.stream("GET", run["events_url"], timeout=None) as events:
            for _ in events.iter_lines():
                pass
        summary: dict[str, Any] = http.get(f"/api/queries/{run['id']}").json()
        return summary

    started = time.perf_counter()
    with ThreadPoolExecutor(12) as pool:
        runs = list(pool.map(one, range(12)))
    wall = time.perf_counter() - started
    assert all(r["state"] == "done" for r in runs), runs
    waits = [r["started"] - r["created"] for r in runs]
    return {
        "cli_overhead_s": median(overheads),
        "cli_overhead_s_max": round(max(overheads), 3),
        "full_cli_overhead_s": median(full),
        "requery_bytes_sent": requery,
        "concurrent_queries": 12,
        "containers": 3,
        "concurrent_wall_s": round(wall, 2),
        "queries_per_s": round(12 / wall, 2),
        "queue_wait_p50_s": percentile(waits, 0.5),
        "queue_wait_p95_s": percentile(waits, 0.95),
    }


if __name__ == "__main__":
    main()
