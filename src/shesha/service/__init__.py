"""What every entry point of a server shares: ``Service`` (the operations), its fair
line of queries and held sandboxes, and the policy of what a request may ask. No
transport is imported here: FastAPI, typer and MCP stay in the layers above."""

from shesha.service.line import QueryLine, QueuedQuery, event_record
from shesha.service.service import TEXT_PAGE, TRACE_NAME, HeldSandbox, Service

__all__ = [
    "TEXT_PAGE",
    "TRACE_NAME",
    "HeldSandbox",
    "QueryLine",
    "QueuedQuery",
    "Service",
    "event_record",
]
