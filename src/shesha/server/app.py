"""The HTTP API of `shesha serve`: projects, documents, queries streamed as Server-Sent
Events, traces; MCP at /mcp. One long-lived process holds the sandbox pool, the loaded
corpora, LiteLLM and any local model server.

Errors are JSON: ``{"error": message, "hint": hint, "kind": class name}``, with the same
messages and hints as the CLI. With a token, every request but ``GET /api/health`` needs
``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import AsyncIterator, Callable
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
from shesha.server.context import service
from shesha.server.openai_api import router as openai_router
from shesha.server.openai_shape import is_openai_path, reshaped
from shesha.server.security import SameOrigin, SecurityHeaders, TokenGuard, UploadLimit
from shesha.server.web import add_web, error_page
from shesha.service import TEXT_PAGE, QueuedQuery, Service


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


def queued_query(request: Request, query_id: str) -> QueuedQuery:
    queued = service(request).line.get(query_id)
    if queued is None:
        raise NotFoundError(
            f"No query {query_id!r} on this server.", hint="GET /api/queries lists them."
        )
    return queued


router = APIRouter(prefix="/api", responses=ERRORS)


# -- about the server -------------------------------------------------------------------


@router.get("/health")
def health() -> dict[str, Any]:
    """Unauthenticated: only that this is shesha, and its version."""
    return {"service": "shesha", "version": __version__}


@router.get("/status")
def status(request: Request) -> dict[str, Any]:
    return service(request).status()


# -- projects and documents -------------------------------------------------------------


@router.get("/projects")
def list_projects(request: Request) -> dict[str, Any]:
    return {"projects": service(request).projects()}


@router.get("/projects/{name}")
def show_project(request: Request, name: str) -> dict[str, Any]:
    return service(request).project(name)


@router.post("/projects/{name}", status_code=201)
def create_project(request: Request, name: str) -> dict[str, Any]:
    return service(request).create_project(name)


@router.delete("/projects/{name}")
def delete_project(request: Request, name: str) -> dict[str, Any]:
    service(request).delete_project(name)
    return {"deleted": name}


@router.get("/projects/{name}/documents")
def list_documents(request: Request, name: str) -> dict[str, Any]:
    return {"project": name, "docs": service(request).documents(name)}


@router.get("/projects/{name}/documents/{doc:path}/text")
def document_text(
    request: Request, name: str, doc: str, offset: int = 0, limit: int = TEXT_PAGE
) -> dict[str, Any]:
    """A document's parsed text as the model sees it, a page at a time."""
    return service(request).text_page(name, doc, offset, limit)


@router.delete("/projects/{name}/documents/{doc:path}")
def remove_document(request: Request, name: str, doc: str) -> dict[str, Any]:
    service(request).remove_document(name, doc)
    return {"project": name, "removed": doc}


@router.post("/projects/{name}/paths")
def add_paths(request: Request, name: str, body: AddPaths) -> dict[str, Any]:
    """Add files and directories this server may read (its ``--allow-path``)."""
    return service(request).add_paths(name, body.paths, body.password)


@router.post("/projects/{name}/documents")
def upload(
    request: Request,
    name: str,
    files: Annotated[list[UploadFile], File()],
    password: str | None = None,
) -> dict[str, Any]:
    """Add uploaded files, each named by its file name (which may hold a relative path,
    such as ``notes/call.md``, like a file found under a directory)."""
    return service(request).add_uploads(name, ((f.filename or "", f.file) for f in files), password)


# -- queries ----------------------------------------------------------------------------


@router.post("/projects/{name}/queries", status_code=202)
async def ask(request: Request, name: str, body: Ask) -> dict[str, Any]:
    """Start a query; follow it at ``events_url``."""
    queued = await service(request).submit(
        name,
        body.question,
        body.model_dump(exclude_unset=True, exclude=ASK_FIELDS),
        output=body.output_schema,
        conversation=body.conversation,
    )
    return {**queued.summary(), "events_url": f"/api/queries/{queued.id}/events"}


@router.get("/projects/{name}/conversations")
def list_conversations(request: Request, name: str) -> dict[str, Any]:
    return {"conversations": service(request).conversation_list(name)}


@router.get("/projects/{name}/conversations/{conversation_id}")
def show_conversation(request: Request, name: str, conversation_id: str) -> dict[str, Any]:
    return service(request).conversation(name, conversation_id)


@router.get("/queries")
def list_queries(request: Request) -> dict[str, Any]:
    return {"queries": [r.summary() for r in service(request).line.list()]}


@router.get("/queries/{query_id}")
def show_query(request: Request, query_id: str) -> dict[str, Any]:
    return queued_query(request, query_id).summary()


@router.post("/queries/{query_id}/cancel")
async def cancel_query(request: Request, query_id: str) -> dict[str, Any]:
    queued = queued_query(request, query_id)
    service(request).line.cancel(query_id)
    return queued.summary()


@router.get(
    "/queries/{query_id}/events",
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
async def query_events(request: Request, query_id: str, start: int = 0) -> StreamingResponse:
    """Server-Sent Events: every event of the query from ``start`` on, live, ending with
    ``done``, ``cancelled`` or ``failed``. Each event's ``id`` is its index."""
    queued = queued_query(request, query_id)

    async def stream() -> AsyncIterator[str]:
        index = max(0, start)
        async for record in queued.follow(index):
            yield f"id: {index}\nevent: {record['type']}\ndata: {json.dumps(record)}\n\n"
            index += 1

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


# -- traces -----------------------------------------------------------------------------


@router.get("/projects/{name}/traces")
def list_traces(request: Request, name: str, last: int = 10) -> dict[str, Any]:
    s = service(request)
    return {"project": name, "traces": s.traces(name, last), "folder": str(s.traces_folder(name))}


@router.get("/projects/{name}/traces/{trace_name}")
def show_trace(request: Request, name: str, trace_name: str) -> dict[str, Any]:
    return service(request).trace(name, trace_name)


# -- the app ----------------------------------------------------------------------------


async def _shesha_error(request: Request, error: Exception) -> Response:
    """JSON for the API; a page for a person (a browser asking for a page)."""
    assert isinstance(error, SheshaError)
    status = _status(error)
    path = request.url.path
    api = path.startswith("/api/") or is_openai_path(path)
    if not api and "text/html" in request.headers.get("accept", ""):
        return error_page(request, status, type(error).__name__, error.message, error.hint)
    return _error_json(request, status, error_body(error))


def _error_json(
    request: Request, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error as JSON: shesha's shape, or the OpenAI one under ``/v1/``."""
    if is_openai_path(request.url.path):
        body = reshaped(status, body)
    return JSONResponse(body, status_code=status, headers=headers)


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
    return _error_json(request, error.status_code, body, headers)


async def _bad_request(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    first = error.errors()[0] if error.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    said, hint = first.get("msg", "invalid"), "See /api/openapi.json for what each endpoint takes."
    if first.get("type") == "extra_forbidden":
        said = "not an option"
        hint = f"A query takes: {', '.join(sorted(ASK_FIELDS | QUERY_OVERRIDES))}."
    body = {
        "error": f"Invalid request: {where or 'body'}: {said}.",
        "hint": hint,
        "kind": "RequestValidationError",
    }
    # the OpenAI API says 400 for a request it cannot take, whatever the reason
    return _error_json(request, 400 if is_openai_path(request.url.path) else 422, body)


def _document_openai_refusals(app: FastAPI) -> None:
    """The schema says what /v1 does: it refuses a request that does not validate with a
    400 in the OpenAI shape, never FastAPI's 422."""
    made = app.openapi

    def openapi() -> dict[str, Any]:
        document = made()
        for path, operations in document["paths"].items():
            if is_openai_path(path):
                for operation in operations.values():
                    operation["responses"].pop("422", None)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(
    svc: Service,
    *,
    token: str | None = None,
    max_upload_mb: int = 100,
    mcp_app: ASGIApp | None = None,
    mcp_lifespan: Callable[[], contextlib.AbstractAsyncContextManager[None]] | None = None,
) -> ASGIApp:
    """The server over one service (whose roots are the directories "add by path" may
    read from, and whose line runs the queries)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.service = svc
        async with contextlib.AsyncExitStack() as stack:
            if mcp_lifespan is not None:
                await stack.enter_async_context(mcp_lifespan())
            yield
            await svc.shutdown()

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
    app.include_router(openai_router)
    _document_openai_refusals(app)
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
