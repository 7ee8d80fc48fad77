"""What the server's routes share: the Shesha, its query line, and where paths may come
from (set on the app's state when it starts)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request

from shesha.api import Shesha
from shesha.conversation import OpenConversations
from shesha.server.queries import QueryManager

TRACE_NAME = re.compile(r"^[\w.-]+\.jsonl$")
"""A trace file's name: nothing that could leave the traces folder."""


@dataclass
class Served:
    """What the routes work with: the Shesha, its query line, where paths may come from,
    and the conversations in progress."""

    sh: Shesha
    manager: QueryManager
    roots: list[Path]
    conversations: OpenConversations = field(default_factory=OpenConversations)


def served(request: Request) -> Served:
    value: Served = request.app.state.served
    return value
