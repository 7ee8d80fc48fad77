"""The project store: parsed documents on disk, written atomically."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shesha.lazy import lazy_attributes

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


__getattr__ = lazy_attributes(__name__, _LAZY)

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
