"""Package attributes loaded on first use (PEP 562), so that importing one module of a
package does not import all the others: `shesha --help`, and a CLI call through a running
server, need neither Docker's client, nor the parsers, nor LiteLLM."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_attributes(package: str, where: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__``: each name in ``where`` comes from the module it maps to
    (a name that is that module's own last part is the module itself)."""

    def attribute(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = import_module(where[name])
        return module if where[name].endswith("." + name) else getattr(module, name)

    return attribute
