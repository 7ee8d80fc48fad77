"""The RLM engine: the loop, sub-calls, budgets, events and traces."""

from shesha.rlm import events
from shesha.rlm.config import EngineConfig
from shesha.rlm.engine import ExecSession, RLMEngine, SandboxProvider
from shesha.rlm.events import Event, TraceEvent, TraceHeader
from shesha.rlm.prompting import PromptSet
from shesha.rlm.result import QueryLimits, QueryResult, QueryStatus, Usage, UsageBucket
from shesha.rlm.trace import EventCallback, ReplayLLM, Trace, read_trace

__all__ = [
    "EngineConfig",
    "Event",
    "EventCallback",
    "ExecSession",
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
