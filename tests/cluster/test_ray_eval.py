"""`shesha eval run --ray` on a real Ray cluster of three nodes (a head and two workers),
started here on loopback: real bubblewrap sandboxes in each worker, the model a scripted
OpenAI-compatible server in this process that every worker reaches over HTTP.

Ray is the `ray` extra; the dev extra installs it, so CI runs these for real."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shesha import Shesha
from shesha.bench import generate
from shesha.bench.ray_executor import RayExecutor
from shesha.bench.runner import EvalRunner, ResultRow
from shesha.bench.tasks import EvalTask, write_task_set
from shesha.errors import ConfigError
from shesha.testing import FunctionModel, ScriptedLLMServer
from tests.conftest import IN_CI
from tests.oracle import oracle

try:
    import ray
    from ray.cluster_utils import Cluster
except ImportError:  # without the extra: skipped here, a failure in CI
    ray = None  # type: ignore[assignment]

LOOPBACK = "127.0.0.1"
TIMINGS = ("latency_s", "trace_path")
pytestmark = [pytest.mark.ray, pytest.mark.bwrap]
MODEL = "openai/gpt-4o-mini"  # a price LiteLLM knows, so the cost cap has costs to add


@dataclass
class LoopbackCluster:
    """The test's Ray cluster, and how to add a node like its others."""

    ray: Any
    node_args: dict[str, Any]
    workers: list[Any]

    @property
    def address(self) -> str:
        return str(self.ray.address)


@pytest.fixture(scope="module")
def cluster(bwrap_ready: None) -> Iterator[LoopbackCluster]:
    if ray is None:
        if IN_CI:
            pytest.fail("CI=true, so the Ray tests must run, but ray is not installed")
        pytest.skip("ray is not installed: pip install 'shesha[ray]'")
    node: dict[str, Any] = {
        "num_cpus": 1, "node_ip_address": LOOPBACK, "object_store_memory": 80 * 2**20,
    }  # fmt: skip
    c = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    workers = [c.add_node(**node) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, _node_ip_address=LOOPBACK, log_to_driver=False)
    yield LoopbackCluster(c, node, workers)
    ray.shutdown()
    c.shutdown()  # type: ignore[no-untyped-call]


@pytest.fixture
def task_set(tmp_path: Path) -> tuple[Path, list[EvalTask]]:
    spec, tasks = generate.sniah(11, 6, [1024, 2048])  # 12 tasks
    write_task_set(tmp_path / "tasks", spec, tasks)
    return tmp_path / "tasks", tasks


@pytest.fixture
def oracle_server(task_set: tuple[Path, list[EvalTask]]) -> Iterator[ScriptedLLMServer]:
    """The scripted model, answering each task of the set from its gold."""
    with ScriptedLLMServer(oracle(task_set[1], lambda t: t.gold)) as server:
        yield server


def settings(tmp_path: Path, server: ScriptedLLMServer, name: str) -> dict[str, Any]:
    return {
        "home": str(tmp_path / name),
        "model": MODEL,
        "api_base": server.api_base,
        "api_key": "t",
        "sandbox": "bwrap",
    }


def rows_without_timings(out: Path) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in json.loads(line).items() if k not in TIMINGS}
        for line in (out / "results.jsonl").read_text().splitlines()
    ]


def summary_without_timings(out: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    for group in summary["by_length"] + summary["by_type"]:
        for k in [k for k in group if "latency" in k]:
            del group[k]
    return summary


def test_a_ray_run_writes_what_a_local_run_writes_and_spreads_over_the_nodes(
    cluster: LoopbackCluster, task_set: tuple[Path, list[EvalTask]], tmp_path: Path
) -> None:
    folder, tasks = task_set
    with ScriptedLLMServer(oracle(tasks, lambda t: t.gold), latency_s=0.05) as server:
        with Shesha(**settings(tmp_path, server, "local")) as sh:
            asyncio.run(EvalRunner(sh, folder, tmp_path / "local").run())
        with Shesha(**settings(tmp_path, server, "ray")) as sh:
            runner = EvalRunner(sh, folder, tmp_path / "ray")
            rows = asyncio.run(runner.run(executor=RayExecutor(runner)))
    assert [r.task_id for r in rows] == [t.id for t in tasks]
    assert [r.score for r in rows] == [1.0] * 12
    assert rows_without_timings(tmp_path / "ray") == rows_without_timings(tmp_path / "local")
    assert summary_without_timings(tmp_path / "ray") == summary_without_timings(tmp_path / "local")
    for row in rows:  # each trace written by the driver where a local run writes it
        trace = Path(str(row.trace_path))
        assert trace.parent == tmp_path / "ray" / "traces"
        assert trace.is_file()
    report = json.loads((tmp_path / "ray" / "executor.json").read_text())
    assert report["executor"] == "ray"
    assert report["workers"] == 3  # one per CPU of the cluster
    nodes = report["nodes"]
    assert len(nodes) == 3, nodes  # every node ran tasks
    assert sum(n["tasks"] for n in nodes.values()) == 12
    assert all(n["workers"] == 1 for n in nodes.values())
    assert report["lost"] == []
    # Each task's documents went to the one node that ran it, not to every node.
    assert sum(n["task_bytes_received"] for n in nodes.values()) == report["task_set_bytes"]


def test_a_rate_limit_holds_over_every_worker_of_the_cluster(
    cluster: LoopbackCluster, task_set: tuple[Path, list[EvalTask]], tmp_path: Path
) -> None:
    """calls_per_minute is kept in one place: the endpoint sees one call every 0.3 s at
    most, from three workers on three nodes that would otherwise call at once."""
    folder, tasks = task_set
    answer = oracle(tasks, lambda t: t.gold)
    arrived: list[float] = []

    def timed(messages: list[dict[str, Any]], model: str) -> str:
        arrived.append(time.monotonic())
        return answer(messages, model)

    server = ScriptedLLMServer(timed, latency_s=0.05)
    with server, Shesha(**settings(tmp_path, server, "ray"), calls_per_minute=200) as sh:
        runner = EvalRunner(sh, folder, tmp_path / "out")
        rows = asyncio.run(runner.run(executor=RayExecutor(runner)))
    assert [r.score for r in rows] == [1.0] * 12
    report = json.loads((tmp_path / "out" / "executor.json").read_text())
    assert len(report["nodes"]) >= 2, report  # the calls came from several machines
    arrived.sort()
    assert len(arrived) == 24
    # A call may arrive late by its client's own time after its turn (a worker's first
    # call most: its client starts), but lateness does not add up: any five calls in a
    # row span four turns of 0.3 s, less one late arrival's slack.
    spans = [b - a for a, b in zip(arrived, arrived[4:], strict=False)]
    assert min(spans) >= 4 * 0.3 - 0.45, spans
    assert arrived[-1] - arrived[0] >= 23 * 0.3 - 0.45  # never faster than the rate overall


def test_a_worker_node_killed_mid_run_has_its_task_run_again_elsewhere(
    cluster: LoopbackCluster, task_set: tuple[Path, list[EvalTask]], tmp_path: Path
) -> None:
    folder, tasks = task_set
    doomed = cluster.ray.add_node(**cluster.node_args)  # a fourth node, to kill
    cluster.ray.wait_for_nodes()
    killed = False

    def kill_after_three(row: ResultRow) -> None:
        nonlocal killed
        seen.append(row)
        if len(seen) == 3 and not killed:
            killed = True
            cluster.ray.remove_node(doomed, allow_graceful=False)

    seen: list[ResultRow] = []
    server = ScriptedLLMServer(oracle(tasks, lambda t: t.gold), latency_s=0.4)
    with server, Shesha(**settings(tmp_path, server, "ray")) as sh:
        runner = EvalRunner(sh, folder, tmp_path / "out", on_row=kill_after_three)
        rows = asyncio.run(runner.run(executor=RayExecutor(runner, workers=4)))
    assert killed
    assert [r.score for r in rows] == [1.0] * 12  # the run completed, every task right
    report = json.loads((tmp_path / "out" / "executor.json").read_text())
    assert report["lost"], report  # the doomed node's task was lost ...
    again = {entry["task_id"] for entry in report["lost"]}
    retried = {r.task_id: r.attempts for r in rows if r.task_id in again}
    assert retried
    assert all(n == 2 for n in retried.values())  # ... and run once more
    survivors = {n: v for n, v in report["nodes"].items() if n != doomed.node_id}
    assert (
        sum(v["tasks"] for v in survivors.values())
        >= 12 - report["nodes"].get(doomed.node_id, {"tasks": 0})["tasks"]
    )
    assert len(report["nodes"]) >= 3  # the work went on on the other nodes
    assert len(rows_without_timings(tmp_path / "out")) == 12


def test_the_cost_cap_holds_across_the_cluster(
    cluster: LoopbackCluster,
    task_set: tuple[Path, list[EvalTask]],
    oracle_server: ScriptedLLMServer,
    tmp_path: Path,
) -> None:
    folder, _ = task_set
    with Shesha(**settings(tmp_path, oracle_server, "ray")) as sh:
        runner = EvalRunner(sh, folder, tmp_path / "out")
        one = asyncio.run(runner.run(limit=1))[0].cost_usd
        assert one is not None
        assert one > 0
        cap = one * 4.5  # reached during the fifth task
        runner = EvalRunner(sh, folder, tmp_path / "out")
        rows = asyncio.run(runner.run(executor=RayExecutor(runner), max_cost_usd=cap))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["stopped"] == "max_cost_usd"
    workers = json.loads((tmp_path / "out" / "executor.json").read_text())["workers"]
    # No task started once the cap was spent: only the tasks in flight when it was crossed
    # (at most one per other worker) finished past it.
    assert 5 <= len(rows) <= 5 + workers - 1, (cap, workers, [r.cost_usd for r in rows])
    assert sum(r.cost_usd or 0 for r in rows[: len(rows) - workers]) < cap


def quiet(server: ScriptedLLMServer, *, seconds: float, within: float) -> int:
    """The endpoint's request count once no request has arrived for ``seconds``."""
    deadline = time.monotonic() + within
    count, since = len(server.requests), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if len(server.requests) != count:
            count, since = len(server.requests), time.monotonic()
        elif time.monotonic() - since >= seconds:
            return count
    raise AssertionError(f"the endpoint was still asked {within:g} s after the driver died")


def test_driver_killed_then_resume_runs_only_the_rest(
    cluster: LoopbackCluster, task_set: tuple[Path, list[EvalTask]], tmp_path: Path
) -> None:
    folder, tasks = task_set
    out = tmp_path / "out"
    with ScriptedLLMServer(oracle(tasks, lambda t: t.gold), latency_s=0.3) as server:
        env = {
            **os.environ,
            "SHESHA_HOME": str(tmp_path / "home"),
            "SHESHA_SANDBOX": "bwrap",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }
        shesha = str(Path(sys.executable).parent / "shesha")
        command = [
            shesha, "eval", "run", str(folder), "--model", MODEL,
            "--api-base", server.api_base, "--api-key", "t", "--out", str(out),
            "--ray", "--ray-address", cluster.address,
        ]  # fmt: skip
        driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        results = out / "results.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and driver.poll() is None:
            if results.is_file() and len(results.read_text().splitlines()) >= 3:
                break
            time.sleep(0.1)
        assert driver.poll() is None, driver.communicate()
        driver.send_signal(signal.SIGKILL)
        driver.communicate()
        kept = [
            json.loads(line)["task_id"] for line in results.read_text().splitlines() if line.strip()
        ]
        assert 3 <= len(kept) < 12
        # The killed driver's workers live on until Ray reaps them, and a task they were
        # running may still ask the model: count from when the endpoint has gone quiet.
        asked = quiet(server, seconds=2.0, within=60.0)
        done = subprocess.run(
            [*command, "--resume"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["task_id"] for r in rows] == [t.id for t in tasks]
    assert all(r["score"] == 1.0 for r in rows)
    # Only the tasks not written before the kill ran again: two model calls each.
    assert len(server.requests) - asked == 2 * (12 - len(set(kept)))


def test_a_worker_no_node_has_room_for_is_an_error_not_a_hang(
    cluster: LoopbackCluster,
    task_set: tuple[Path, list[EvalTask]],
    oracle_server: ScriptedLLMServer,
    tmp_path: Path,
) -> None:
    folder, _ = task_set
    with Shesha(**settings(tmp_path, oracle_server, "ray")) as sh:
        runner = EvalRunner(sh, folder, tmp_path / "out")
        executor = RayExecutor(
            runner, resources={"shesha_local_model": 1}, placement_timeout_s=3
        )  # no node of this cluster has declared that resource
        with pytest.raises(ConfigError, match="No node of the Ray cluster had room"):
            asyncio.run(runner.run(executor=executor))
    assert oracle_server.requests == []


def test_ray_refuses_objects_it_cannot_send_to_a_worker(
    cluster: LoopbackCluster, task_set: tuple[Path, list[EvalTask]], tmp_path: Path
) -> None:
    folder, tasks = task_set
    model = FunctionModel(oracle(tasks, lambda t: t.gold), name="oracle")
    sh = Shesha(home=str(tmp_path / "home"), llm=model, sandbox="bwrap")
    with sh, pytest.raises(ConfigError, match="given llm objects"):
        RayExecutor(EvalRunner(sh, folder, tmp_path / "out"))


def test_without_ray_installed_the_flag_says_how_to_install_it(
    task_set: tuple[Path, list[EvalTask]], tmp_path: Path
) -> None:
    folder, _ = task_set
    code = (
        "import sys; sys.modules['ray'] = None\n"  # as if the extra were not installed
        "from shesha.cli import main; sys.argv = ['shesha', *sys.argv[1:]]; main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "eval", "run", str(folder), "--model", MODEL,
         "--api-base", "http://127.0.0.1:9/v1", "--api-key", "t", "--ray"],
        env={**os.environ, "SHESHA_HOME": str(tmp_path / "home")},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "--ray needs Ray" in done.stderr
    assert "shesha[ray]" in done.stderr
