"""shesha: Recursive Language Model document exploration in a hardened sandbox.

from shesha import Shesha
with Shesha(model="openai/gpt-4o-mini") as sh:
    p = sh.project("contracts")
    p.add(["docs/"])
    print(p.query("Which contracts renew automatically?").answer)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shesha.errors import SheshaError
from shesha.lazy import lazy_attributes

try:  # written by hatch-vcs at install: no scan of the installed packages' metadata
    from shesha._version import __version__
except ImportError:
    from importlib.metadata import PackageNotFoundError, version  # only without _version

    try:
        __version__ = version("shesha")
    except PackageNotFoundError:  # running from a source tree that was never installed
        __version__ = "0.0.0"

if TYPE_CHECKING:
    from shesha.api import Project, Shesha
    from shesha.rlm.result import QueryResult

_LAZY = {"Shesha": "shesha.api", "Project": "shesha.api", "QueryResult": "shesha.rlm.result"}


# The API loads on first use (see shesha.lazy).
__getattr__ = lazy_attributes(__name__, _LAZY)

__all__ = ["Project", "QueryResult", "Shesha", "SheshaError", "__version__"]
