"""Atomic file writes: a temporary file, fsync, rename, fsync of the directory."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

TMP_MARK = ".tmp-"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """After a crash at any moment, ``path`` holds the old content or the new, whole."""
    tmp = path.with_name(f"{TMP_MARK}{uuid.uuid4().hex}-{path.name}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def sweep_temporaries(directory: Path) -> int:
    """Remove temporary files left by a writer that was killed. Call under the lock."""
    removed = 0
    if not directory.is_dir():
        return 0
    for p in directory.iterdir():
        if p.name.startswith(TMP_MARK):
            p.unlink(missing_ok=True)
            removed += 1
    return removed
