"""OpenTelemetry export of each query as a span tree, for Arize Phoenix, Langfuse, Jaeger
or any OTLP receiver: query → strategy → root-model calls, code runs (→ their sub-calls
and tool calls).

The JSONL trace stays the record of truth; this is an export, made once a query has
ended, from its events (each span keeps the times the events recorded). It hands the
spans to a batch processor with a bounded queue, which sends them from its own thread:
a receiver that is slow, down or refusing never slows or fails a query; spans past the
queue are dropped.

Attributes follow the OpenTelemetry GenAI conventions (``gen_ai.*``) and OpenInference's
(``openinference.span.kind``, ``llm.token_count.*``), so that both kinds of tools read
them. Document text, prompts, code and outputs (``input.value`` and ``output.value``)
are left out unless ``otel_content`` is on. No key, token or endpoint address is ever an
attribute.

The OpenTelemetry SDK is the optional extra ``shesha[otel]``; it is imported only when
an endpoint is set.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from shesha import __version__
from shesha.errors import ConfigError
from shesha.rlm.events import (
    CodeRun,
    ExecDone,
    Failed,
    LimitHit,
    LLMRequest,
    LLMResponse,
    StrategyChosen,
    SubcallRequest,
    SubcallResponse,
    Summary,
    ToolCalled,
    TraceEvent,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

QUEUE_SPANS = 4096
"""Spans waiting to be sent, at most; past that they are dropped, never waited for."""
PROJECT_ATTRIBUTE = "openinference.project.name"
"""The project Phoenix files the spans under: the service's name (``shesha``); each
span's ``shesha.project`` names shesha's project."""


class QueryTelemetry(Protocol):
    """Where a finished query's events go, beside its trace."""

    def export(self, query: QueryFacts, events: Sequence[TraceEvent]) -> None: ...

    def close(self) -> None:
        """Send what is queued, and stop."""
        ...


@dataclass(frozen=True)
class QueryFacts:
    """What a query's events do not say themselves."""

    question: str
    project: str | None
    trace: str | None
    started: float


def otlp_traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces address of a receiver: ``endpoint`` as given when it names
    ``/v1/traces``, else that path under it (as ``OTEL_EXPORTER_OTLP_ENDPOINT`` means)."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else f"{base}/v1/traces"


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


class OtelTelemetry:
    """Exports each query's span tree through ``exporter`` (OTLP/HTTP for an endpoint;
    any OpenTelemetry ``SpanExporter``, such as the SDK's in-memory one, in tests)."""

    def __init__(
        self, exporter: SpanExporter, *, content: bool = False, service: str = "shesha"
    ) -> None:
        try:
            from opentelemetry.sdk.resources import Resource  # noqa: PLC0415  the extra
            from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
            from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
        except ImportError as e:
            raise ConfigError(
                "Exporting OpenTelemetry traces needs the OpenTelemetry SDK.",
                hint="pip install 'shesha[otel]', or unset otel_endpoint.",
            ) from e
        resource = Resource.create(
            {"service.name": service, "service.version": __version__, PROJECT_ATTRIBUTE: service}
        )
        self.content = content
        self._provider: TracerProvider = TracerProvider(resource=resource)
        self._provider.add_span_processor(
            BatchSpanProcessor(exporter, max_queue_size=QUEUE_SPANS, schedule_delay_millis=500)
        )
        self._tracer: Tracer = self._provider.get_tracer("shesha", __version__)

    @classmethod
    def to_endpoint(cls, endpoint: str, *, content: bool = False) -> OtelTelemetry:
        """OTLP over HTTP (protobuf) to a receiver's address."""
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
                OTLPSpanExporter,
            )
        except ImportError as e:
            raise ConfigError(
                f"Exporting OpenTelemetry traces to {endpoint} needs the OTLP exporter.",
                hint="pip install 'shesha[otel]', or unset otel_endpoint.",
            ) from e
        return cls(
            OTLPSpanExporter(endpoint=otlp_traces_url(endpoint), timeout=10), content=content
        )

    def export(self, query: QueryFacts, events: Sequence[TraceEvent]) -> None:
        _SpanTree(self._tracer, self.content, query).build(events)

    def close(self) -> None:
        self._provider.shutdown()  # sends what is queued (bounded by the exporter's timeout)


class _SpanTree:
    """One query's events as spans, in the order they happened."""

    def __init__(self, tracer: Tracer, content: bool, query: QueryFacts) -> None:
        self.tracer, self.content, self.query = tracer, content, query
        self.root: Span | None = None
        self.strategy: Span | None = None
        self.code: Span | None = None
        self.asked: dict[int, LLMRequest] = {}
        self.subcalls: dict[str, deque[Span]] = defaultdict(deque)

    def _start(self, name: str, parent: Span | None, at: float, **attributes: Any) -> Span:
        from opentelemetry import trace  # noqa: PLC0415  the extra, loaded by OtelTelemetry
        from opentelemetry.context import Context  # noqa: PLC0415

        # the root starts a trace of its own, whatever span the host has open
        context = trace.set_span_in_context(parent) if parent is not None else Context()
        clean = {k: v for k, v in attributes.items() if v is not None}
        return self.tracer.start_span(name, context=context, start_time=_ns(at), attributes=clean)

    def _content(self, span: Span, given: str | None, produced: str | None) -> None:
        if self.content:
            if given is not None:
                span.set_attribute("input.value", given)
            if produced is not None:
                span.set_attribute("output.value", produced)

    def _error(self, said: str | None, kind: str) -> str:
        """An error's words, which may quote the documents or the code's data: only with
        content; else its kind."""
        return (said or kind) if self.content else kind

    def _parent(self) -> Span | None:
        return self.strategy or self.root

    def build(self, events: Sequence[TraceEvent]) -> None:
        q = self.query
        self.root = self._start(
            "shesha.query",
            None,
            q.started,
            **{
                "openinference.span.kind": "AGENT",
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "shesha",
                "shesha.project": q.project,
                "shesha.trace": q.trace,
            },
        )
        self._content(self.root, q.question, None)
        for event in events:
            self._on(event)
        if self.root.is_recording():  # no summary: the query did not end normally
            self._end_all(events[-1].ts if events else q.started)

    def _on(self, e: TraceEvent) -> None:  # noqa: PLR0912  one case per kind of event
        match e:
            case StrategyChosen():
                self.strategy = self._start(
                    f"strategy {e.strategy}",
                    self.root,
                    e.ts,
                    **{
                        "openinference.span.kind": "CHAIN",
                        "shesha.strategy": e.strategy,
                        "shesha.strategy.reason": e.reason,
                    },
                )
            case LLMRequest():
                self.asked[e.iteration] = e
            case LLMResponse():
                self._root_call(e)
            case CodeRun():
                self.code = self._start(
                    f"code {e.iteration}.{e.block}",
                    self._parent(),
                    e.ts,
                    **{"openinference.span.kind": "TOOL", "tool.name": "python"},
                )
                self._content(self.code, e.code, None)
            case ExecDone():
                self._code_done(e)
            case SubcallRequest():
                self._subcall(e)
            case SubcallResponse():
                self._subcall_done(e)
            case ToolCalled():
                self._tool(e)
            case LimitHit():
                if self.root is not None:
                    said = {"message": e.message} if self.content else {}
                    self.root.add_event("limit", {"shesha.limit": e.limit, **said})
            case Failed():
                if self.root is not None:
                    said = {"message": e.error} if self.content else {}
                    self.root.add_event("error", {"error.type": e.kind, **said})
            case Summary():
                self._summary(e)
            case _:
                pass  # nudges, warnings, passages, citations: in the JSONL trace only

    def _root_call(self, e: LLMResponse) -> None:
        asked = self.asked.pop(e.iteration, None)
        began = asked.ts if asked is not None else e.ts - (e.duration_ms or 0) / 1000
        model = asked.model if asked is not None else None
        span = self._start(
            f"chat {model}" if model else "chat",
            self._parent(),
            began,
            **_llm_attributes(model, e.prompt_tokens, e.completion_tokens, e.cost_usd),
            **{"shesha.step": e.iteration, "shesha.call": "root"},
        )
        given = json.dumps(asked.messages, ensure_ascii=False) if asked is not None else None
        self._content(span, given, e.text)
        span.end(end_time=_ns(e.ts))

    def _code_done(self, e: ExecDone) -> None:
        if self.code is None:
            return
        from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415

        self.code.set_attributes(
            {
                "shesha.exec.status": e.status,
                "shesha.exec.cpu_s": e.cpu_s,
                "shesha.exec.peak_memory_mb": e.peak_memory_mb,
                "shesha.exec.subcalls": e.subcalls,
            }
        )
        if e.status != "ok":
            self.code.set_status(Status(StatusCode.ERROR, self._error(e.error, e.status)))
        self._content(self.code, None, e.stdout + (f"\n{e.stderr}" if e.stderr else ""))
        self.code.end(end_time=_ns(e.ts))
        self.code = None

    def _subcall(self, e: SubcallRequest) -> None:
        span = self._start(
            f"llm_query {e.model}",
            self.code or self._parent(),
            e.ts,
            **_llm_attributes(e.model, None, None, None),
            **{"shesha.call": "sub", "shesha.subcall.chars": e.content_chars},
        )
        self._content(span, f"{e.instruction}\n\n{e.content_preview}", None)
        self.subcalls[e.key].append(span)

    def _subcall_done(self, e: SubcallResponse) -> None:
        waiting = self.subcalls.get(e.key)
        if not waiting:
            return
        from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415

        span = waiting.popleft()
        span.set_attributes(_tokens(e.prompt_tokens, e.completion_tokens, e.cost_usd))
        span.set_attribute("shesha.subcall.cached", e.cached)
        if e.error is not None:
            span.set_status(Status(StatusCode.ERROR, self._error(e.error, "sub-call failed")))
        self._content(span, None, e.text)
        span.end(end_time=_ns(e.ts))

    def _tool(self, e: ToolCalled) -> None:
        from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415

        began = e.ts - (e.duration_ms or 0) / 1000
        span = self._start(
            f"tool {e.name}",
            self.code or self._parent(),
            began,
            **{"openinference.span.kind": "TOOL", "tool.name": e.name, "shesha.tool.ok": e.ok},
        )
        if not e.ok:
            span.set_status(Status(StatusCode.ERROR, self._error(e.error, "tool failed")))
        self._content(span, e.arguments, e.result)
        span.end(end_time=_ns(e.ts))

    def _summary(self, e: Summary) -> None:
        if self.root is None:
            return
        from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415

        u = e.usage
        self.root.set_attributes(
            {
                **_tokens(
                    u.root.prompt_tokens + u.sub.prompt_tokens,
                    u.root.completion_tokens + u.sub.completion_tokens,
                    u.total_cost_usd,
                ),
                "shesha.status": e.status,
                "shesha.steps": e.iterations,
                "shesha.subcalls": e.subcalls,
                "shesha.tool_calls": e.tool_calls,
                **({"shesha.limit": e.limit} if e.limit else {}),
            }
        )
        if e.status == "error":
            self.root.set_status(Status(StatusCode.ERROR, self._error(e.error, "error")))
        else:
            self.root.set_status(Status(StatusCode.OK))
        self._content(self.root, None, e.answer)
        self._end_all(e.ts)

    def _end_all(self, at: float) -> None:
        for span in (self.code, self.strategy, self.root):
            if span is not None and span.is_recording():
                span.end(end_time=_ns(at))
        for waiting in self.subcalls.values():
            for span in waiting:
                span.end(end_time=_ns(at))
        self.subcalls.clear()


def _tokens(prompt: int | None, completion: int | None, cost: float | None) -> dict[str, Any]:
    if prompt is None or completion is None:
        return {}
    said: dict[str, Any] = {
        "gen_ai.usage.input_tokens": prompt,
        "gen_ai.usage.output_tokens": completion,
        "llm.token_count.prompt": prompt,
        "llm.token_count.completion": completion,
        "llm.token_count.total": prompt + completion,
    }
    if cost is not None:
        said["llm.cost.total"] = cost
        said["shesha.cost_usd"] = cost
    return said


def _llm_attributes(
    model: str | None, prompt: int | None, completion: int | None, cost: float | None
) -> dict[str, Any]:
    provider = model.split("/", 1)[0] if model and "/" in model else None
    return {
        "openinference.span.kind": "LLM",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": model,
        "llm.model_name": model,
        "gen_ai.provider.name": provider,
        "llm.provider": provider,
        **_tokens(prompt, completion, cost),
    }
