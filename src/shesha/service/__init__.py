"""What every entry point of a server shares: ``Service`` (the operations), its fair
line of queries and held sandboxes, and the policy of what a request may ask. No
transport is imported here: FastAPI, typer and MCP stay in the layers above."""

from shesha.service.line import QueryLine, QueryRun, event_record
from shesha.service.service import TEXT_PAGE, TRACE_NAME, HeldSandbox, Service

__all__ = [
    "TEXT_PAGE",
    "TRACE_NAME",
    "HeldSandbox",
    "QueryLine",
    "QueryRun",
    "Service",
    "event_record",
]
