"""Where a running local server says it is: ``<home>/server.json``, written when it starts
listening and removed when it stops. The CLI finds the local default server through it."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from shesha.storage.atomic import atomic_write, private_dir

STATE_FILE = "server.json"


@dataclass(frozen=True)
class ServerState:
    url: str
    pid: int
    home: str
    version: str
    token: str | None = None


def state_path(home: Path) -> Path:
    return home / STATE_FILE


def write_state(home: Path, state: ServerState) -> None:
    """Record the server, readable by this user only from the start (it may hold the
    token)."""
    private_dir(home)
    atomic_write(state_path(home), json.dumps(asdict(state), indent=1).encode())


def read_state(home: Path) -> ServerState | None:
    """The recorded server, if its process is still alive."""
    try:
        data = json.loads(state_path(home).read_text(encoding="utf-8"))
        state = ServerState(**data)
    except (OSError, ValueError, TypeError):
        return None
    return state if pid_alive(state.pid) else None


def clear_state(home: Path, pid: int) -> None:
    """Remove the record, if it is this server's."""
    path = state_path(home)
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        return  # already gone, or another server's: leave it


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True
