"""shesha: Recursive Language Model document exploration in a hardened sandbox.

from shesha import Shesha
with Shesha(model="openai/gpt-4o-mini") as sh:
    p = sh.project("contracts")
    p.add(["docs/"])
    print(p.query("Which contracts renew automatically?").answer)
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("shesha")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

from shesha.api import Project, Shesha
from shesha.errors import SheshaError
from shesha.rlm.result import QueryResult

__all__ = ["Project", "QueryResult", "Shesha", "SheshaError", "__version__"]
