"""An OpenAI-compatible chat API on `shesha serve`: ``GET /v1/models`` and
``POST /v1/chat/completions``, so that the ``openai`` SDK, LiteLLM and chat front-ends
ask a project as if it were a model named ``shesha/<project>``.

A translation over the service, like the REST routes: the question waits in the same
line, under the same limits. The last user message is the question; the earlier user
and assistant turns find or start the conversation they continue
(``OpenConversations.following``), so a follow-up runs in the namespace its earlier
questions built. System messages are the client's own and are not passed on.

``stream: true`` sends each step's progress as ``reasoning_content`` and the answer as
``content``; the last chunk carries the usage, and shesha's own figures under
``"shesha"``. A client that goes away mid-stream cancels its query.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from shesha.conversation import Turn
from shesha.errors import ConfigError, NotFoundError, SheshaError
from shesha.rlm.result import QueryResult
from shesha.server.context import service
from shesha.server.openai_shape import openai_error
from shesha.service import QueuedQuery, Service

PREFIX = "shesha/"
"""Each project is the model ``shesha/<project>``."""
SPOKEN = {"user", "assistant"}
"""The roles whose messages are the conversation; system and developer messages are the
client's instructions to a model, and are left out."""
UNSPOKEN = {"system", "developer"}


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[TextPart] | None = None


class ChatRequest(BaseModel):
    """The OpenAI chat request; sampling options (temperature, top_p, ...) are accepted
    and ignored: shesha's root model runs with its own."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    n: int | None = None
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    shesha: dict[str, Any] | None = Field(
        None, description="per-query options: model, max_iterations, max_cost_usd..."
    )


class Asked(BaseModel):
    """A chat request, read: which project, the question, and the turns before it."""

    project: str
    question: str
    earlier: list[Turn]
    output: dict[str, Any] | None


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str


class OpenAIError(BaseModel):
    """What every refusal and failure under /v1 says (the OpenAI shape)."""

    error: ErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIError, "description": said}
    for status, said in (
        (400, "a request shesha cannot take: its messages, options or response format"),
        (401, "no token, or the wrong one (a server with a token)"),
        (403, "an option a request may not set, or a request from another site"),
        (404, "no such model (project)"),
        (413, "the request is larger than the server accepts"),
        (421, "a host name this loopback-only server does not answer for"),
        (502, "the query failed: the model's endpoint, or its sandbox"),
        (503, "no sandbox is free, or none can be started"),
    )
}

router = APIRouter(prefix="/v1", responses=ERRORS)


@router.get("/models")
def list_models(request: Request) -> dict[str, Any]:
    """Every project, as a model."""
    return {"object": "list", "data": [_model(n) for n in service(request).project_names()]}


@router.get("/models/{model:path}")
def show_model(request: Request, model: str) -> dict[str, Any]:
    name = project_of(model)
    service(request).project(name)  # NotFoundError for an unknown one
    return _model(name)


@router.post("/chat/completions", response_model=None)
async def chat_completions(request: Request, body: ChatRequest) -> Response:
    svc = service(request)
    asked = read_request(body)
    queued = await svc.submit(
        asked.project,
        asked.question,
        body.shesha or {},
        output=asked.output,
        earlier=asked.earlier,
    )
    if body.stream:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        chunks = _stream(svc, queued, body.model)
        return StreamingResponse(chunks, media_type="text/event-stream", headers=headers)
    result = await queued.wait()
    if (failed := failure_of(result)) is not None:
        return JSONResponse(failed, status_code=502)
    return JSONResponse(completion(queued, result, body.model))


# -- reading a request ------------------------------------------------------------------


def project_of(model: str) -> str:
    if not model.startswith(PREFIX) or len(model) == len(PREFIX):
        raise NotFoundError(
            f"No model {model!r} on this server: its models are named shesha/<project>.",
            hint="GET /v1/models lists them.",
        )
    return model[len(PREFIX) :]


def read_request(body: ChatRequest) -> Asked:
    """The project, question, earlier turns and output schema of a chat request; a
    ConfigError names what it holds that shesha cannot take."""
    if body.n not in (None, 1):
        raise ConfigError("n: shesha gives one answer per request.", hint="Leave n unset or 1.")
    if body.tools:
        raise ConfigError(
            "tools: shesha does not call a client's tools.",
            hint="Leave tools out; the project's documents are what it reads.",
        )
    said = [(m.role, text_of(m, i)) for i, m in enumerate(body.messages) if m.role not in UNSPOKEN]
    if unknown := sorted({role for role, _ in said} - SPOKEN):
        raise ConfigError(
            f"messages: shesha takes user, assistant and system messages, not {unknown[0]!r}.",
            hint="Send the conversation as user and assistant turns.",
        )
    if not said or said[-1][0] != "user":
        raise ConfigError(
            "messages: the last message must be the user's question.",
            hint="End messages with {'role': 'user', 'content': ...}.",
        )
    turns = _turns(said)
    question, _ = turns.pop()
    return Asked(
        project=project_of(body.model),
        question=question,
        earlier=turns,
        output=output_schema(body.response_format),
    )


def text_of(message: ChatMessage, index: int) -> str:
    content = message.content
    if content is None or isinstance(content, str):
        return content or ""
    if other := [p.type for p in content if p.type != "text"]:
        raise ConfigError(
            f"messages[{index}].content: shesha reads text parts, not {other[0]!r}.",
            hint="Add images and files to the project (`shesha add`), and ask in text.",
        )
    return "\n".join(p.text or "" for p in content)


def _turns(said: Sequence[tuple[str, str]]) -> list[Turn]:
    """User and assistant messages as (question, answer) turns: messages of one role in
    a row are one message; the last turn's answer is empty (it is the question)."""
    turns: list[Turn] = []
    for role, text in said:
        if role == "user":
            if turns and not turns[-1][1]:
                turns[-1] = (f"{turns[-1][0]}\n\n{text}", "")
            else:
                turns.append((text, ""))
        elif turns:
            question, answer = turns[-1]
            turns[-1] = (question, f"{answer}\n\n{text}" if answer else text)
        # an assistant message before any question answers nothing, and is left out
    return turns


def output_schema(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema a ``response_format`` asks the answer to match."""
    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        schema = (response_format or {}).get("json_schema", {}).get("schema")
        if isinstance(schema, dict):
            return schema
        raise ConfigError(
            "response_format.json_schema.schema: a JSON schema (an object) is needed.",
            hint='Send {"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}.',
        )
    raise ConfigError(
        f"response_format.type: {kind!r} is not one of text, json_object, json_schema.",
        hint="Leave response_format out for a text answer.",
    )


# -- answering --------------------------------------------------------------------------


def _model(name: str) -> dict[str, Any]:
    return {"id": PREFIX + name, "object": "model", "created": 0, "owned_by": "shesha"}


def content_of(result: QueryResult) -> str:
    """The answer as the client gets it: the typed value as JSON when one was asked for."""
    if result.output is not None:
        value = result.output
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        return json.dumps(value, ensure_ascii=False)
    return result.answer or ""


def failure_of(result: QueryResult) -> dict[str, Any] | None:
    """A query that failed without an answer (the model's endpoint, the sandbox), as an
    OpenAI error; None for one that answered, or that a limit stopped."""
    if result.status != "error" or result.answer:
        return None
    said = result.error or "the query failed"
    return openai_error(502, f"The query failed: {said}", None, "QueryFailed")


def finish_reason(result: QueryResult) -> Literal["stop", "length"]:
    return "stop" if result.status == "success" else "length"


def usage_of(result: QueryResult) -> dict[str, Any]:
    u = result.usage
    prompt = u.root.prompt_tokens + u.sub.prompt_tokens
    completion_tokens = u.root.completion_tokens + u.sub.completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
    }


def shesha_of(queued: QueuedQuery, result: QueryResult) -> dict[str, Any]:
    """shesha's own figures about the query, beside the OpenAI ones."""
    return {
        "query": queued.id,
        "conversation": queued.conversation.id if queued.conversation else None,
        "status": result.status,
        "error": result.error,
        "steps": result.iterations,
        "subcalls": result.subcalls,
        "cost_usd": result.usage.total_cost_usd,
        "duration_s": result.duration_s,
        "trace": result.trace_path.rsplit("/", 1)[-1] if result.trace_path else None,
        "citations": [c.model_dump(mode="json") for c in result.citations],
    }


def completion(queued: QueuedQuery, result: QueryResult, model: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": content_of(result)}
    return {
        "id": f"chatcmpl-{queued.id}",
        "object": "chat.completion",
        "created": int(queued.created),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(result)}],
        "usage": usage_of(result),
        "shesha": shesha_of(queued, result),
    }


def _first_line(text: str) -> str:
    return next((ln for ln in text.splitlines() if ln.strip()), "")


_SAID: dict[str, Callable[[dict[str, Any]], str]] = {
    "queued": lambda r: f"waiting for a sandbox: position {r['position']} in line",
    "strategy": lambda r: f"strategy: {r['strategy']} ({r['reason']})",
    "llm_request": lambda r: f"step {r['iteration']}: asking the model",
    "code": lambda r: f"step {r['iteration']}: running code: {_first_line(r['code'])[:100]}",
    "subcall_request": lambda r: (
        f"step {r['iteration']}: sub-call on {r['content_chars']:,} characters"
    ),
    "passages": lambda r: f"reading {len(r['passages'])} passages ({r['chars']:,} characters)",
    "counted": lambda r: f"counted {r['phrase']!r}: {r['total']}",
    "mapped": lambda r: (
        f"labelled {r['records']:,} records ({r['distinct']:,} distinct): "
        + ", ".join(f"{label} {n:,}" for label, n in r["counts"])
    ),
    "limit": lambda r: f"step {r['iteration']}: limit: {_first_line(r['message'])}",
    "warning": lambda r: f"step {r['iteration']}: warning: {_first_line(r['message'])}",
    "error": lambda r: f"step {r['iteration']}: error: {_first_line(r['error'])}",
}
"""What a person following a query reads of each kind of event (the others say
nothing new)."""


def progress_line(record: dict[str, Any]) -> str | None:
    """An event of the query as a line of its reasoning, or None."""
    said = _SAID.get(record["type"])
    return said(record) if said is not None else None


def _data(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


async def _stream(svc: Service, queued: QueuedQuery, model: str) -> AsyncIterator[str]:
    """The query as chat-completion chunks, then ``[DONE]``."""

    def chunk(delta: dict[str, Any], finish: str | None = None, **more: Any) -> str:
        return _data(
            {
                "id": f"chatcmpl-{queued.id}",
                "object": "chat.completion.chunk",
                "created": int(queued.created),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **more,
            }
        )

    try:
        yield chunk({"role": "assistant", "content": ""})
        async for record in queued.follow():
            if (line := progress_line(record)) is not None:
                yield chunk({"reasoning_content": line + "\n"})
        try:
            result = await queued.wait()
        except Exception as e:  # noqa: BLE001  the stream has begun: an error chunk says why
            said, hint = (e.message, e.hint) if isinstance(e, SheshaError) else (str(e), None)
            yield _data(openai_error(500, said, hint, type(e).__name__))
        else:
            if (failed := failure_of(result)) is not None:
                yield _data(failed)
            else:
                yield chunk({"content": content_of(result)})
                usage, figures = usage_of(result), shesha_of(queued, result)
                yield chunk({}, finish_reason(result), usage=usage, shesha=figures)
        yield "data: [DONE]\n\n"
    finally:
        if not queued.done:  # the client went away: nobody will read the answer
            svc.line.cancel(queued.id)
