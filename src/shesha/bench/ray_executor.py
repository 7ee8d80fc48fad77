"""An evaluation's tasks on a Ray cluster (`shesha eval run --ray`).

Each worker is a Ray actor that builds its own `Shesha` once, from the driver's
settings: its own warm sandbox pool (one sandbox) and model clients, kept for every task
it runs. The task set goes into Ray's object store once; a node pulls it once, and every
worker on that node reads that copy. A worker returns its row and its trace; the driver
writes both, as they come, exactly where a local run writes them, so results.jsonl,
summary.json and the traces do not depend on what ran them.

A worker that dies (its process, or its node) loses its task: the driver records the
loss, starts a new worker wherever the cluster has room, and runs the task again, at
most ``retries`` more times. The cost cap is the driver's: it starts no task once the
finished ones have cost ``max_cost_usd`` (`EvalRunner.run`).

Ray is imported lazily (the ``ray`` extra): a run without ``--ray`` never needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import pickle
import shutil
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from shesha.api import Shesha
from shesha.bench.runner import (
    EvalRunner,
    MayStart,
    Method,
    Record,
    Report,
    ResultRow,
    TaskRunner,
)
from shesha.bench.tasks import EvalTask
from shesha.errors import ConfigError
from shesha.storage.atomic import atomic_write

INSTALL_HINT = "pip install 'shesha[ray]'  (or run without --ray: --workers N on this machine)"
DEFAULT_RETRIES = 2
LOOPBACK = "127.0.0.1"


def import_ray() -> ModuleType:
    """Ray, or a ConfigError that says how to install it."""
    try:
        return importlib.import_module("ray")
    except ImportError as e:
        raise ConfigError("--ray needs Ray, which is not installed.", hint=INSTALL_HINT) from e


@dataclass(frozen=True)
class WorkerJob:
    """What a worker needs to run tasks as the driver would: sent once per worker."""

    settings: dict[str, Any]
    method: Method
    window_tokens: int
    fingerprint: str


class EvalWorker:
    """One Ray actor: a Shesha of its own, built once, running one task at a time."""

    def __init__(self, job: WorkerJob, tasks: list[EvalTask]) -> None:
        ray = import_ray()
        self.scratch = Path(tempfile.mkdtemp(prefix="shesha-eval-worker-"))
        settings = {**job.settings, "home": str(self.scratch / "home"), "pool_size": 1}
        self.sh = Shesha(**settings)
        self.runner = TaskRunner(
            self.sh,
            method=job.method,
            window_tokens=job.window_tokens,
            fingerprint=job.fingerprint,
            trace_dir=self.scratch / "traces",
        )
        self.tasks = {t.id: t for t in tasks}
        self.node = str(ray.get_runtime_context().get_node_id())

    def run(self, task_id: str) -> tuple[str, str, str | None, bytes | None]:
        """(the row as JSON, this node, the trace's file name, the trace's bytes)."""
        row = asyncio.run(self.runner.run(self.tasks[task_id]))
        name: str | None = None
        data: bytes | None = None
        if row.trace_path is not None:
            trace = Path(row.trace_path)
            name, data = trace.name, trace.read_bytes()
            trace.unlink()
        return row.model_dump_json(), self.node, name, data

    def close(self) -> None:
        self.sh.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


@dataclass
class Placement:
    """What one node did: the report's figures (executor.json)."""

    tasks: int = 0
    workers: set[int] = field(default_factory=set)


class RayExecutor:
    """Runs an `EvalRunner`'s tasks on Ray workers (see the module's docstring)."""

    def __init__(
        self,
        runner: EvalRunner,
        *,
        address: str | None = None,
        workers: int | None = None,
        retries: int = DEFAULT_RETRIES,
        cpus_per_worker: float = 1.0,
        resources: dict[str, float] | None = None,
        init_options: dict[str, Any] | None = None,
    ) -> None:
        if runner.sh.injected_parts():
            raise ConfigError(
                "A Ray worker builds its model and sandboxes from settings; this Shesha "
                f"was given {' and '.join(runner.sh.injected_parts())} objects instead.",
                hint="Configure them as settings (model, api_base, sandbox), or run without --ray.",
            )
        if workers is not None and workers < 1:
            raise ConfigError(f"workers must be at least 1, not {workers}.", hint="--workers 1")
        if retries < 0:
            raise ConfigError(f"retries must be 0 or more, not {retries}.")
        self.ray = import_ray()
        self.job = WorkerJob(
            settings=runner.sh.settings.model_dump(exclude_defaults=True, exclude={"home"}),
            method=runner.method,
            window_tokens=runner.window_tokens,
            fingerprint=runner.fingerprint,
        )
        self.trace_dir = runner.out_dir / "traces"
        self.address = address
        self.workers = workers
        self.retries = retries
        self.cpus_per_worker = cpus_per_worker
        self.resources = resources or {}
        self.init_options = init_options or {}

    async def run(self, tasks: list[EvalTask], record: Record, may_start: MayStart) -> Report:
        ray = self.ray
        connected_here = not ray.is_initialized()
        if connected_here:
            options = dict(self.init_options)
            if self.address is None and not os.environ.get("RAY_ADDRESS"):
                # A cluster of this machine alone, started here: on loopback, not on the
                # machine's network address.
                options.setdefault("_node_ip_address", LOOPBACK)
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False, **options)
        try:
            return await self._run(tasks, record, may_start, self._slots(len(tasks)))
        finally:
            if connected_here:
                ray.shutdown()

    def _slots(self, tasks: int) -> int:
        if self.workers is not None:
            return min(self.workers, max(tasks, 1))
        cpus = float(self.ray.cluster_resources().get("CPU", 1.0))
        return max(1, min(int(cpus // self.cpus_per_worker), tasks))

    async def _received(
        self, row_json: str, name: str | None, data: bytes | None, attempt: int
    ) -> ResultRow:
        """A worker's row, its trace written where a local run writes it."""
        row = ResultRow.model_validate_json(row_json)
        if name is not None and data is not None:
            path = self.trace_dir / name
            await asyncio.to_thread(_write_trace, path, data)
            row.trace_path = str(path)
        row.attempts = attempt
        return row

    async def _run(
        self, tasks: list[EvalTask], record: Record, may_start: MayStart, slots: int
    ) -> Report:
        ray = self.ray
        worker_class = ray.remote(
            num_cpus=self.cpus_per_worker,
            resources=self.resources,
            max_restarts=0,  # a lost worker is replaced by the driver, which records it
            max_concurrency=1,
            scheduling_strategy="SPREAD",
        )(EvalWorker)
        shared = ray.put(tasks)
        task_set_bytes = len(pickle.dumps(tasks))
        queue: deque[tuple[EvalTask, int]] = deque((t, 1) for t in tasks)
        nodes: dict[str, Placement] = {}
        lost: list[dict[str, Any]] = []
        actors: list[Any] = []
        lost_errors = (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError)

        def start_worker() -> Any:
            actor = worker_class.remote(self.job, shared)
            actors.append(actor)
            return actor

        async def retire(actor: Any) -> None:
            """Close a worker and free its place on the cluster (a lost worker's task
            may be waiting for that place)."""
            with contextlib.suppress(*lost_errors):  # a dead worker has nothing to close
                await actor.close.remote()
            ray.kill(actor)

        async def slot() -> None:
            actor: Any = None
            number = -1
            try:
                while queue and may_start():
                    if actor is None:
                        actor = start_worker()  # wherever the cluster has room now
                        number = len(actors) - 1
                    task, attempt = queue.popleft()
                    try:
                        row_json, node, name, data = await actor.run.remote(task.id)
                    except lost_errors as e:
                        lost.append(
                            {"task_id": task.id, "attempt": attempt, "reason": _first_line(e)}
                        )
                        if attempt <= self.retries:
                            queue.append((task, attempt + 1))
                        else:
                            record(_lost_row(task, self.job, attempt, _first_line(e)))
                        actor = None
                        continue
                    row = await self._received(row_json, name, data, attempt)
                    placed = nodes.setdefault(node, Placement())
                    placed.tasks += 1
                    placed.workers.add(number)
                    record(row)
            finally:
                if actor is not None:
                    await retire(actor)

        try:
            await asyncio.gather(*(slot() for _ in range(slots)))
        finally:
            for actor in actors:  # those an interruption left (killing twice is harmless)
                ray.kill(actor)
        return _report(slots, nodes, task_set_bytes, lost)


def _report(
    workers: int, nodes: dict[str, Placement], task_set_bytes: int, lost: list[dict[str, Any]]
) -> dict[str, Any]:
    """executor.json: how many workers, what each node ran, and every lost task."""
    return {
        "executor": "ray",
        "workers": workers,
        "nodes": {
            node: {
                "tasks": p.tasks,
                "workers": len(p.workers),
                "task_set_bytes_received": task_set_bytes,
            }
            for node, p in sorted(nodes.items())
        },
        "task_set_bytes": task_set_bytes,
        "lost": lost,
    }


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def _write_trace(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)


def _lost_row(task: EvalTask, job: WorkerJob, attempts: int, reason: str) -> ResultRow:
    """A task whose every worker died: a row that says so, scored as no answer."""
    return ResultRow(
        task_id=task.id,
        kind=task.kind,
        length_tokens=task.length_tokens,
        method=job.method,
        score=0.0,
        answer=None,
        gold=task.gold,
        status="error",
        error=f"the worker was lost {attempts} times: {reason}",
        prompt_tokens=0,
        completion_tokens=0,
        cost_usd=None,
        latency_s=0.0,
        iterations=0,
        subcalls=0,
        fingerprint=job.fingerprint,
        group=task.meta.get("type"),
        attempts=attempts,
    )
