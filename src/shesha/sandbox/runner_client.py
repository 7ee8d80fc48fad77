"""The host's side of a conversation with one runner: ping, load, reset, and executions
that hand sub-call batches back to the caller instead of calling out.

``RunnerClient`` holds everything that does not depend on where the runner lives. A
backend (a Docker container, a local process) starts the runner, gives the client a
``FrameChannel`` to it, and says how to kill it and how it ended.

An execution is pulled, one step at a time::

    sandbox.start(code, timeout=60)
    while isinstance(step := sandbox.next(), SubcallBatch):
        sandbox.answer(relay(step.items))     # time spent here is not counted
    result = step                             # an ExecResult
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shesha.errors import SandboxError, SandboxImageError, SandboxProtocolError
from shesha.sandbox.corpus import Corpus
from shesha.sandbox.execution import (
    ExecResult,
    ExecStep,
    RawCitation,
    SubcallBatch,
    SubcallItem,
    ToolCall,
    ToolOutcome,
    ToolSpec,
)
from shesha.sandbox.image import REBUILD_HINT, runner_hash
from shesha.sandbox.limits import SandboxLimits
from shesha.sandbox.protocol import ChannelClosed, ChannelTimeout, Frame, FrameChannel

MAX_SUBCALL_ITEMS = 10_000
MAX_CITATIONS = 200
MAX_QUOTE = 5_000


@dataclass(frozen=True)
class ExitState:
    """How a runner ended, as far as its backend can tell."""

    code: int | None = None
    out_of_memory: bool = False


@dataclass
class _Execution:
    rid: int
    deadline: float
    limit: float
    max_output: int
    subcalls: int = 0
    paused_at: float | None = None
    batch_id: Any = None


class RunnerClient:
    """One runner, ready for frames. Backends override :meth:`kill` and :meth:`exit_state`."""

    def __init__(self, channel: FrameChannel, limits: SandboxLimits) -> None:
        self._channel = channel
        self.limits = limits
        self._ids = itertools.count(1)
        self._execution: _Execution | None = None
        self.loaded_version: str | None = None
        self.alive = True
        self._killed = False

    def kill(self) -> None:
        """Stop the runner at once, from any thread, and release what it holds. A
        ``next`` waiting on it returns status ``cancelled``. Idempotent."""
        self._killed = True
        self.alive = False
        self._channel.close()
        self._stop()

    # -- what a backend provides --------------------------------------------------------

    def _stop(self) -> None:
        """Kill the runner and release what it holds (the channel is already closed)."""
        raise NotImplementedError

    def exit_state(self) -> ExitState:
        """How the runner ended (called once it is known to be gone)."""
        raise NotImplementedError

    def stderr_tail(self) -> str:
        """The end of what the runner wrote to stderr, for diagnostics."""
        return self._channel.stderr_tail()

    # -- plain requests -----------------------------------------------------------------

    @property
    def bytes_sent(self) -> int:
        return self._channel.bytes_sent

    def _request(
        self, header: dict[str, Any], payload: bytes = b"", timeout: float = 10.0
    ) -> Frame:
        if not self.alive:
            raise SandboxError("this sandbox has been discarded")
        if self._execution is not None:
            raise SandboxError("this sandbox is in the middle of an execution")
        rid = next(self._ids)
        header["id"] = rid
        deadline = time.monotonic() + timeout
        try:
            self._channel.send(header, payload, timeout=timeout)
            frame = self._channel.recv(deadline)
        except ChannelTimeout as e:
            self.kill()
            raise SandboxError(
                f"The sandbox did not answer {header['kind']!r} within {timeout:g} s; "
                "it has been discarded."
            ) from e
        except ChannelClosed as e:
            self.alive = False
            raise SandboxError(f"The sandbox exited: {self._describe_exit()}") from e
        except SandboxProtocolError:
            self.kill()
            raise
        self._check_reply(frame, rid)
        return frame

    def _check_reply(self, frame: Frame, rid: int) -> None:
        kind = frame.header["kind"]
        if kind == "error":
            self.kill()
            raise SandboxProtocolError(f"The sandbox runner refused a message: {frame.header}")
        if frame.header.get("id") != rid:
            self.kill()
            raise SandboxProtocolError(
                f"The sandbox answered request {frame.header.get('id')!r}, expected {rid}"
            )

    def _expect(self, frame: Frame, kind: str) -> None:
        if frame.header["kind"] != kind:
            self.kill()
            raise SandboxProtocolError(f"expected {kind}, got {frame.header['kind']!r}")

    def ping(self, timeout: float = 5.0) -> dict[str, Any]:
        frame = self._request({"kind": "ping"}, timeout=timeout)
        self._expect(frame, "pong")
        return frame.header

    def reset(self, timeout: float = 5.0) -> None:
        """End the query: the process that ran its code, everything it started and every
        file it wrote are gone, and a fresh interpreter waits with the documents."""
        self._expect(self._request({"kind": "reset"}, timeout=timeout), "reset_ok")

    def load(self, corpus: Corpus, timeout: float = 300.0) -> int:
        """Send the corpus once; return the bytes sent. A fresh namespace follows."""
        docs = corpus.documents()
        blobs = [text.encode("utf-8", "surrogatepass") for _, text in docs]
        payload = b"".join(blobs)
        header = {
            "kind": "load",
            "version": corpus.version,
            "names": [name for name, _ in docs],
            "lengths": [len(b) for b in blobs],
        }
        del blobs
        before = self.bytes_sent
        frame = self._request(header, payload, timeout=timeout)
        if frame.header["kind"] != "loaded" or frame.header.get("version") != corpus.version:
            self.kill()
            raise SandboxProtocolError(f"expected loaded, got {frame.header['kind']!r}")
        self.loaded_version = corpus.version
        return self.bytes_sent - before

    # -- executions, pulled step by step ------------------------------------------------

    def start(
        self,
        code: str,
        *,
        timeout: float | None = None,
        max_output_chars: int | None = None,
        tools: Sequence[ToolSpec] = (),
    ) -> None:
        """Begin running code in the persistent namespace; then call :meth:`next`.
        ``tools``: the host tools the code may call by name (stubs in the namespace)."""
        if not self.alive:
            raise SandboxError("this sandbox has been discarded")
        if self._execution is not None:
            raise SandboxError("this sandbox is already running code")
        limit = timeout if timeout is not None else self.limits.exec_timeout_s
        max_output = max_output_chars or self.limits.max_output_chars
        rid = next(self._ids)
        execution = _Execution(rid, time.monotonic() + limit, limit, max_output)
        self._execution = execution
        # A failed send shows in next(), which reports it as the execution's result.
        with contextlib.suppress(ChannelTimeout, ChannelClosed):
            header = {"kind": "exec", "id": rid, "code": code, "max_output": max_output}
            if tools:
                header["tools"] = [dict(t) for t in tools]
            self._channel.send(header, timeout=limit)

    def next(self) -> ExecStep:
        """Wait for the running code: a batch of sub-calls to answer, or its result.

        The clock stops while a batch is out: time until :meth:`answer` is not counted
        against the execution's limit. Past the limit, the runner is killed."""
        execution = self._execution
        if execution is None:
            raise SandboxError("nothing is running: call start() first")
        if execution.paused_at is not None:
            raise SandboxError("a sub-call batch is waiting for answer()")
        try:
            frame = self._channel.recv(execution.deadline)
            if frame.header["kind"] == "subcall":
                items = _subcall_items(frame.header)
                execution.subcalls += len(items)
                execution.paused_at, execution.batch_id = time.monotonic(), frame.header.get("id")
                return SubcallBatch(items)
            if frame.header["kind"] == "tool":
                call = _tool_call(frame.header)
                execution.paused_at, execution.batch_id = time.monotonic(), frame.header.get("id")
                return call
        except ChannelTimeout:
            self._execution = None
            self.kill()
            return _timeout_result(execution)
        except ChannelClosed:
            self._execution = None
            if self._killed:
                return _cancelled_result(execution)
            self.alive = False
            return self._lost_result(execution.subcalls)
        except SandboxProtocolError:
            self._execution = None
            self.kill()
            raise
        self._execution = None
        return self._ended(frame, execution)

    def _ended(self, frame: Frame, execution: _Execution) -> ExecResult:
        """The frame that ends an execution: its result, or the runner's word that the
        process running it was lost."""
        self._check_reply(frame, execution.rid)
        if frame.header["kind"] == "lost":
            return self._worker_lost(frame.header, execution.subcalls)
        self._expect(frame, "result")
        return _exec_result(frame.header, execution.subcalls, execution.max_output)

    def answer(self, results: Sequence[str]) -> None:
        """Send the answers to the batch :meth:`next` returned, in its order."""
        self._resume({"kind": "subcall_result", "results": list(results)})

    def answer_tool(self, outcome: ToolOutcome) -> None:
        """Send a tool call's outcome: its JSON value, or the error the code will raise."""
        if outcome.ok:
            self._resume({"kind": "tool_result", "ok": True, "value": outcome.value})
        else:
            self._resume({"kind": "tool_result", "ok": False, "error": outcome.error})

    def _resume(self, header: dict[str, Any]) -> None:
        execution = self._execution
        if execution is None or execution.paused_at is None:
            raise SandboxError("nothing is waiting for an answer")
        execution.deadline += time.monotonic() - execution.paused_at
        execution.paused_at = None
        # A failed send shows in next(), which reports it as the execution's result.
        with contextlib.suppress(ChannelTimeout, ChannelClosed):
            self._channel.send(
                {**header, "id": execution.batch_id},
                timeout=max(execution.deadline - time.monotonic(), 1.0),
            )

    # -- when the runner is gone --------------------------------------------------------

    def _describe_exit(self) -> str:
        state = self.exit_state()
        tail = self.stderr_tail().strip()
        text = f"exit code {state.code if state.code is not None else '?'}"
        if state.out_of_memory:
            text += f", out of memory (limit {self.limits.memory_mb} MB)"
        if tail:
            text += f"; its last stderr: {tail[-2000:]}"
        return text

    def _worker_lost(self, header: dict[str, Any], subcalls: int) -> ExecResult:
        """The process that ran the code died, or broke the protocol; the runner reported
        it and cleaned up. The sandbox is replaced all the same, as when it dies whole."""
        reason = header.get("reason")
        self.kill()
        if reason == "memory":
            return ExecResult(status="memory", error=_memory_error(self.limits), subcalls=subcalls)
        tail = header.get("stderr")
        tail = tail.strip()[-2000:] if isinstance(tail, str) else ""
        detail = f" Its last output: {tail}" if tail else ""
        if reason == "protocol":
            what = "wrote something that is not a message to the runner's channel"
        else:
            code, sig = header.get("code"), header.get("signal")
            how = f"signal {sig}" if isinstance(sig, int) else f"exit code {code}"
            what = (
                f"exited ({how})"
                if isinstance(code, int) or isinstance(sig, int)
                else ("closed its channel to the runner")
            )
        return ExecResult(
            status="crashed",
            error=(
                f"SandboxCrashed: the process running the code {what}. The sandbox was "
                f"restarted: variables from earlier steps are gone, `context` is still "
                f"loaded.{detail}"
            ),
            subcalls=subcalls,
        )

    def _lost_result(self, subcalls: int) -> ExecResult:
        state = self.exit_state()
        tail = self.stderr_tail().strip()[-2000:]
        self.kill()
        if state.out_of_memory:
            return ExecResult(status="memory", error=_memory_error(self.limits), subcalls=subcalls)
        detail = f" Its last stderr: {tail}" if tail else ""
        code = state.code if state.code is not None else "?"
        return ExecResult(
            status="crashed",
            error=(
                f"SandboxCrashed: the sandbox process exited (exit code {code}). It was "
                f"restarted: variables from earlier steps are gone, `context` is still "
                f"loaded.{detail}"
            ),
            subcalls=subcalls,
        )


def _memory_error(limits: SandboxLimits) -> str:
    return (
        f"MemoryError: the code used more than the sandbox's {limits.memory_mb} MB of "
        "memory and was killed. The sandbox was restarted: variables from earlier steps "
        "are gone, `context` is still loaded. Process the documents in smaller pieces."
    )


def _cancelled_result(execution: _Execution) -> ExecResult:
    return ExecResult(
        status="cancelled",
        error="Cancelled: the code was stopped, and the sandbox was discarded.",
        subcalls=execution.subcalls,
    )


def _timeout_result(execution: _Execution) -> ExecResult:
    return ExecResult(
        status="timeout",
        error=(
            f"TimeoutError: the code ran longer than {execution.limit:g} s and was stopped. "
            "The sandbox was restarted: variables from earlier steps are gone, "
            "`context` is still loaded. Work on smaller pieces at a time."
        ),
        wall_s=execution.limit,
        subcalls=execution.subcalls,
    )


def _subcall_items(header: dict[str, Any]) -> list[SubcallItem]:
    raw = header.get("items")
    if not isinstance(raw, list) or not raw or len(raw) > MAX_SUBCALL_ITEMS:
        raise SandboxProtocolError("the sandbox sent a sub-call without a valid list of items")
    items = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise SandboxProtocolError("the sandbox sent a malformed sub-call item")
        instruction, content = entry.get("instruction"), entry.get("content")
        if not isinstance(instruction, str) or not isinstance(content, str):
            raise SandboxProtocolError("the sandbox sent a sub-call item that is not text")
        items.append(SubcallItem(instruction, content))
    return items


MAX_TOOL_NAME = 100


def _tool_call(header: dict[str, Any]) -> ToolCall:
    name, args, kwargs = header.get("name"), header.get("args"), header.get("kwargs")
    if (
        not isinstance(name, str)
        or not name.isidentifier()
        or len(name) > MAX_TOOL_NAME
        or not isinstance(args, list)
        or not isinstance(kwargs, dict)
        or not all(isinstance(k, str) for k in kwargs)
    ):
        raise SandboxProtocolError("the sandbox sent a malformed tool call")
    return ToolCall(name, tuple(args), dict(kwargs))


def _citations(header: dict[str, Any]) -> tuple[RawCitation, ...]:
    raw = header.get("citations") or []
    if not isinstance(raw, list) or len(raw) > MAX_CITATIONS:
        raise SandboxProtocolError("the sandbox sent a malformed list of citations")
    found = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise SandboxProtocolError("the sandbox sent a malformed citation")
        document, quote = entry.get("document"), entry.get("quote")
        start, end = entry.get("start"), entry.get("end")
        if not isinstance(document, str) or not isinstance(quote, str):
            raise SandboxProtocolError("the sandbox sent a citation that is not text")
        offsets = (start, end) if isinstance(start, int) and isinstance(end, int) else (None, None)
        found.append(RawCitation(document[:1000], quote[:MAX_QUOTE], *offsets))
    return tuple(found)


def _text(header: dict[str, Any], key: str, limit: int) -> str:
    value = header.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SandboxProtocolError(f"the sandbox sent a result whose {key!r} is not text")
    # The runner already truncates; a runner that did not is cut here, bluntly.
    return value if len(value) <= limit + 1000 else value[:limit] + "\n... [cut by host]\n"


def _number(header: dict[str, Any], key: str) -> float:
    value = header.get(key, 0)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise SandboxProtocolError(f"the sandbox sent a result whose {key!r} is not a number")
    return float(value)


def _exec_result(header: dict[str, Any], subcalls: int, max_output: int) -> ExecResult:
    error = header.get("error")
    if error is not None and not isinstance(error, str):
        raise SandboxProtocolError("the sandbox sent a result whose 'error' is not text")
    final = header.get("final")
    if final is not None and not isinstance(final, str):
        raise SandboxProtocolError("the sandbox sent a result whose 'final' is not text")
    return ExecResult(
        status="error" if error else "ok",
        stdout=_text(header, "stdout", max_output),
        stderr=_text(header, "stderr", max_output),
        error=_text(header, "error", max_output) or None,
        final=final,
        stdout_chars=int(_number(header, "stdout_chars")),
        cpu_s=_number(header, "cpu_s"),
        wall_s=_number(header, "wall_s"),
        peak_memory_mb=round(_number(header, "peak_rss_kb") / 1024, 1),
        subcalls=subcalls,
        citations=_citations(header),
    )


def check_runner(
    sandbox: RunnerClient, where: str, ready_timeout: float, expected: str | None = None
) -> None:
    """Wait until a new runner answers a ping, and check that it is the version this
    shesha speaks; kill it otherwise."""
    try:
        pong = sandbox.ping(timeout=ready_timeout)
    except SandboxError:
        sandbox.kill()
        raise
    want = expected or runner_hash()
    if pong.get("runner") != want:
        sandbox.kill()
        got = str(pong.get("runner"))[:12]
        raise SandboxImageError(
            f"The sandbox {where} carries runner {got}, but this shesha needs runner {want[:12]}.",
            hint=REBUILD_HINT,
        )
