"""What a query returns (``QueryResult``); the status, limits and usage it carries are
``shesha.rlm.usage``'s, and named here too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shesha.rlm.citations import Citation
from shesha.rlm.notebook import result_html
from shesha.rlm.trace import read_trace
from shesha.rlm.usage import QueryLimits, QueryStatus, Usage, UsageBucket

__all__ = ["QueryLimits", "QueryResult", "QueryStatus", "Usage", "UsageBucket"]


class QueryResult(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    answer: str | None
    status: QueryStatus
    error: str | None = None
    limit: str | None = Field(None, description="which limit stopped the query, if one did")
    iterations: int
    usage: Usage
    subcalls: int
    duration_s: float
    trace_path: str | None = None
    citations: list[Citation] = Field(default_factory=list)
    """The code's citations, each verified (found in the stored text) or not."""
    output: Any = None
    """The typed answer, when one was asked for (``output=`` / ``--output-schema``)."""
    tool_calls: int = 0
    sandbox: str | None = None
    """Which sandbox ran the code: docker, bwrap, process..."""
    isolation: str | None = None
    """What that sandbox enforced, in a line."""

    def _repr_html_(self) -> str:
        """The answer, the status line and the steps, in a notebook (all text escaped)."""
        path = self.trace_path
        events = read_trace(path).events if path and Path(path).is_file() else []
        return result_html(self, events)
