"""Turning what a user names (files, directories, globs) into (path, document name)."""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_IGNORE: tuple[str, ...] = (
    ".*",  # hidden files and directories: .git, .venv, .DS_Store ...
    "__pycache__",
    "node_modules",
    "*.pyc",
    "*~",
    "Thumbs.db",
)


@dataclass(frozen=True)
class Candidate:
    path: Path
    name: str


@dataclass(frozen=True)
class InputProblem:
    path: str
    error: str


def _ignored(parts: Iterable[str], ignore: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(part, pattern) for part in parts for pattern in ignore)


def _walk(root: Path, ignore: Sequence[str]) -> list[Candidate]:
    found: list[Candidate] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _ignored([d], ignore))
        for fname in sorted(filenames):
            if _ignored([fname], ignore):
                continue
            p = Path(dirpath) / fname
            if p.is_file():
                found.append(Candidate(p, p.relative_to(root).as_posix()))
    return found


def expand(
    inputs: Sequence[str | os.PathLike[str]], ignore: Sequence[str] = DEFAULT_IGNORE
) -> tuple[list[Candidate], list[InputProblem]]:
    """Files keep their base name; files found under a directory are named by their path
    relative to it; glob patterns expand to files. Later inputs win on equal names."""
    chosen: dict[str, Candidate] = {}
    problems: list[InputProblem] = []
    for raw in inputs:
        text = os.fspath(raw)
        p = Path(text).expanduser()
        if p.is_dir():
            for c in _walk(p, ignore):
                chosen[c.name] = c
        elif p.is_file():
            chosen[p.name] = Candidate(p, p.name)
        elif glob.has_magic(text):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            files = [Path(m) for m in matches if Path(m).is_file()]
            if not files:
                problems.append(InputProblem(text, "no files match this pattern"))
            for f in files:
                if not _ignored([f.name], ignore):
                    chosen[f.name] = Candidate(f, f.name)
        elif p.exists():
            problems.append(InputProblem(text, "not a regular file or directory"))
        else:
            problems.append(InputProblem(text, "no such file or directory"))
    return sorted(chosen.values(), key=lambda c: c.name), problems
