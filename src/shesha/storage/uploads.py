"""Uploaded files, staged in a temporary folder under their document names, so that they
are added like a folder: each name checked, and each one refused said why.

A name that tries to leave the folder (absolute, ``..``, control characters) refuses the
whole upload (``StorageError``), before anything is stored. A name a folder's walk would
leave out (``.env``, ``notes~``), a name uploaded twice, and a name that clashes with a
folder of another upload are refused one by one, and the rest is added.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from shesha.errors import InvalidName, StorageError
from shesha.storage.inputs import DEFAULT_IGNORE, ignored_problem, rule_for
from shesha.storage.names import validate_document_name
from shesha.storage.store import FailedInput


def stage(files: Iterable[tuple[str, BinaryIO]], into: Path) -> list[FailedInput]:
    """Write each (name, stream) into the folder ``into``; return the refused ones."""
    named = list(files)
    for name, _ in named:  # every name first: a bad one stores nothing at all
        try:
            validate_document_name(name)
        except StorageError as e:
            raise InvalidName(f"The uploaded file name {name!r} is refused: {e}") from e
    refused: list[FailedInput] = []
    taken: set[str] = set()
    for name, stream in named:
        parts = name.split("/")
        if (rule := rule_for(parts, DEFAULT_IGNORE)) is not None:
            problem = ignored_problem(name, rule)
            refused.append(FailedInput(path=problem.path, error=problem.error))
            continue
        if name in taken:
            refused.append(FailedInput(path=name, error="uploaded twice: only the first is kept"))
            continue
        target = into.joinpath(*parts)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "xb") as out:
                shutil.copyfileobj(stream, out)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            refused.append(
                FailedInput(
                    path=name,
                    error="clashes with another uploaded name (one names a file, the "
                    "other a folder of that name)",
                )
            )
            continue
        except OSError as e:
            refused.append(FailedInput(path=name, error=f"cannot be stored: {e.strerror}"))
            continue
        taken.add(name)
    return refused
