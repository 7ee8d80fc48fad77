"""Atomic file writes (a temporary file, fsync, rename, fsync of the directory), and the
data directory's privacy: its folders 0700, its files 0600, whatever the umask."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import IO, Any

TMP_MARK = ".tmp-"
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> Path:
    """``path`` as a folder readable by this user only (made with its missing parents;
    an existing one is tightened)."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(PRIVATE_DIR)
    return path


def private_file(path: Path, mode: str = "a") -> IO[Any]:
    """``path`` opened for writing (appending by default), created 0600 from the start."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, PRIVATE_FILE)
    os.fchmod(fd, PRIVATE_FILE)  # one made by an older shesha, or by hand, too
    return os.fdopen(fd, mode)


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
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        with os.fdopen(fd, "wb") as f:
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
