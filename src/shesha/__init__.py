"""shesha: Recursive Language Model document exploration in a hardened sandbox.

from shesha import Shesha
with Shesha(model="openai/gpt-4o-mini") as sh:
    p = sh.project("contracts")
    p.add(["docs/"])
    print(p.query("Which contracts renew automatically?").answer)
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from shesha.errors import SheshaError

try:
    __version__ = version("shesha")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

if TYPE_CHECKING:
    from shesha.api import Project, Shesha
    from shesha.rlm.result import QueryResult

_LAZY = {"Shesha": "shesha.api", "Project": "shesha.api", "QueryResult": "shesha.rlm.result"}


def __getattr__(name: str) -> Any:
    """The API loads on first use: `shesha --help` and a CLI call through a running
    server need none of it (nor the sandbox, parsers and Docker client it imports)."""
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'shesha' has no attribute {name!r}")


__all__ = ["Project", "QueryResult", "Shesha", "SheshaError", "__version__"]
