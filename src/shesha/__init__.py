"""shesha: Recursive Language Model document exploration in a hardened sandbox."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("shesha")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
