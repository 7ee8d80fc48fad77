"""Sub-calls a project has already paid for: answers kept on disk beside the project,
keyed by the sub-model, the exact messages (less the per-query random id) and the
settings that change the output.

Kept only for deterministic settings (temperature 0): a cached answer is then the answer
the model would give again. Files are written atomically, so concurrent queries and a
killed process never leave a half entry; the folder is bounded, least recently used
entries going first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from shesha.llm.types import Message
from shesha.rlm.history import without_boundary
from shesha.storage.atomic import TMP_MARK, atomic_write, private_dir

DEFAULT_MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class CachedAnswer:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None


class SubcallCache(Protocol):
    def get(self, key: str) -> CachedAnswer | None: ...
    def put(self, key: str, answer: CachedAnswer) -> None: ...


def cache_key(model: str, messages: Sequence[Message], salt: str) -> str:
    """What makes a sub-call's answer: the model, its messages as sent but for their
    random boundary id, and the settings that change the output (``salt``)."""
    content = [
        {"role": m.get("role", ""), "content": without_boundary(m.get("content", ""))}
        for m in messages
    ]
    blob = json.dumps({"model": model, "messages": content, "settings": salt}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class DiskCache:
    """One project's cache: ``<project>/cache/subcalls/<ab>/<key>.json``."""

    def __init__(self, folder: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._size: int | None = None

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> CachedAnswer | None:
        path = self._path(key)
        try:
            data = json.loads(path.read_bytes())
            answer = CachedAnswer(**data)
        except (OSError, ValueError, TypeError):
            return None  # not cached (or unreadable, which is the same to a caller)
        # Recently used: evicted last. (Evicted by another process just now? The answer
        # read is still good.)
        with contextlib.suppress(OSError):
            os.utime(path)
        return answer

    def put(self, key: str, answer: CachedAnswer) -> None:
        path = self._path(key)
        private_dir(path.parent)
        data = json.dumps(asdict(answer)).encode()
        atomic_write(path, data)
        with self._lock:
            if self._size is None:
                self._size = self._measure()
            else:
                self._size += len(data)
            if self._size > self.max_bytes:
                self._size = self._evict()

    def _entries(self) -> list[tuple[float, int, Path]]:
        entries = []
        for path in self.folder.glob("*/*.json"):
            if path.name.startswith(TMP_MARK):
                continue
            try:
                st = path.stat()
            except OSError:
                continue  # removed meanwhile
            entries.append((st.st_mtime, st.st_size, path))
        return entries

    def _measure(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def _evict(self) -> int:
        """Drop the least recently used entries until the cache is at 80% of its bound."""
        entries = sorted(self._entries())
        size = sum(s for _, s, _ in entries)
        for _, entry_size, path in entries:
            if size <= self.max_bytes * 0.8:
                break
            path.unlink(missing_ok=True)
            size -= entry_size
        return size
