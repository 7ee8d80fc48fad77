"""An evaluation's tasks on a Ray cluster (`shesha eval run --ray`).

Each worker is a Ray actor that builds its own `Shesha` once, from the driver's
settings: its own warm sandbox pool (one sandbox) and model clients, kept for every task
it runs. Each task goes into Ray's object store once, as an object of its own, and
travels only to the node whose worker runs it: a node receives the documents of its own
tasks, once, and a worker holds one task at a time. A worker returns its row and its
trace; the driver
writes both, as they come, exactly where a local run writes them, so results.jsonl,
summary.json and the traces do not depend on what ran them.

A worker that dies (its process, or its node) loses its task: the driver records the
loss, starts a new worker wherever the cluster has room, and runs the task again, at
most ``retries`` more times. The cost cap is the driver's: it starts no task once the
finished ones have cost ``max_cost_usd`` (`EvalRunner.run`). A rate limit
(``calls_per_minute``) is kept in one place too: a keeper actor on the driver's node
holds the schedule, and every worker's model calls wait for their turn there.

Ray is imported lazily (the ``ray`` extra): a run without ``--ray`` never needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import os
import pickle
import shutil
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from shesha.api import Shesha
from shesha.bench.runner import (
    LOST,
    EvalRunner,
    MayStart,
    Method,
    Record,
    Report,
    ResultRow,
    TaskRunner,
)
from shesha.bench.tasks import EvalTask
from shesha.config import models_dir
from shesha.errors import ConfigError
from shesha.llm.pace import CallRate
from shesha.storage.atomic import atomic_write

INSTALL_HINT = "pip install 'shesha[ray]'  (or run without --ray: --workers N on this machine)"
DEFAULT_RETRIES = 2
LOOPBACK = "127.0.0.1"
PLACEMENT_POLL_S = 0.5
PLACEMENT_TIMEOUT_S = 300.0
"""How long a run waits for the cluster to place its first worker before it says so."""


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
    pace_keeper: Any = None
    """The run's `PaceKeeper` actor, when it has a rate limit."""


class PaceKeeper:
    """One Ray actor on the driver's node: the whole cluster's schedule of model calls."""

    def __init__(self, calls_per_minute: float) -> None:
        self.rate = CallRate(calls_per_minute)

    def reserve(self, model: str) -> float:
        """Book the next moment a call to ``model`` may go: the seconds until then."""
        return self.rate.reserve(model)


class ClusterPace:
    """A worker's `Pace`: each call waits for the turn the keeper gives it."""

    def __init__(self, keeper: Any) -> None:
        self.keeper = keeper

    async def wait(self, model: str) -> None:
        delay = await asyncio.wrap_future(self.keeper.reserve.remote(model).future())
        if delay > 0:
            await asyncio.sleep(delay)


class EvalWorker:
    """One Ray actor: a Shesha of its own, built once, running one task at a time."""

    def __init__(self, job: WorkerJob) -> None:
        ray = import_ray()
        self.scratch = Path(tempfile.mkdtemp(prefix="shesha-eval-worker-"))
        settings = {**job.settings, "home": str(self.scratch / "home"), "pool_size": 1}
        pace = ClusterPace(job.pace_keeper) if job.pace_keeper is not None else None
        self.sh = Shesha(pace=pace, **settings)
        self.runner = TaskRunner(
            self.sh,
            method=job.method,
            window_tokens=job.window_tokens,
            fingerprint=job.fingerprint,
            trace_dir=self.scratch / "traces",
        )
        self.node = str(ray.get_runtime_context().get_node_id())

    def run(self, task: EvalTask) -> tuple[str, str, str | None, bytes | None]:
        """(the row as JSON, this node, the trace's file name, the trace's bytes). Ray
        fetches ``task`` from the object store to this node before the call."""
        row = asyncio.run(self.runner.run(task))
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

    workers: set[int] = field(default_factory=set)
    task_ids: set[str] = field(default_factory=set)
    """The tasks it ran (each once: only a finished run is recorded); their objects are
    what the node received."""


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
        placement_timeout_s: float = PLACEMENT_TIMEOUT_S,
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
            settings=_worker_settings(runner.sh),
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
        self.placement_timeout_s = placement_timeout_s

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

    async def _placed(
        self, actor: Any, more: Callable[[], bool], live: list[bool]
    ) -> Literal["ready", "idle", "died"]:
        """Wait until a new worker is placed and built: "idle" when, by then, there is
        nothing left for it to do (so a worker the cluster has no room for yet never
        holds up the end of the run), "died" when its node died first. A worker that
        failed to start stops the run."""
        ready = asyncio.wrap_future(actor.__ray_ready__.remote().future())
        waited = 0.0
        while True:
            done, _ = await asyncio.wait({ready}, timeout=PLACEMENT_POLL_S)
            if done:
                try:
                    ready.result()
                except self.ray.exceptions.ActorDiedError as e:
                    if e.actor_init_failed:
                        raise ConfigError(
                            f"A Ray worker could not start: {_first_line(e)}",
                            hint="Every node needs shesha, its sandbox and the model's "
                            "endpoint; see docs/research.md.",
                        ) from e
                    return "died"
                return "ready"
            if not more():
                return "idle"
            waited += PLACEMENT_POLL_S
            if waited >= self.placement_timeout_s and not any(live):
                raise ConfigError(
                    f"No node of the Ray cluster had room for a worker in "
                    f"{self.placement_timeout_s:g} s ({self.cpus_per_worker:g} CPU"
                    f"{f', {self.resources}' if self.resources else ''} each).",
                    hint="Add a node, or lower what a worker asks for.",
                )

    async def _run(
        self, tasks: list[EvalTask], record: Record, may_start: MayStart, slots: int
    ) -> Report:
        ray = self.ray
        job = dataclasses.replace(self.job, pace_keeper=self._pace_keeper())
        run = _ClusterEvaluation(ray, self._worker_class(), job, record, tasks)

        def more() -> bool:
            return bool(run.queue) and may_start()

        async def slot() -> None:
            actor: Any = None
            number = -1
            try:
                while more():
                    if actor is None:
                        actor, number = run.start_worker()  # where the cluster has room now
                        placing = await self._placed(actor, more, run.live)
                        if placing == "died":
                            actor = None  # its node died before it started: another one
                            continue
                        if placing == "idle":
                            break
                        run.live[number] = True
                        if not more():  # all taken, or the cap spent, while it was placed
                            break
                    task, attempt = run.queue.popleft()
                    try:
                        row_json, node, name, data = await actor.run.remote(run.objects[task.id])
                    except ray.exceptions.RayTaskError as e:  # raised by shesha in the worker
                        raise e.as_instanceof_cause() from None
                    except run.lost_errors as e:
                        run.lose(task, attempt, e, self.retries)
                        run.live[number] = False
                        ray.kill(actor)  # it may live on, busy ("may or may not have run")
                        actor = None
                        continue
                    row = await self._received(row_json, name, data, attempt)
                    run.ran(node, number, task.id)
                    record(row)
            finally:
                if actor is not None:  # one never placed has nothing to close: only killed
                    await run.retire(actor, placed=run.live[number])

        try:
            async with asyncio.TaskGroup() as group:  # one slot's error stops the others
                for _ in range(slots):
                    group.create_task(slot())
        except BaseExceptionGroup as failed:  # the first slot's error, as it was raised
            raise failed.exceptions[0] from None
        finally:
            for actor in run.actors:  # those an interruption left (killing twice is harmless)
                ray.kill(actor)
            if job.pace_keeper is not None:
                ray.kill(job.pace_keeper)
        return _report(slots, run.nodes, run.task_bytes, run.lost)

    def _worker_class(self) -> Any:
        return self.ray.remote(
            num_cpus=self.cpus_per_worker,
            resources=self.resources,
            max_restarts=0,  # a lost worker is replaced by the driver, which records it
            max_concurrency=1,
            scheduling_strategy="SPREAD",
        )(EvalWorker)

    def _pace_keeper(self) -> Any:
        """The keeper of this run's rate limit, on the driver's node; None without one."""
        rate = self.job.settings.get("calls_per_minute")
        if rate is None:
            return None
        ray = self.ray
        here = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
            node_id=ray.get_runtime_context().get_node_id(), soft=False
        )
        return ray.remote(num_cpus=0, max_restarts=0, scheduling_strategy=here)(PaceKeeper).remote(
            float(rate)
        )


class _ClusterEvaluation:
    """One run's state on the cluster: the queue, the workers, and what each node did."""

    def __init__(self, ray: ModuleType, worker_class: Any, job: WorkerJob, record: Record,
                 tasks: list[EvalTask]) -> None:  # fmt: skip
        self.ray = ray
        self.worker_class = worker_class
        self.job = job
        self.record = record
        self.queue: deque[tuple[EvalTask, int]] = deque((t, 1) for t in tasks)
        self.objects = {t.id: ray.put(t) for t in tasks}  # each once, fetched where it runs
        self.task_bytes = {t.id: len(pickle.dumps(t)) for t in tasks}
        self.nodes: dict[str, Placement] = {}
        self.lost: list[dict[str, Any]] = []
        self.actors: list[Any] = []
        self.live: list[bool] = []
        self.lost_errors = (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError)

    def start_worker(self) -> tuple[Any, int]:
        actor = self.worker_class.remote(self.job)
        self.actors.append(actor)
        self.live.append(False)
        return actor, len(self.actors) - 1

    async def retire(self, actor: Any, *, placed: bool = True) -> None:
        """Close a worker and free its place on the cluster (a lost worker's task may be
        waiting for that place)."""
        if placed:
            with contextlib.suppress(*self.lost_errors):  # a dead worker has nothing to close
                await actor.close.remote()
        self.ray.kill(actor)

    def lose(self, task: EvalTask, attempt: int, error: BaseException, retries: int) -> None:
        """A worker died under ``task``: again later, or a row that says it was lost."""
        reason = _first_line(error)
        self.lost.append({"task_id": task.id, "attempt": attempt, "reason": reason})
        if attempt <= retries:
            self.queue.append((task, attempt + 1))
        else:
            self.record(_lost_row(task, self.job, attempt, reason))

    def ran(self, node: str, worker: int, task_id: str) -> None:
        spot = self.nodes.setdefault(node, Placement())
        spot.workers.add(worker)
        spot.task_ids.add(task_id)


def _worker_settings(sh: Shesha) -> dict[str, Any]:
    """The driver's settings, every one given explicitly (so a worker's own shesha.toml
    and SHESHA_* change nothing), with the driver's models folder for the local model."""
    settings = sh.settings.model_dump(exclude={"home"})
    settings["models_dir"] = str(models_dir(sh.settings))
    return settings


def _report(
    workers: int, nodes: dict[str, Placement], task_bytes: dict[str, int],
    lost: list[dict[str, Any]],
) -> dict[str, Any]:  # fmt: skip
    """executor.json: how many workers, what each node ran and the bytes of the tasks it
    received (their pickled size), the task set's, and every lost task."""
    return {
        "executor": "ray",
        "workers": workers,
        "nodes": {
            node: {
                "tasks": len(p.task_ids),
                "workers": len(p.workers),
                "task_bytes_received": sum(task_bytes[t] for t in p.task_ids),
            }
            for node, p in sorted(nodes.items())
        },
        "task_set_bytes": sum(task_bytes.values()),
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
        status=LOST,
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
