"""shesha over MCP, with the official SDK: `shesha mcp` (stdio) and /mcp on `shesha serve`
(streamable HTTP).

Two kinds of agent use it:

- **Agents that want answers**: ``ask`` (with progress notifications), ``add_documents``,
  ``list_projects``, ``list_documents``, ``read_document`` (paged), ``list_traces``,
  ``read_trace``.
- **Agents that want to be the root model themselves**: ``open_session`` gives a warm
  sandbox with a project's documents loaded as ``context``; ``execute_python``,
  ``get_variable``, ``reset_session``, ``list_sessions``, ``close_session``. Sessions
  expire after a time without use. ``llm_query`` inside such a session is relayed to the
  client through MCP sampling when the client offers it, else to the configured
  sub-model, else it returns an error that says which of the two to set up.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.types import ClientCapabilities, SamplingCapability, SamplingMessage, TextContent
from starlette.types import ASGIApp

from shesha import __version__
from shesha.errors import ConfigError, LLMError, NotFoundError, SheshaError
from shesha.llm.types import Message
from shesha.rlm.events import CodeRun, LLMResponse
from shesha.rlm.history import subcall_messages
from shesha.sandbox.execution import ExecResult, SubcallItem, drive
from shesha.service import TEXT_PAGE, HeldSandbox, Service
from shesha.views import result_json

SESSION_TTL_S = 30 * 60
PROGRESS = {
    LLMResponse.model_fields["type"].default: "model replied",
    CodeRun.model_fields["type"].default: "running code",
}
"""The events of an `ask` that the client hears of as progress, and what it is told."""
IDENTIFIER_HELP = "a Python name, like `hits` or `total_2024`"
INSTRUCTIONS = """shesha answers questions about large document sets with a Recursive Language
Model. Use `ask` for answers (it runs the whole loop with shesha's model). To be the root model
yourself, `open_session` on a project: `context` then holds its documents in a sandbox
with no network, and `execute_python` runs your code there (`llm_query`,
`llm_query_batched` and `FINAL` are defined)."""


@dataclass
class McpSession:
    """A warm sandbox holding one project's documents, for one client."""

    id: str
    held: HeldSandbox
    created: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def info(self, ttl: float) -> dict[str, Any]:
        return {
            "session_id": self.id,
            "project": self.held.project,
            "created": self.created,
            "idle_s": round(time.time() - self.last_used, 1),
            "expires_in_s": round(max(0.0, ttl - (time.time() - self.last_used)), 1),
        }


_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])


def said_plainly(fn: _F) -> _F:
    """A tool whose shesha errors reach the client with their message and hint (the SDK
    hides other exceptions behind "Error executing tool")."""

    @functools.wraps(fn)
    async def tool(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except SheshaError as e:
            raise ToolError(str(e)) from e

    return cast(_F, tool)


def _text(result: ExecResult) -> dict[str, Any]:
    return {
        "status": result.status,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "error": result.error,
        "final": result.final,
        "subcalls": result.subcalls,
    }


class McpHub:
    """The MCP server over one service (the one a `shesha serve` shares with its REST
    routes), and the sessions its clients hold: each holds a slot of the service's line."""

    def __init__(self, service: Service, *, session_ttl_s: float = SESSION_TTL_S) -> None:
        self.service = service
        self.sh = service.sh
        self.ttl = session_ttl_s
        self.sessions: dict[str, McpSession] = {}
        self.server = MCPServer(
            "shesha", instructions=INSTRUCTIONS, version=__version__, log_level="WARNING"
        )
        self._prompts = service.sh.prompts()  # the engine's: a sub-call is asked as it asks
        self._mounted = False
        self._register()

    # -- transports ---------------------------------------------------------------------

    def http_app(self) -> ASGIApp:
        """The streamable-HTTP endpoint, to mount at /mcp."""
        app: ASGIApp = self.server.streamable_http_app(streamable_http_path="/")
        self._mounted = True
        return app

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Runs the HTTP session manager (when mounted) and expires idle sessions."""
        reaper = asyncio.get_running_loop().create_task(self._expire_forever())
        try:
            if self._mounted:
                async with self.server.session_manager.run():
                    yield
            else:
                yield
        finally:
            reaper.cancel()

    def run_stdio(self) -> None:
        """Serve one client over stdin/stdout until it goes away."""

        async def main() -> None:
            async with self.running():
                try:
                    await self.server.run_stdio_async()
                finally:
                    await self.close()
                    await self.service.shutdown()

        asyncio.run(main())

    async def close(self) -> None:
        for session_id in list(self.sessions):
            await self._close(session_id)

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(min(30.0, self.ttl / 2))
            await self.expire()

    async def expire(self) -> list[str]:
        """Close the sessions unused for longer than the TTL; return their ids."""
        now = time.time()
        old = [s.id for s in self.sessions.values() if now - s.last_used > self.ttl]
        for session_id in old:
            await self._close(session_id)
        return old

    async def _close(self, session_id: str) -> None:
        session = self.sessions.pop(session_id, None)
        if session is not None:
            await self.service.release_sandbox(session.held)

    def _session(self, session_id: str) -> McpSession:
        session = self.sessions.get(session_id)
        if session is None:
            raise NotFoundError(
                f"No session {session_id!r}: it was closed, or it expired after "
                f"{self.ttl:g} s without use.",
                hint="list_sessions shows the open ones; open_session makes a new one.",
            )
        session.last_used = time.time()
        return session

    # -- sub-calls from a session -------------------------------------------------------

    async def _answer(self, ctx: Context, items: Sequence[SubcallItem]) -> list[str]:
        """llm_query from a session: the client's model through sampling, else shesha's
        configured sub-model, else an error that says how to get either."""
        if ctx.session.can_send_request and ctx.session.check_client_capability(
            ClientCapabilities(sampling=SamplingCapability())
        ):
            return list(await asyncio.gather(*(self._sample(ctx, item) for item in items)))
        if self.sh.has_model:
            models = await asyncio.to_thread(self.sh.resolve_models)
            return list(
                await asyncio.gather(
                    *(self._sub_model(models.sub, models.sub_model, item) for item in items)
                )
            )
        message = (
            "[llm_query error: no model can answer here. Either let your MCP client answer "
            "(enable sampling in it), or configure a model for shesha (SHESHA_MODEL, "
            "`model` in shesha.toml, or --model local)]"
        )
        return [message] * len(items)

    def _subcall_messages(self, item: SubcallItem) -> tuple[str, str]:
        """The system prompt and the user message of a sub-call, as the engine asks it."""
        system, user = subcall_messages(self._prompts, item, secrets.token_hex(16))
        return str(system["content"]), str(user["content"])

    async def _sample(self, ctx: Context, item: SubcallItem) -> str:
        system, user = self._subcall_messages(item)
        try:
            with warnings.catch_warnings():
                # Sampling mid-call is the 2025-11-25 protocol's; newer clients get the
                # configured sub-model instead (see _answer), so the notice is not for users.
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                result = await ctx.session.create_message(
                    messages=[
                        SamplingMessage(role="user", content=TextContent(type="text", text=user))
                    ],
                    max_tokens=2000,
                    system_prompt=system,
                    related_request_id=ctx.request_id,
                )
        except Exception as e:  # noqa: BLE001  the client's failure goes back to the code as text
            return f"[llm_query error: the MCP client's sampling failed: {e}]"
        content = result.content
        return content.text if isinstance(content, TextContent) else str(content)

    async def _sub_model(self, model: Any, name: str, item: SubcallItem) -> str:
        system, user = self._subcall_messages(item)
        messages: list[Message] = [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
        ]
        try:
            c = await model.complete(messages, model=name)
        except LLMError as e:
            return f"[llm_query error: {str(e).splitlines()[0]}]"
        return str(c.text)

    async def _run(self, ctx: Context, session: McpSession, code: str) -> ExecResult:
        async def subcalls(items: Sequence[SubcallItem]) -> list[str]:
            return await self._answer(ctx, items)

        # No host tools: a session's code has none (the client is the root model).
        return await drive(session.held.sandbox, code, subcalls=subcalls)

    # -- the tools ----------------------------------------------------------------------

    def _register(self) -> None:
        self._register_ask()
        self._register_store()
        self._register_sessions()

    def _register_ask(self) -> None:
        """The one tool where shesha's own model runs the loop."""
        svc, sh, mcp = self.service, self.sh, self.server

        @mcp.tool()
        @said_plainly
        async def ask(
            project: str,
            question: str,
            *,
            ctx: Context,
            model: str | None = None,
            max_iterations: int | None = None,
            conversation: str | None = None,
        ) -> dict[str, Any]:
            """Ask a question about a project's documents; shesha's model runs the whole
            loop. Progress is reported step by step. conversation: "new" starts one (its
            id is in the result); an id asks a follow-up that sees the earlier questions
            and answers and the variables their code defined."""
            given = {"model": model, "max_iterations": max_iterations}
            queued = await svc.submit(
                project,
                question,
                {k: v for k, v in given.items() if v is not None},
                conversation=conversation,
            )
            limit = max_iterations or sh.settings.max_iterations
            try:
                async for record in queued.follow():
                    if said := PROGRESS.get(record["type"]):
                        step = int(record.get("iteration", 0))
                        await ctx.report_progress(step, limit, f"step {step}: {said}")
            except asyncio.CancelledError:
                svc.line.cancel(queued.id)  # the client gave up: so does the query
                raise
            answer = result_json(await queued.wait(), project)
            if queued.conversation is not None:
                answer["conversation"] = queued.conversation.id
            return answer

    def _register_store(self) -> None:
        """What a project holds: add to it, and read its documents and traces."""
        svc, mcp = self.service, self.server

        @mcp.tool()
        @said_plainly
        async def add_documents(project: str, paths: list[str]) -> dict[str, Any]:
            """Parse and store files and directories (recursively) in a project, made if
            it does not exist. Paths must lie where this server may read."""
            return await asyncio.to_thread(svc.add_paths, project, paths)

        @mcp.tool()
        @said_plainly
        async def list_projects() -> list[dict[str, Any]]:
            """Every project: documents, characters, traces."""
            return await asyncio.to_thread(svc.projects)

        @mcp.tool()
        @said_plainly
        async def list_documents(project: str) -> list[dict[str, Any]]:
            """A project's documents: name, format, pages, characters, warnings."""
            return await asyncio.to_thread(svc.documents, project)

        @mcp.tool()
        @said_plainly
        async def read_document(
            project: str, name: str, offset: int = 0, limit: int = TEXT_PAGE
        ) -> dict[str, Any]:
            """A page of a document's parsed text, as the model sees it."""
            page = await asyncio.to_thread(svc.text_page, project, name, offset, limit)
            return {k: v for k, v in page.items() if k != "project"}

        @mcp.tool()
        @said_plainly
        async def list_traces(project: str, last: int = 10) -> list[dict[str, Any]]:
            """A project's query traces, newest first."""
            return await asyncio.to_thread(svc.traces, project, last)

        @mcp.tool()
        @said_plainly
        async def read_trace(project: str, trace: str) -> dict[str, Any]:
            """One trace: its header and every event (code, output, sub-calls, answer)."""
            shown = await asyncio.to_thread(svc.trace, project, trace)
            return {"header": shown["header"], "events": shown["events"]}

    def _register_sessions(self) -> None:
        """REPL sessions: the client is the root model, and holds a sandbox of the line."""
        svc, mcp = self.service, self.server

        @mcp.tool()
        @said_plainly
        async def open_session(project: str) -> dict[str, Any]:
            """A warm sandbox with the project's documents loaded as `context` (a list of
            texts, in `doc_names` order), for you to explore with execute_python. It
            waits its turn in the server's line, and holds a place in it until closed."""
            held = await svc.hold_sandbox(project)
            session = McpSession(secrets.token_hex(8), held)
            self.sessions[session.id] = session
            docs = await asyncio.to_thread(svc.documents, project)
            return {
                **session.info(self.ttl),
                "documents": [d["name"] for d in docs],
                "chars": sum(int(d["chars"]) for d in docs),
            }

        @mcp.tool()
        @said_plainly
        async def execute_python(session_id: str, code: str, ctx: Context) -> dict[str, Any]:
            """Run Python in a session's sandbox: variables persist between calls.
            `llm_query(instruction, content)` asks a model about a piece of text."""
            session = self._session(session_id)
            async with session.lock:
                result = await self._run(ctx, session, code)
            session.last_used = time.time()
            return _text(result)

        @mcp.tool()
        @said_plainly
        async def get_variable(session_id: str, name: str, ctx: Context) -> dict[str, Any]:
            """The repr of a variable in a session (cut to the output limit)."""
            if not name.isidentifier():
                raise ConfigError(f"{name!r} is not a variable name.", hint=IDENTIFIER_HELP)
            session = self._session(session_id)
            async with session.lock:
                result = await self._run(ctx, session, f"print(repr({name}))")
            return {"name": name, **_text(result)}

        @mcp.tool()
        @said_plainly
        async def reset_session(session_id: str) -> dict[str, Any]:
            """Forget a session's variables; its documents stay loaded."""
            session = self._session(session_id)
            async with session.lock:
                await asyncio.to_thread(session.held.sandbox.reset)
            return session.info(self.ttl)

        @mcp.tool()
        @said_plainly
        async def list_sessions() -> list[dict[str, Any]]:
            """The open sessions, and when each expires."""
            return [s.info(self.ttl) for s in self.sessions.values()]

        @mcp.tool()
        @said_plainly
        async def close_session(session_id: str) -> dict[str, Any]:
            """Close a session and give its sandbox back."""
            self._session(session_id)
            await self._close(session_id)
            return {"session_id": session_id, "closed": True}


__all__ = ["McpHub"]
