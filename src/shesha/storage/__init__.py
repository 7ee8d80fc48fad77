"""The project store: parsed documents on disk, written atomically."""

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
