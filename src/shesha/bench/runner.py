"""Run a task set with the RLM or the direct baseline; record results, traces, a summary.

Results go to ``results.jsonl`` row by row (flushed), so an interrupted run keeps what it
finished and ``resume=True`` skips it. Every run carries a fingerprint: the shesha
version, prompt hash, models, method, settings and the task set's hash and spec.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel

from shesha import __version__
from shesha.bench.scoring import score
from shesha.bench.tasks import EvalTask, read_task_set
from shesha.endpoints import is_local
from shesha.errors import ConfigError, LLMContextWindowError, LLMError
from shesha.local.server import pick_runtime
from shesha.rlm.prompting import PromptSet, PromptStyle
from shesha.rlm.usage import QueryLimits
from shesha.sandbox import InMemoryCorpus
from shesha.storage.atomic import atomic_write

if TYPE_CHECKING:
    from shesha.api import Shesha

Method = Literal["rlm", "direct"]
LOST = "lost"
"""The status of a task whose every worker died under it: ``resume`` runs it again."""
DIRECT = PromptSet.load()
"""The direct baseline's prompts: the engine's read strategy uses the same wording."""
CHARS_PER_WINDOW_TOKEN = 3.5
"""Conservative: real tokenizers give about 4 characters a token on English."""
ANSWER_RESERVE_TOKENS = 600
DIRECT_FIT_TRIES = 3
"""Direct asks again, cut shorter, when the provider says the prompt is over its window."""


class ResultRow(BaseModel):
    task_id: str
    kind: str
    length_tokens: int
    method: str
    score: float
    answer: str | None
    gold: str
    status: str
    error: str | None = None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    latency_s: float
    iterations: int
    subcalls: int
    subcall_tokens: int = 0
    """Tokens the sub-calls read and wrote (included in prompt and completion tokens)."""
    truncated: float = 0.0
    """Direct method: the fraction of the context cut to fit the window."""
    trace_path: str | None = None
    fingerprint: str
    group: str | None = None
    """The question type of a ``qa`` task (name, date, number, ...)."""
    attempts: int = 1
    """Runs of the task: more than one when a Ray worker died under it (executor.json)."""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def summarise_by_type(rows: list[ResultRow]) -> list[dict[str, Any]]:
    """Per question type: how many ended with status success and a right answer."""
    groups: dict[str, list[ResultRow]] = {}
    for r in rows:
        groups.setdefault(r.group or r.kind, []).append(r)
    out = []
    for name in sorted(groups):
        group = groups[name]
        right = sum(1 for r in group if r.status == "success" and r.score >= 1.0)
        out.append(
            {
                "type": name,
                "tasks": len(group),
                "right_and_success": right,
                "share": round(right / len(group), 4),
                "mean_score": round(statistics.fmean(r.score for r in group), 4),
                "success": sum(1 for r in group if r.status == "success"),
                "mean_iterations": round(statistics.fmean(r.iterations for r in group), 2),
                "mean_subcalls": round(statistics.fmean(r.subcalls for r in group), 2),
                "mean_tokens": round(
                    statistics.fmean(r.prompt_tokens + r.completion_tokens for r in group)
                ),
                "p50_latency_s": round(percentile([r.latency_s for r in group], 0.5), 3),
            }
        )
    return out


def summarise(rows: list[ResultRow]) -> list[dict[str, Any]]:
    by_length: dict[int, list[ResultRow]] = {}
    for r in rows:
        by_length.setdefault(r.length_tokens, []).append(r)
    out = []
    for length in sorted(by_length):
        group = by_length[length]
        costs = [r.cost_usd for r in group if r.cost_usd is not None]
        out.append(
            {
                "length_tokens": length,
                "tasks": len(group),
                "mean_score": round(statistics.fmean(r.score for r in group), 4),
                "mean_cost_usd": round(statistics.fmean(costs), 6) if costs else None,
                "mean_tokens": round(
                    statistics.fmean(r.prompt_tokens + r.completion_tokens for r in group)
                ),
                "p50_latency_s": round(percentile([r.latency_s for r in group], 0.5), 3),
                "p95_latency_s": round(percentile([r.latency_s for r in group], 0.95), 3),
                "mean_truncated": round(statistics.fmean(r.truncated for r in group), 4),
                "mean_subcalls": round(statistics.fmean(r.subcalls for r in group), 2),
                "mean_subcall_tokens": round(statistics.fmean(r.subcall_tokens for r in group)),
            }
        )
    return out


class EvalRunner:
    def __init__(
        self,
        sh: Shesha,
        task_dir: Path,
        out_dir: Path,
        *,
        method: Method = "rlm",
        window_tokens: int | None = None,
        on_row: Callable[[ResultRow], None] | None = None,
    ) -> None:
        self.sh = sh
        self.task_dir = task_dir
        self.out_dir = out_dir
        self.method = method
        self.spec, self.tasks = read_task_set(task_dir)
        model = sh.model_name
        if model is None:
            raise ConfigError("eval run needs a model (--model).")
        self.model = model
        local = is_local(model)
        self.window_tokens = window_tokens or (sh.settings.local_ctx if local else 128_000)
        self.on_row = on_row
        self.fingerprint_data = self._fingerprint(local)
        self.fingerprint = hashlib.sha256(
            json.dumps(self.fingerprint_data, sort_keys=True).encode()
        ).hexdigest()[:16]

    def _fingerprint(self, local: bool) -> dict[str, Any]:
        s = self.sh.settings
        tasks_sha = hashlib.sha256((self.task_dir / "tasks.jsonl").read_bytes()).hexdigest()
        style: PromptStyle = "compact" if local else "full"
        return {
            "shesha_version": __version__,
            "prompt_hash": PromptSet.load(s.prompts_dir, style).hash,
            "model": self.model,
            "sub_model": s.sub_model or self.model,
            # "local" is whichever model is the default today: name the file.
            "local_model": (
                self.sh.models().resolve(self.model).model_dump(include={"name", "sha256"})
                if local
                else None
            ),
            # Greedy decoding differs from one llama.cpp build to another.
            "local_runtime": pick_runtime(s.local_runtime).name if local else None,
            "temperature": 0.0 if local and s.temperature is None else s.temperature,
            "method": self.method,
            "window_tokens": self.window_tokens if self.method == "direct" else None,
            "limits": s.model_dump(include=set(QueryLimits.model_fields)),
            "task_set": self.spec.model_dump(),
            "tasks_sha256": tasks_sha,
        }

    def _done(self) -> dict[str, ResultRow]:
        path = self.out_dir / "results.jsonl"
        done: dict[str, ResultRow] = {}
        if not path.is_file():
            return done
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = ResultRow.model_validate_json(line)
                except ValueError:
                    continue  # a line cut short by an interruption
                if row.fingerprint != self.fingerprint:
                    raise ConfigError(
                        f"{path} holds results of another configuration "
                        f"(fingerprint {row.fingerprint}, this run {self.fingerprint}).",
                        hint="Use a new --out directory, or the same settings as before.",
                    )
                if row.status != LOST:
                    done[row.task_id] = row
        return done

    def task_runner(self, sh: Shesha | None = None, trace_dir: Path | None = None) -> TaskRunner:
        """The part of this run one worker does, with ``sh`` (default: this run's)."""
        return TaskRunner(
            sh or self.sh,
            method=self.method,
            window_tokens=self.window_tokens,
            fingerprint=self.fingerprint,
            trace_dir=trace_dir or self.out_dir / "traces",
        )

    async def run(
        self,
        *,
        limit: int | None = None,
        resume: bool = False,
        workers: int = 1,
        executor: TaskExecutor | None = None,
        max_cost_usd: float | None = None,
    ) -> list[ResultRow]:
        """Run the tasks, ``workers`` at once in this process, or through ``executor``
        (a Ray cluster: `shesha.bench.ray_executor`). Each finished row is appended to
        results.jsonl as it comes, so ``resume`` finds it after a crash; at the end
        results.jsonl holds every row in the task set's order, as one worker writes it.

        ``max_cost_usd`` caps the whole run, wherever its tasks run: once the finished
        tasks have cost that much, no task starts (those in flight finish), the summary
        says ``stopped: max_cost_usd``, and a later ``resume`` with a higher cap goes on."""
        if workers < 1:
            raise ConfigError(f"workers must be at least 1, not {workers}.", hint="--workers 1")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        results_path = self.out_dir / "results.jsonl"
        done = self._done() if resume else {}
        if not resume and results_path.exists():
            results_path.unlink()
        tasks = self.tasks[:limit] if limit else self.tasks
        finished = dict(done)
        spent = sum(r.cost_usd or 0.0 for r in done.values())
        todo = [t for t in tasks if t.id not in done]
        chosen = executor or LocalExecutor(self.task_runner(), workers)

        with open(results_path, "a", encoding="utf-8") as out:

            def record(row: ResultRow) -> None:
                nonlocal spent
                out.write(row.model_dump_json() + "\n")
                out.flush()
                finished[row.task_id] = row
                spent += row.cost_usd or 0.0
                if self.on_row is not None:
                    self.on_row(row)

            def may_start() -> bool:
                return max_cost_usd is None or spent < max_cost_usd

            report = await chosen.run(todo, record, may_start)
        order = {t.id: i for i, t in enumerate(self.tasks)}
        every = sorted(finished.values(), key=lambda r: order.get(r.task_id, len(order)))
        atomic_write(results_path, "".join(r.model_dump_json() + "\n" for r in every).encode())
        rows = [finished[t.id] for t in tasks if t.id in finished]
        summary: dict[str, Any] = {
            "fingerprint": self.fingerprint,
            "fingerprint_data": self.fingerprint_data,
            "tasks": len(rows),
            "mean_score": round(statistics.fmean(r.score for r in rows), 4) if rows else None,
            "by_length": summarise(rows),
            "by_type": summarise_by_type(rows),
        }
        if len(rows) < len(tasks):
            summary["stopped"] = "max_cost_usd"
            summary["not_run"] = len(tasks) - len(rows)
            summary["cost_usd"] = round(spent, 6)
        atomic_write(self.out_dir / "summary.json", json.dumps(summary, indent=1).encode())
        atomic_write(self.out_dir / "executor.json", json.dumps(report, indent=1).encode())
        return rows


Record = Callable[[ResultRow], None]
"""Called with each finished row, as it finishes."""
MayStart = Callable[[], bool]
"""False once no task may start (the run's cost cap is spent)."""
Report = dict[str, Any]
"""What ran where: executor.json."""


class TaskExecutor(Protocol):
    """Where an evaluation's tasks run: threads here (`LocalExecutor`) or a Ray cluster."""

    async def run(self, tasks: list[EvalTask], record: Record, may_start: MayStart) -> Report:
        """Run each task and ``record`` its row as it finishes; start none once
        ``may_start()`` is False. Return what ran where (executor.json)."""
        ...


class LocalExecutor:
    """``workers`` tasks at once in this process, each in its own sandbox of the pool."""

    def __init__(self, runner: TaskRunner, workers: int) -> None:
        self.runner = runner
        self.workers = workers

    async def run(self, tasks: list[EvalTask], record: Record, may_start: MayStart) -> Report:
        gate = asyncio.Semaphore(self.workers)
        ran = 0

        async def one(task: EvalTask) -> None:
            nonlocal ran
            async with gate:
                if not may_start():
                    return
                ran += 1
                row = await self.runner.run(task)
            record(row)

        async with asyncio.TaskGroup() as group:
            for task in tasks:
                group.create_task(one(task))
        return {"executor": "local", "workers": self.workers, "tasks": ran}


class TaskRunner:
    """One task with one Shesha, scored into a row: what every worker does, in this
    process or on another machine."""

    def __init__(
        self,
        sh: Shesha,
        *,
        method: Method,
        window_tokens: int,
        fingerprint: str,
        trace_dir: Path,
    ) -> None:
        self.sh = sh
        self.method = method
        self.window_tokens = window_tokens
        self.fingerprint = fingerprint
        self.trace_dir = trace_dir

    async def run(self, task: EvalTask) -> ResultRow:
        return await (self._rlm(task) if self.method == "rlm" else self._direct(task))

    async def _rlm(self, task: EvalTask) -> ResultRow:
        started = time.perf_counter()
        result = await self.sh.aquery_corpus(
            task.question,
            InMemoryCorpus(task.documents),
            trace_dir=self.trace_dir,
            project=task.id,
        )
        u = result.usage
        return ResultRow(
            task_id=task.id,
            kind=task.kind,
            length_tokens=task.length_tokens,
            method="rlm",
            score=score(task, result.answer),
            answer=result.answer,
            gold=task.gold,
            status=result.status,
            error=result.error,
            prompt_tokens=u.root.prompt_tokens + u.sub.prompt_tokens,
            completion_tokens=u.root.completion_tokens + u.sub.completion_tokens,
            cost_usd=u.total_cost_usd,
            latency_s=round(time.perf_counter() - started, 3),
            iterations=result.iterations,
            subcalls=result.subcalls,
            subcall_tokens=u.sub.tokens,
            trace_path=result.trace_path,
            fingerprint=self.fingerprint,
            group=task.meta.get("type"),
        )

    async def _direct(self, task: EvalTask) -> ResultRow:
        """The baseline users would otherwise pick: everything in one prompt, cut to fit."""
        full = "\n\n".join(f"=== {name} ===\n{text}" for name, text in task.documents)
        budget = int((self.window_tokens - ANSWER_RESERVE_TOKENS) * CHARS_PER_WINDOW_TOKEN) - len(
            task.question
        )
        text = full[: max(budget, 0)]
        models = await asyncio.to_thread(self.sh.resolve_models)
        started = time.perf_counter()
        answer: str | None = None
        status, error = "success", None
        prompt = completion = 0
        cost: float | None = None
        for _ in range(DIRECT_FIT_TRIES):
            messages = [
                {"role": "system", "content": DIRECT.render("direct_system")},
                {
                    "role": "user",
                    "content": DIRECT.render("direct_user", documents=text, question=task.question),
                },
            ]
            try:
                c = await models.root.complete(messages, model=models.model)
            except LLMContextWindowError as e:
                status, error = "error", str(e).splitlines()[0]
                if not e.requested or not e.limit or not text:
                    break
                # The provider's tokenizer is denser than estimated: cut to what it said.
                share = (e.limit - ANSWER_RESERVE_TOKENS) / e.requested * 0.97
                text = text[: int(len(text) * max(share, 0.0))]
                continue
            except LLMError as e:
                status, error = "error", str(e).splitlines()[0]
                break
            answer, prompt, completion, cost = (
                c.text,
                c.prompt_tokens,
                c.completion_tokens,
                c.cost_usd,
            )
            status, error = "success", None
            break
        truncated = 1 - len(text) / len(full) if full else 0.0
        return ResultRow(
            task_id=task.id,
            kind=task.kind,
            length_tokens=task.length_tokens,
            method="direct",
            score=score(task, answer),
            answer=answer,
            gold=task.gold,
            status=status,
            error=error,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=cost,
            latency_s=round(time.perf_counter() - started, 3),
            iterations=1,
            subcalls=0,
            truncated=round(truncated, 4),
            fingerprint=self.fingerprint,
            group=task.meta.get("type"),
        )
