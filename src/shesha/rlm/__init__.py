"""The RLM engine: the loop, sub-calls, budgets and traces."""

from shesha.rlm.engine import EngineConfig, ExecSession, RLMEngine, SandboxProvider
from shesha.rlm.prompting import PromptSet
from shesha.rlm.result import QueryLimits, QueryResult, QueryStatus, Usage, UsageBucket
from shesha.rlm.trace import ReplayLLM, TraceEvent, read_trace

__all__ = [
    "EngineConfig",
    "ExecSession",
    "PromptSet",
    "QueryLimits",
    "QueryResult",
    "QueryStatus",
    "RLMEngine",
    "ReplayLLM",
    "SandboxProvider",
    "TraceEvent",
    "Usage",
    "UsageBucket",
    "read_trace",
]
