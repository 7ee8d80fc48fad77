"""The RLM engine: the loop, sub-calls, budgets, events and traces."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shesha.lazy import lazy_attributes

if TYPE_CHECKING:
    from shesha.rlm import events
    from shesha.rlm.config import EngineConfig
    from shesha.rlm.engine import LeasedSandbox, RLMEngine, SandboxProvider
    from shesha.rlm.events import Event, TraceEvent, TraceHeader
    from shesha.rlm.prompting import PromptSet
    from shesha.rlm.result import QueryResult
    from shesha.rlm.trace import EventCallback, ReplayLLM, Trace, read_trace
    from shesha.rlm.usage import QueryLimits, QueryStatus, Usage, UsageBucket

_LAZY = {
    "EngineConfig": "shesha.rlm.config",
    "Event": "shesha.rlm.events",
    "EventCallback": "shesha.rlm.trace",
    "LeasedSandbox": "shesha.rlm.engine",
    "PromptSet": "shesha.rlm.prompting",
    "QueryLimits": "shesha.rlm.usage",
    "QueryResult": "shesha.rlm.result",
    "QueryStatus": "shesha.rlm.usage",
    "RLMEngine": "shesha.rlm.engine",
    "ReplayLLM": "shesha.rlm.trace",
    "SandboxProvider": "shesha.rlm.engine",
    "Trace": "shesha.rlm.trace",
    "TraceEvent": "shesha.rlm.events",
    "TraceHeader": "shesha.rlm.events",
    "Usage": "shesha.rlm.usage",
    "UsageBucket": "shesha.rlm.usage",
    "events": "shesha.rlm.events",
    "read_trace": "shesha.rlm.trace",
}


__getattr__ = lazy_attributes(__name__, _LAZY)

__all__ = [
    "EngineConfig",
    "Event",
    "EventCallback",
    "LeasedSandbox",
    "PromptSet",
    "QueryLimits",
    "QueryResult",
    "QueryStatus",
    "RLMEngine",
    "ReplayLLM",
    "SandboxProvider",
    "Trace",
    "TraceEvent",
    "TraceHeader",
    "Usage",
    "UsageBucket",
    "events",
    "read_trace",
]
