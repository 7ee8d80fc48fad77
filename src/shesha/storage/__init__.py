"""The project store: parsed documents on disk, written atomically."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shesha.storage.inputs import DEFAULT_IGNORE
    from shesha.storage.store import (
        AddedDocument,
        AddProgress,
        AddReport,
        FailedInput,
        ProjectStore,
        StoredDocument,
        StoredProject,
    )

_LAZY = {
    "DEFAULT_IGNORE": "shesha.storage.inputs",
    "AddProgress": "shesha.storage.store",
    "AddReport": "shesha.storage.store",
    "AddedDocument": "shesha.storage.store",
    "FailedInput": "shesha.storage.store",
    "ProjectStore": "shesha.storage.store",
    "StoredDocument": "shesha.storage.store",
    "StoredProject": "shesha.storage.store",
}


def __getattr__(name: str) -> Any:
    """Loaded on first use: the store imports the parsers, which `shesha.storage.atomic`
    and the names module do not need (see ``shesha.__getattr__``)."""
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_IGNORE",
    "AddProgress",
    "AddReport",
    "AddedDocument",
    "FailedInput",
    "ProjectStore",
    "StoredDocument",
    "StoredProject",
]
