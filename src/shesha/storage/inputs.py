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
    return rule_for(parts, ignore) is not None


def rule_for(parts: Iterable[str], ignore: Sequence[str]) -> str | None:
    """The ignore pattern that leaves out a path with these parts, if any."""
    for part in parts:
        for pattern in ignore:
            if fnmatch.fnmatch(part, pattern):
                return pattern
    return None


def ignored_problem(path: str, pattern: str) -> InputProblem:
    """A file named directly, or uploaded, that a folder's walk would leave out."""
    return InputProblem(
        path,
        f"left out by the rule {pattern!r} (hidden files, editor backups and caches are "
        "not added, named or found in a folder); rename the file to add it",
    )


def inside(path: Path, roots: Sequence[Path]) -> bool:
    """Whether ``path``, with every link in it resolved, lies under one of ``roots``."""
    real = path.resolve()
    return any(real == r or r in real.parents for r in roots)


class OutsideRoots(OSError):
    """A file that, opened, is not under the allowed folders (rewritten since it was
    checked: a link swapped in for the file or a folder on its path)."""


def open_inside(path: Path, roots: Sequence[Path] | None) -> int:
    """``path`` opened for reading, not through a link at its end; with ``roots``, only if
    what was opened lies under one of them (``/proc/self/fd`` says where it really is), so
    a path rewritten between the check and the read is refused. The caller closes it."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    if roots is not None:
        try:
            real = Path(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            real = path.resolve()
        if not any(real == r or r in real.parents for r in roots):
            os.close(fd)
            raise OutsideRoots(f"{path} now leads to {real}, outside the allowed folders")
    return fd


def read_inside(path: Path, roots: Sequence[Path] | None) -> bytes:
    with os.fdopen(open_inside(path, roots), "rb") as f:
        return f.read()


def _outside(path: Path, roots: Sequence[Path], where: str) -> InputProblem:
    return InputProblem(
        str(path),
        f"a link to {path.resolve()}, outside {where}: links are not followed out of it; "
        "add that file by its own path",
    )


def _walk(
    root: Path, ignore: Sequence[str], roots: Sequence[Path], where: str
) -> tuple[list[Candidate], list[InputProblem]]:
    """The files under ``root``; a link is followed only to a file inside ``roots``, and
    never into a folder."""
    found: list[Candidate] = []
    problems: list[InputProblem] = []
    for dirpath, dirnames, filenames in os.walk(root):
        kept = []
        for d in sorted(dirnames):
            if _ignored([d], ignore):
                continue
            if (Path(dirpath) / d).is_symlink():
                problems.append(
                    InputProblem(
                        str(Path(dirpath) / d),
                        "a link to a folder: links are not followed into folders; add the "
                        "folder by its own path",
                    )
                )
                continue
            kept.append(d)
        dirnames[:] = kept
        for fname in sorted(filenames):
            if _ignored([fname], ignore):
                continue
            p = Path(dirpath) / fname
            if p.is_symlink():
                if not p.exists():
                    problems.append(InputProblem(str(p), "a broken link: nothing to read"))
                    continue
                if not inside(p, roots):
                    problems.append(_outside(p, roots, where))
                    continue
                if not p.is_file():
                    problems.append(InputProblem(str(p), "a link to something that is not a file"))
                    continue
                found.append(Candidate(p.resolve(), p.relative_to(root).as_posix()))
            elif p.is_file():
                found.append(Candidate(p, p.relative_to(root).as_posix()))
    return found, problems


def expand(
    inputs: Sequence[str | os.PathLike[str]],
    ignore: Sequence[str] = DEFAULT_IGNORE,
    roots: Sequence[Path] | None = None,
) -> tuple[list[Candidate], list[InputProblem]]:
    """Files keep their base name; files found under a directory are named by their path
    relative to it; glob patterns expand to files. Later inputs win on equal names.

    ``roots``: the only places files may be read from (a server's ``--allow-path``):
    every file, reached through links at any depth, must resolve inside one. Without
    them, a link found in a folder must resolve inside that folder. A file named directly
    or matched by a pattern follows the folder's ignore rules, or is refused with why."""
    chosen: dict[str, Candidate] = {}
    problems: list[InputProblem] = []
    allowed = [r.resolve() for r in roots] if roots is not None else None
    where = "the folders this server may read" if allowed is not None else "the folder"

    def named(f: Path, text: str) -> None:
        if (rule := rule_for([f.name], ignore)) is not None:
            problems.append(ignored_problem(text, rule))
        elif allowed is not None and not inside(f, allowed):
            problems.append(_outside(f, allowed, where))
        else:
            chosen[f.name] = Candidate(f.resolve() if f.is_symlink() else f, f.name)

    for raw in inputs:
        text = os.fspath(raw)
        p = Path(text).expanduser()
        if p.is_dir():
            if allowed is not None and not inside(p, allowed):
                problems.append(_outside(p, allowed, where))
                continue
            found, trouble = _walk(p, ignore, allowed or [p.resolve()], where)
            problems += trouble
            for c in found:
                chosen[c.name] = c
        elif p.is_file():
            named(p, text)
        elif glob.has_magic(text):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            files = [Path(m) for m in matches if Path(m).is_file()]
            if not files:
                problems.append(InputProblem(text, "no files match this pattern"))
            for f in files:
                named(f, str(f))
        elif p.exists():
            problems.append(InputProblem(text, "not a regular file or directory"))
        else:
            problems.append(InputProblem(text, "no such file or directory"))
    return sorted(chosen.values(), key=lambda c: c.name), problems
