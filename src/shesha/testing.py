"""Test doubles for your own pipelines: models that answer from code, and sandboxes
that run without Docker.

- ``FunctionModel(fn)``: an in-process ``ChatModel``; ``fn(messages, model)`` returns the
  reply. ``Shesha(llm=FunctionModel(fn))`` answers every model call with it.
- ``ScriptedLLMServer``: a real OpenAI-compatible server on 127.0.0.1, reached through
  LiteLLM as a provider would be (retries, errors, usage and all).
- ``process_sandboxes()``: the real runner as local child processes, without isolation.
- ``RunningServer(sh)``: `shesha serve`'s app on a thread of this process, on a free
  loopback port (``with RunningServer(sh) as url: ...``). Loaded on first use: it needs
  the ``serve`` parts (FastAPI, uvicorn), which the rest of this module does not.

The scripted server
-------------------

shesha reaches it through LiteLLM exactly as it would a provider (``openai/<name>`` with
``api_base=server.api_base``), so tests exercise the real client, retries and errors.

    with ScriptedLLMServer(["```repl\\nprint(len(context))\\n```", "FINAL(3)"]) as server:
        ...  # model="openai/scripted", api_base=server.api_base, api_key="test"

A script is a list of replies, used in order (the last repeats when it runs out), or a
callable ``(messages, model) -> reply``. A reply is a string, or one of:

- ``Fail(status, message)``: answer with that HTTP status (429, 500, 401...);
- ``Slow(seconds, text)``: wait, then answer ``text``.
"""

from __future__ import annotations

import inspect
import json
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any

from shesha.lazy import lazy_attributes
from shesha.llm.types import Completion, Message, OutputConstraint
from shesha.sandbox.limits import SandboxLimits
from shesha.sandbox.pool import SandboxPool
from shesha.sandbox.process import ProcessSandbox

if TYPE_CHECKING:  # the alias re-exports it to type checkers; at run time, __getattr__
    from shesha.server.run import RunningServer as RunningServer  # noqa: PLC0414

__getattr__ = lazy_attributes(__name__, {"RunningServer": "shesha.server.run"})


@dataclass(frozen=True)
class Fail:
    status: int
    message: str = "scripted failure"


@dataclass(frozen=True)
class Slow:
    seconds: float
    text: str


ScriptedReply = str | Fail | Slow
Script = Sequence[ScriptedReply] | Callable[[list[dict[str, Any]], str], ScriptedReply]


@dataclass
class RecordedRequest:
    model: str
    messages: list[dict[str, Any]]
    body: dict[str, Any] = field(repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    """The request's HTTP headers, names in lower case (Authorization among them)."""


class _Server(ThreadingHTTPServer):
    # The default backlog (5) drops connections when a batch of sub-calls arrives at once,
    # and the client then waits a full second to retry.
    request_queue_size = 256
    daemon_threads = True


def _shared_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]


def count_tokens(text: str) -> int:
    """A stable stand-in for a tokenizer: about four characters a token."""
    return max(1, (len(text) + 3) // 4)


class ScriptedLLMServer:
    """Serves ``POST /v1/chat/completions`` (and ``/chat/completions``) from a script."""

    def __init__(
        self,
        script: Script,
        *,
        latency_s: float = 0.0,
        report_usage: bool = True,
        prompt_cache: bool = False,
        fail_first: Sequence[int] = (),
        host: str = "127.0.0.1",
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the scripted server listens on loopback only")
        self._script = script
        self.latency_s = latency_s
        self.report_usage = report_usage
        self.prompt_cache = prompt_cache
        """Report, as llama.cpp's server does, the prompt tokens it had read before: those
        of the prefix this request shares with the one before."""
        self._last_prompt = ""
        self._fail_first = list(fail_first)
        self._lock = threading.Lock()
        self._next = 0
        self.requests: list[RecordedRequest] = []
        self._httpd = _Server((host, 0), self._handler())
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ScriptedLLMServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, name="scripted-llm", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ScriptedLLMServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _reply_for(self, messages: list[dict[str, Any]], model: str) -> ScriptedReply:
        with self._lock:
            if self._fail_first:
                return Fail(self._fail_first.pop(0))
            if callable(self._script):
                script = self._script
            else:
                replies = list(self._script)
                if not replies:
                    return Fail(500, "the script is empty")
                reply = replies[min(self._next, len(replies) - 1)]
                self._next += 1
                return reply
        return script(messages, model)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: tests read ``server.requests`` instead."""

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": "scripted"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    self._send(400, {"error": {"message": "invalid JSON"}})
                    return
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                messages = body.get("messages") or []
                model = str(body.get("model", ""))
                headers = {k.lower(): v for k, v in self.headers.items()}
                server.requests.append(RecordedRequest(model, messages, body, headers))
                if server.latency_s:
                    time.sleep(server.latency_s)
                reply = server._reply_for(messages, model)
                if isinstance(reply, Fail):
                    kind = {401: "authentication_error", 429: "rate_limit_error"}.get(
                        reply.status, "server_error"
                    )
                    self._send(reply.status, {"error": {"message": reply.message, "type": kind}})
                    return
                if isinstance(reply, Slow):
                    time.sleep(reply.seconds)
                    reply = reply.text
                self._send(200, server._completion(messages, model, reply))

        return Handler

    def _completion(self, messages: list[dict[str, Any]], model: str, reply: str) -> dict[str, Any]:
        """The chat completion body for ``reply``, with usage as the settings say."""
        prompt = sum(count_tokens(str(m.get("content") or "")) for m in messages)
        completion = count_tokens(reply)
        payload: dict[str, Any] = {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply},
                    "finish_reason": "stop",
                }
            ],
        }
        if self.report_usage:
            payload["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
        if self.report_usage and self.prompt_cache:
            text = "".join(str(m.get("content") or "") for m in messages)
            shared = _shared_prefix(self._last_prompt, text)
            self._last_prompt = text
            reused = count_tokens(shared) if shared else 0
            payload["usage"]["prompt_tokens_details"] = {"cached_tokens": min(reused, prompt)}
        return payload


def process_sandboxes(size: int = 1, limits: SandboxLimits | None = None) -> SandboxPool:
    """A warm pool of sandbox runners as local child processes: the real runner, frames
    and pool, without Docker and WITHOUT isolation (see ``shesha.sandbox.process``).
    For tests of your own pipelines, with code and documents you trust::

        with process_sandboxes() as pool, Shesha(llm=FunctionModel(fn), sandboxes=pool) as sh:
            ...
    """
    return SandboxPool(
        size,
        factory=ProcessSandbox.factory(limits),
        kind="process",
        isolation="none: local child processes, for trusted code only",
    )


ReplyFunction = Callable[[list[Message], str], str | Awaitable[str]]


class FunctionModel:
    """A ``ChatModel`` in this process: ``fn(messages, model)`` gives each reply.

    ``fn`` may be a plain function (called on the event loop, one call at a time, in
    order) or an ``async def`` (whose calls run concurrently, as real sub-calls do).
    Tokens are counted at about four characters a token; every call costs 0.

        def fn(messages, model):
            if messages[0]["content"].startswith("You follow one instruction"):
                return "a sub-call's answer"
            return "```repl\\nprint(len(context))\\n```" if len(messages) == 2 else "FINAL(3)"

        with Shesha(llm=FunctionModel(fn)) as sh: ...
    """

    def __init__(self, fn: ReplyFunction, *, name: str = "function") -> None:
        self.fn = fn
        self.name = name
        self.calls: list[tuple[str, list[Message]]] = []
        """(model, messages) of every call, in the order they were made."""
        self.constraints: list[OutputConstraint | None] = []
        """The output constraint of every call (None: none), in the same order. The
        function's reply is returned as it is: like a server that cannot enforce a
        constraint, so the engine's own checks are what a test sees."""

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        model: str,
        constraint: OutputConstraint | None = None,
    ) -> Completion:
        sent = [dict(m) for m in messages]
        self.calls.append((model, sent))
        self.constraints.append(constraint)
        started = time.perf_counter()
        reply = self.fn(sent, model)
        text = await reply if inspect.isawaitable(reply) else reply
        if not isinstance(text, str):
            raise TypeError(f"FunctionModel: the function returned {type(text).__name__}, not str")
        return Completion(
            text=text,
            model=model,
            prompt_tokens=sum(count_tokens(m.get("content") or "") for m in sent),
            completion_tokens=count_tokens(text),
            cost_usd=0.0,
            duration_s=time.perf_counter() - started,
        )
