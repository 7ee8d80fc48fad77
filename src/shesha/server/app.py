"""The HTTP API of `shesha serve`: projects, documents, queries streamed as Server-Sent
Events, traces; MCP at /mcp. One long-lived process holds the sandbox pool, the loaded
corpora, LiteLLM and any local model server.

Errors are JSON: ``{"error": message, "hint": hint, "kind": class name}``, with the same
messages and hints as the CLI. With a token, every request but ``GET /api/health`` needs
``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

from fastapi import APIRouter, FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp

from shesha import __version__
from shesha.api import Shesha
from shesha.config import QUERY_OVERRIDES, Settings
from shesha.errors import (
    AlreadyExists,
    ConfigError,
    Forbidden,
    InvalidName,
    LLMError,
    NotFoundError,
    ParseError,
    SandboxBusyError,
    SandboxUnavailableError,
    SheshaError,
)
from shesha.rlm.output import output_checker
from shesha.rlm.result import QueryResult
from shesha.rlm.trace import read_trace
from shesha.server.context import TRACE_NAME, Served, served
from shesha.server.queries import QueryManager, QueryRun, event_record
from shesha.server.security import (
    SameOrigin,
    SecurityHeaders,
    TokenGuard,
    UploadLimit,
    allowed_path,
    request_overrides,
)
from shesha.server.web import add_web, error_page
from shesha.storage import AddReport, uploads
from shesha.views import (
    conversation_json,
    document_json,
    project_json,
    trace_files,
    trace_json,
)

DEFAULT_PAGE = 100_000


class AddPaths(BaseModel):
    paths: list[str] = Field(min_length=1)
    password: str | None = None


class AskBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1)
    output_schema: dict[str, Any] | None = Field(
        None, description="a JSON schema the answer must match (result.output)"
    )
    conversation: str | None = Field(
        None,
        description='"new" starts a conversation; its id (in the reply) asks a follow-up',
        max_length=64,
    )


def _query_options() -> dict[str, Any]:
    """Each per-query override, as the settings declare it (type, bounds, description)."""
    options: dict[str, Any] = {}
    for name in sorted(QUERY_OVERRIDES):
        declared = Settings.model_fields[name]
        field = copy.copy(declared)
        field.default = None
        options[name] = (Optional[declared.annotation], field)  # noqa: UP045  a runtime type
    return options


Ask = create_model(
    "Ask",
    __base__=AskBase,
    __doc__="A question, and any per-query overrides (model, limits...).",
    **_query_options(),
)
ASK_FIELDS = set(AskBase.model_fields)


class ErrorBody(BaseModel):
    """What every refusal and failure of the API says."""

    error: str
    hint: str | None = None
    kind: str


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": said}
    for status, said in (
        (400, "an invalid request: a name, an option or a value the server refuses"),
        (401, "no token, or the wrong one (a server with a token)"),
        (
            403,
            "refused: a path outside the allowed folders, a setting a request may not "
            "change, or a request from another site",
        ),
        (404, "no such project, document, trace or query"),
        (409, "the project exists already"),
        (413, "the request is larger than the server accepts"),
        (421, "a host name this loopback-only server does not answer for"),
        (422, "a request that does not match this schema, or a file that cannot be parsed"),
        (502, "the model's endpoint failed"),
        (503, "no sandbox is free, or none can be started"),
    )
}


def _status(error: SheshaError) -> int:
    for kind, status in (
        (NotFoundError, 404),
        (Forbidden, 403),
        (ConfigError, 400),
        (InvalidName, 400),
        (AlreadyExists, 409),
        (ParseError, 422),
        (SandboxBusyError, 503),
        (SandboxUnavailableError, 503),
        (LLMError, 502),
    ):
        if isinstance(error, kind):
            return status
    return 500


def error_body(error: SheshaError) -> dict[str, Any]:
    return {"error": error.message, "hint": error.hint, "kind": type(error).__name__}


def get_run(request: Request, run_id: str) -> QueryRun:
    run = served(request).manager.get(run_id)
    if run is None:
        raise NotFoundError(
            f"No query {run_id!r} on this server.", hint="GET /api/queries lists them."
        )
    return run


router = APIRouter(prefix="/api", responses=ERRORS)


# -- about the server -------------------------------------------------------------------


@router.get("/health")
def health() -> dict[str, Any]:
    """Unauthenticated: only that this is shesha, and its version."""
    return {"service": "shesha", "version": __version__}


@router.get("/status")
def status(request: Request) -> dict[str, Any]:
    s = served(request)
    runs = s.manager.list()
    return {
        "service": "shesha",
        "version": __version__,
        "home": str(s.sh.store.home),
        "model": s.sh.model_name,
        "slots": s.manager.slots,
        "running": sum(1 for r in runs if r.state == "running"),
        "waiting": s.manager.waiting(),
        "pool": s.sh.pool_stats(),
    }


# -- projects and documents -------------------------------------------------------------


@router.get("/projects")
def list_projects(request: Request) -> dict[str, Any]:
    sh = served(request).sh
    return {"projects": [project_json(sh.store.get(n)) for n in sh.projects()]}


@router.get("/projects/{name}")
def show_project(request: Request, name: str) -> dict[str, Any]:
    p = served(request).sh.get_project(name)
    return {**project_json(p.stored), "docs": [document_json(d) for d in p.documents()]}


@router.post("/projects/{name}", status_code=201)
def create_project(request: Request, name: str) -> dict[str, Any]:
    return project_json(served(request).sh.project(name).stored)


@router.delete("/projects/{name}")
def delete_project(request: Request, name: str) -> dict[str, Any]:
    served(request).sh.delete_project(name)
    return {"deleted": name}


@router.get("/projects/{name}/documents")
def list_documents(request: Request, name: str) -> dict[str, Any]:
    docs = served(request).sh.get_project(name).documents()
    return {"project": name, "docs": [document_json(d) for d in docs]}


@router.get("/projects/{name}/documents/{doc:path}/text")
def document_text(
    request: Request, name: str, doc: str, offset: int = 0, limit: int = DEFAULT_PAGE
) -> dict[str, Any]:
    """A document's parsed text as the model sees it, a page at a time."""
    text = served(request).sh.get_project(name).text(doc)
    offset, limit = max(0, offset), max(1, min(limit, 10 * DEFAULT_PAGE))
    page = text[offset : offset + limit]
    end = offset + len(page)
    return {
        "project": name,
        "name": doc,
        "offset": offset,
        "text": page,
        "total_chars": len(text),
        "next_offset": end if end < len(text) else None,
    }


@router.delete("/projects/{name}/documents/{doc:path}")
def remove_document(request: Request, name: str, doc: str) -> dict[str, Any]:
    served(request).sh.get_project(name).remove(doc)
    return {"project": name, "removed": doc}


def add_json(sh: Shesha, name: str, report: AddReport) -> dict[str, Any]:
    docs = {d.name: d for d in sh.get_project(name).documents()}
    return {
        **report.model_dump(mode="json"),
        "docs": [document_json(docs[d.name]) for d in report.stored if d.name in docs],
    }


@router.post("/projects/{name}/paths")
def add_paths(request: Request, name: str, body: AddPaths) -> dict[str, Any]:
    """Add files and directories this server may read (its ``--allow-path``)."""
    s = served(request)
    paths = [allowed_path(p, s.roots) for p in body.paths]
    report = s.sh.project(name).add(paths, password=body.password, roots=s.roots)
    return add_json(s.sh, name, report)


@router.post("/projects/{name}/documents")
def upload(
    request: Request,
    name: str,
    files: Annotated[list[UploadFile], File()],
    password: str | None = None,
) -> dict[str, Any]:
    """Add uploaded files, each named by its file name (which may hold a relative path,
    such as ``notes/call.md``, like a file found under a directory)."""
    sh = served(request).sh
    with tempfile.TemporaryDirectory(prefix="shesha-upload-") as tmp:
        refused = uploads.stage(((f.filename or "", f.file) for f in files), Path(tmp))
        report = sh.project(name).add([tmp], password=password)
    report.failed[:0] = refused
    return add_json(sh, name, report)


# -- queries ----------------------------------------------------------------------------


@router.post("/projects/{name}/queries", status_code=202)
async def ask(request: Request, name: str, body: Ask) -> dict[str, Any]:
    """Start a query; follow it at ``events_url``."""
    s = served(request)
    overrides = request_overrides(
        body.model_dump(exclude_unset=True, exclude=ASK_FIELDS),
        s.sh.settings,
    )
    s.sh.query_settings(**overrides)  # an unknown or invalid option fails here, with a 400
    project = await asyncio.to_thread(s.sh.get_project, name)  # a missing one: a 404
    if body.output_schema is not None:
        output_checker(body.output_schema)  # an invalid schema fails here, with a 400
    conv = None
    if body.conversation is not None:  # an unknown one fails here, with a 404
        given = None if body.conversation == "new" else body.conversation
        conv = await asyncio.to_thread(s.conversations.get, project, given)
    run = s.manager.submit(
        name, body.question, overrides, output=body.output_schema, conversation=conv
    )
    return {**run.summary(), "events_url": f"/api/queries/{run.id}/events"}


@router.get("/projects/{name}/conversations")
def list_conversations(request: Request, name: str) -> dict[str, Any]:
    project = served(request).sh.get_project(name)
    return {"conversations": [conversation_json(r) for r in project.conversations()]}


@router.get("/projects/{name}/conversations/{conversation_id}")
def show_conversation(request: Request, name: str, conversation_id: str) -> dict[str, Any]:
    project = served(request).sh.get_project(name)
    return conversation_json(project.chat(conversation_id).record)


@router.get("/queries")
def list_queries(request: Request) -> dict[str, Any]:
    return {"queries": [r.summary() for r in served(request).manager.list()]}


@router.get("/queries/{run_id}")
def show_query(request: Request, run_id: str) -> dict[str, Any]:
    return get_run(request, run_id).summary()


@router.post("/queries/{run_id}/cancel")
async def cancel_query(request: Request, run_id: str) -> dict[str, Any]:
    run = get_run(request, run_id)
    served(request).manager.cancel(run_id)
    return run.summary()


@router.get(
    "/queries/{run_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "text/event-stream": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "string", "description": "the event's index"},
                            "event": {"type": "string", "description": "its type"},
                            "data": {"type": "string", "description": "the event as JSON"},
                        },
                        "required": ["id", "event", "data"],
                    }
                }
            },
            "description": "the query's events, one Server-Sent Event each",
        }
    },
)
async def query_events(request: Request, run_id: str, start: int = 0) -> StreamingResponse:
    """Server-Sent Events: every event of the query from ``start`` on, live, ending with
    ``done``, ``cancelled`` or ``failed``. Each event's ``id`` is its index."""
    run = get_run(request, run_id)

    async def stream() -> AsyncIterator[str]:
        index = max(0, start)
        async for record in run.follow(index):
            yield f"id: {index}\nevent: {record['type']}\ndata: {json.dumps(record)}\n\n"
            index += 1

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


# -- traces -----------------------------------------------------------------------------


@router.get("/projects/{name}/traces")
def list_traces(request: Request, name: str, last: int = 10) -> dict[str, Any]:
    p = served(request).sh.get_project(name)
    rows = [trace_json(f) for f in trace_files(p.stored, max(1, last))]
    return {"project": name, "traces": rows, "folder": str(p.stored.traces_dir)}


@router.get("/projects/{name}/traces/{trace_name}")
def show_trace(request: Request, name: str, trace_name: str) -> dict[str, Any]:
    p = served(request).sh.get_project(name)
    path = p.stored.traces_dir / trace_name
    if not TRACE_NAME.match(trace_name) or not path.is_file():
        raise NotFoundError(f"Project {name!r} has no trace {trace_name!r}.")
    trace = read_trace(path)
    return {
        "project": name,
        "name": trace_name,
        "header": trace.header.model_dump(mode="json") if trace.header else None,
        "events": [event_record(e) for e in trace.events],
    }


# -- the app ----------------------------------------------------------------------------


async def _shesha_error(request: Request, error: Exception) -> Response:
    """JSON for the API; a page for a person (a browser asking for a page)."""
    assert isinstance(error, SheshaError)
    status = _status(error)
    if not request.url.path.startswith("/api/") and "text/html" in request.headers.get(
        "accept", ""
    ):
        return error_page(request, status, type(error).__name__, error.message, error.hint)
    return JSONResponse(error_body(error), status_code=status)


async def _http_error(request: Request, error: Exception) -> Response:
    """Starlette's own refusals (no such route, a method a path does not take, a body
    that is not JSON) in the API's error shape; a 405 lists every method of the path."""
    assert isinstance(error, StarletteHTTPException)
    headers = dict(error.headers or {})
    if error.status_code == 405:
        methods: set[str] = set()
        for route in request.app.router.routes:
            match, _ = route.matches({**request.scope, "method": "GET"})
            if match != Match.NONE and isinstance(route, APIRoute):
                methods |= route.methods or set()
        headers["Allow"] = ", ".join(sorted(methods))
    said = {
        404: "No such page or endpoint.",
        405: f"{request.method} is not a method of this path.",
    }
    body = {
        "error": said.get(error.status_code, str(error.detail)),
        "hint": "See /api/openapi.json for what each endpoint takes.",
        "kind": type(error).__name__ if error.status_code >= 500 else "HTTPError",
    }
    return JSONResponse(body, status_code=error.status_code, headers=headers)


async def _bad_request(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    first = error.errors()[0] if error.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    said, hint = first.get("msg", "invalid"), "See /api/openapi.json for what each endpoint takes."
    if first.get("type") == "extra_forbidden":
        said = "not an option"
        hint = f"A query takes: {', '.join(sorted(ASK_FIELDS | QUERY_OVERRIDES))}."
    return JSONResponse(
        {
            "error": f"Invalid request: {where or 'body'}: {said}.",
            "hint": hint,
            "kind": "RequestValidationError",
        },
        status_code=422,
    )


def create_app(
    sh: Shesha,
    *,
    token: str | None = None,
    allow_paths: Sequence[Path] = (),
    max_upload_mb: int = 100,
    slots: int | None = None,
    mcp_app: ASGIApp | None = None,
    mcp_lifespan: Callable[[], contextlib.AbstractAsyncContextManager[None]] | None = None,
) -> ASGIApp:
    """The server for one Shesha. ``allow_paths``: the directories "add by path" may read
    from. ``slots``: queries run at once (default: the sandbox pool's size)."""
    roots = [Path(p).expanduser().resolve() for p in allow_paths]

    async def run_query(run: QueryRun) -> QueryResult:
        if run.conversation is not None:
            return await run.conversation.aask(
                run.question, on_event=run.publish, output=run.output, **run.overrides
            )
        project = await asyncio.to_thread(sh.get_project, run.project)
        return await project.aquery(
            run.question, on_event=run.publish, output=run.output, **run.overrides
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        manager = QueryManager(run_query, slots or sh.settings.pool_size)
        app.state.served = Served(sh, manager, roots)
        async with contextlib.AsyncExitStack() as stack:
            if mcp_lifespan is not None:
                await stack.enter_async_context(mcp_lifespan())
            yield
            await manager.shutdown()

    app = FastAPI(
        title="shesha",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # its viewer would load code from a CDN into this origin
        openapi_url="/api/openapi.json",
        redoc_url=None,
    )
    app.add_exception_handler(SheshaError, _shesha_error)
    app.add_exception_handler(RequestValidationError, _bad_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.include_router(router)
    add_web(app, token)
    if mcp_app is not None:
        app.mount("/mcp", mcp_app)
    guarded = TokenGuard(
        UploadLimit(app, max_upload_mb * 1024 * 1024),
        token,
        open_paths=("/api/health", "/login", "/static/"),
    )
    # Without a token the server listens on loopback only, and a Host that is not
    # loopback is DNS rebinding; with one, it may be reached by any name.
    return SecurityHeaders(SameOrigin(guarded, loopback_only=token is None))
