"""A git repository as documents: the files committed at one commit, less binaries and
vendored or generated files, each named by its path in the repository.

What is read is what is *committed* at the commit (``git ls-tree``), so ``.gitignore``
holds by construction: ignored files are never committed. Uncommitted changes in a local
clone are not read; commit them first. The blobs are read with ``git cat-file`` into a
temporary directory and added like any other directory, so parsing stays parallel and
cached by content, and the store stays atomic.

A repository is data, never code. Only plumbing commands read it (``rev-parse``,
``ls-tree``, ``cat-file``, ``diff-tree``, and ``read-tree`` / ``check-attr`` into a
private index for the two linguist attributes), none of which applies filters, textconv
or external diffs, and every one runs with the repository's hooks and fsmonitor switched
off (``GIT_SAFETY``): whatever its ``.git/config``, an included file or its attributes
name is never run. A symbolic link is never followed: it is reported as skipped, with its
target. The stored text is the committed bytes (no ``ident``, no ``export-subst``).

Left out, by these rules (``skip_reason``):

- **vendored**: any directory named ``vendor``, ``vendors``, ``third_party``,
  ``third-party``, ``node_modules``, ``bower_components``, ``Pods``, ``Carthage``,
  ``site-packages``; and what ``.gitattributes`` marks ``linguist-vendored``;
- **generated**: lock files (``package-lock.json``, ``yarn.lock``, ``poetry.lock``,
  ``Cargo.lock``, ``go.sum``...), minified or map files (``*.min.js``, ``*.min.css``,
  ``*.map``), protobuf output (``*_pb2.py``, ``*.pb.go``), files whose first lines say
  ``@generated``, ``DO NOT EDIT`` or ``Code generated``, and what ``.gitattributes``
  marks ``linguist-generated``;
- **binary**: files with a NUL byte in their first 8 KB, unless shesha reads their
  format (PDF, DOCX, images);
- **too large**: text files over ``MAX_TEXT_BYTES`` (data dumps, not documents);
- **symbolic link** and **submodule**: never followed or read;
- **unsafe path**: a name with an empty, ``.`` or ``..`` part (only a forged tree has one).

A project remembers each repository it was given and the commit it read
(``project.json``), so an update reads only the files that changed since then and
removes those that were deleted.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from shesha.errors import RepositoryError

MAX_TEXT_BYTES = 1 << 20
HEAD_BYTES = 8192
"""How much of each file is looked at to judge it (NUL bytes, "generated" marks)."""
VENDORED_DIRS = {
    "vendor", "vendors", "third_party", "third-party", "node_modules", "bower_components",
    "Pods", "Carthage", "site-packages",
}  # fmt: skip
GENERATED_NAMES = (
    "package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml", "poetry.lock",
    "Pipfile.lock", "uv.lock", "Cargo.lock", "Gemfile.lock", "composer.lock", "go.sum",
    "*.min.js", "*.min.css", "*.map", "*_pb2.py", "*_pb2_grpc.py", "*.pb.go",
)  # fmt: skip
GENERATED_MARKS = (b"@generated", b"DO NOT EDIT", b"Code generated")
DOCUMENT_SUFFIXES = {
    ".pdf", ".docx", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp", ".webp",
}  # fmt: skip
GIT_HINT = "Install git (Debian/Ubuntu: apt install git)."
GIT_TIMEOUT_S = 600
GIT_SAFETY = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false")
"""Set on every git command shesha runs: a repository's hooks and fsmonitor never run.
(Command-line settings override the repository's own configuration and its includes.)"""
LINK_MODE = "120000"
SUBMODULE_MODE = "160000"


@dataclass(frozen=True)
class Checkout:
    """A repository ready to read: where its objects are, and the commit to read."""

    directory: Path
    commit: str


@dataclass(frozen=True)
class Entry:
    """One path of a commit's tree, as ``git ls-tree --long`` gives it."""

    mode: str
    kind: str
    """blob, tree or commit (a submodule)."""
    object: str
    size: int


@dataclass(frozen=True)
class Selection:
    files: list[str]
    skipped: dict[str, str]
    """Path -> why it was left out."""
    objects: dict[str, str]
    """Path -> the blob to read, for each of ``files``."""


def is_repository(path: Path) -> bool:
    """A local clone's top directory (``.git`` is a directory, or a file for worktrees)."""
    return (path / ".git").exists()


def _git(directory: Path | None, *args: str, data: bytes | None = None) -> bytes:
    command = ["git", *GIT_SAFETY, *(["-C", str(directory)] if directory else []), *args]
    try:
        done = subprocess.run(
            command, input=data, capture_output=True, timeout=GIT_TIMEOUT_S, check=False
        )
    except FileNotFoundError as e:
        raise RepositoryError("git is not installed.", hint=GIT_HINT) from e
    except subprocess.TimeoutExpired as e:
        raise RepositoryError(
            f"git {args[0]} took longer than {GIT_TIMEOUT_S} s and was stopped.",
            hint="Clone the repository yourself and add the clone's directory.",
        ) from e
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        raise RepositoryError(f"git {' '.join(args[:2])} failed: {said[-1] if said else '?'}")
    return done.stdout


@contextlib.contextmanager
def checkout(location: str, ref: str | None) -> Iterator[Checkout]:
    """A local clone as it is, or a URL cloned into a temporary directory (removed after);
    ``ref`` (a branch, tag or commit; default HEAD) resolved to its commit."""
    local = Path(location).expanduser()
    if local.is_dir():
        if not is_repository(local):
            raise RepositoryError(
                f"{location} is not a git repository (no .git in it).",
                hint="Give the top directory of a clone, or --git URL.",
            )
        yield Checkout(local, _commit(local, ref, location))
        return
    with tempfile.TemporaryDirectory(prefix="shesha-git-") as tmp:
        target = Path(tmp) / "repo"
        try:
            _git(None, "clone", "--quiet", "--no-checkout", "--", location, str(target))
        except RepositoryError as e:
            shown = without_credentials(location)
            raise RepositoryError(
                f"Could not clone {shown}: {str(e).replace(location, shown)}",
                hint="Check the URL and your access to it.",
            ) from e
        yield Checkout(target, _commit(target, ref, location))


def without_credentials(location: str) -> str:
    """A URL as it may be stored and shown: ``https://user:token@host/x`` loses its
    ``user:token@`` (an ssh user, as in ``ssh://git@host``, is not a secret and stays)."""
    return re.sub(r"^(https?://)[^/@]+@", r"\1", location, flags=re.IGNORECASE)


def _commit(directory: Path, ref: str | None, location: str) -> str:
    try:
        return (
            _git(directory, "rev-parse", "--verify", f"{ref or 'HEAD'}^{{commit}}").decode().strip()
        )
    except RepositoryError as e:
        raise RepositoryError(
            f"{without_credentials(location)} has no commit {ref or 'HEAD'!r}.",
            hint="Give a branch, tag or commit that exists there (--ref).",
        ) from e


def entries(repo: Checkout, commit: str | None = None) -> dict[str, Entry]:
    """Every path of the tree at ``commit`` (default: the checkout's), files, links and
    submodules alike."""
    listed = _git(repo.directory, "ls-tree", "-r", "-z", "--long", commit or repo.commit)
    found: dict[str, Entry] = {}
    for line in listed.decode("utf-8", errors="surrogateescape").split("\0"):
        if "\t" not in line:
            continue
        info, path = line.split("\t", 1)
        mode, kind, obj, size = [*info.split(), "-"][:4]
        found[path] = Entry(mode, kind, obj, int(size) if size.isdigit() else 0)
    return found


def committed_files(repo: Checkout) -> list[str]:
    return list(entries(repo))


def changed_since(repo: Checkout, before: str) -> tuple[list[str], list[str]]:
    """Files added or changed between ``before`` and the checkout's commit, and files
    deleted (a rename is both)."""
    out = _git(
        repo.directory, "diff-tree", "-r", "-z", "--name-status", "--no-renames",
        "--no-ext-diff", "--no-textconv", before, repo.commit,
    )  # fmt: skip
    fields = out.decode("utf-8", errors="surrogateescape").split("\0")
    changed: list[str] = []
    deleted: list[str] = []
    for status, path in zip(fields[0::2], fields[1::2], strict=False):
        (deleted if status.startswith("D") else changed).append(path)
    return changed, deleted


def select(repo: Checkout, paths: Sequence[str]) -> Selection:
    """The paths to read, and why each other one is left out."""
    tree = entries(repo)
    paths = [p for p in paths if p in tree]
    attributes = _attributes(repo, paths)
    heads = _heads(repo, {p: tree[p].object for p in paths if tree[p].kind == "blob"})
    files: list[str] = []
    skipped: dict[str, str] = {}
    for path in paths:
        entry = tree[path]
        head = heads.get(path, b"")
        if entry.mode == LINK_MODE:
            target = head[:200].decode("utf-8", "replace")
            reason: str | None = f"symbolic link (to {target})"
        elif entry.mode == SUBMODULE_MODE or entry.kind != "blob":
            reason = "submodule"
        elif not safe_path(path):
            reason = "unsafe path"
        else:
            reason = skip_reason(path, entry.size, head, attributes.get(path, set()))
        if reason is None:
            files.append(path)
        else:
            skipped[path] = reason
    return Selection(files, skipped, {p: tree[p].object for p in files})


def safe_path(path: str) -> bool:
    """A relative path whose every part is a plain name (git's own trees have only these)."""
    parts = path.split("/")
    return not path.startswith("/") and all(p not in ("", ".", "..") and "\0" not in p
                                            for p in parts)  # fmt: skip


def skip_reason(path: str, size: int, head: bytes, marked: set[str]) -> str | None:
    """Why a file is left out of a repository's documents, or None to read it."""
    parts = PurePosixPath(path).parts
    name = parts[-1]
    if set(parts[:-1]) & VENDORED_DIRS or "linguist-vendored" in marked:
        return "vendored"
    if any(fnmatch.fnmatch(name, pattern) for pattern in GENERATED_NAMES):
        return "generated"
    if "linguist-generated" in marked or any(mark in head[:1024] for mark in GENERATED_MARKS):
        return "generated"
    document = PurePosixPath(name).suffix.lower() in DOCUMENT_SUFFIXES
    if not document and b"\0" in head:
        return "binary"
    if not document and size > MAX_TEXT_BYTES:
        return f"too large ({size // 1024} KB of text)"
    return None


def _attributes(repo: Checkout, paths: Sequence[str]) -> dict[str, set[str]]:
    """``linguist-generated`` / ``linguist-vendored`` as .gitattributes at the commit set them."""
    if not paths:
        return {}
    with tempfile.TemporaryDirectory() as index_dir:
        env_index = Path(index_dir) / "index"
        # read .gitattributes from the commit, not the working tree: a private index
        subprocess.run(
            ["git", *GIT_SAFETY, "-C", str(repo.directory), "read-tree", repo.commit],
            env={"GIT_INDEX_FILE": str(env_index), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            check=False,
            timeout=GIT_TIMEOUT_S,
        )
        done = subprocess.run(
            ["git", *GIT_SAFETY, "-C", str(repo.directory), "check-attr", "--cached", "-z",
             "--stdin",
             "linguist-generated", "linguist-vendored"],
            input="\0".join(paths).encode("utf-8", errors="surrogateescape"),
            env={"GIT_INDEX_FILE": str(env_index), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            check=False,
            timeout=GIT_TIMEOUT_S,
        )  # fmt: skip
    fields = done.stdout.decode("utf-8", errors="surrogateescape").split("\0")
    marked: dict[str, set[str]] = {}
    for path, attribute, value in zip(fields[0::3], fields[1::3], fields[2::3], strict=False):
        if value in ("set", "true"):
            marked.setdefault(path, set()).add(attribute)
    return marked


def _batch(repo: Checkout, objects: dict[str, str]) -> Generator[tuple[str, int, Any]]:
    """Each blob in turn from one ``git cat-file --batch``, read as a stream: yields the
    path, the blob's size and the stream positioned at its content. The caller reads
    what it wants of it; the rest is skipped here."""
    if not objects:
        return
    proc = _start_git(repo.directory, "cat-file", "--batch", stdin=True)
    assert proc.stdin is not None
    assert proc.stdout is not None
    request = "".join(f"{obj}\n" for obj in objects.values()).encode()
    stdin = proc.stdin

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError):  # git stopped early: its exit code says why
            stdin.write(request)
        stdin.close()

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    stream = _Counted(proc.stdout)
    read_all = False
    try:
        for path in objects:
            header = proc.stdout.readline().split()
            if len(header) < 3 or header[-1] == b"missing":
                continue
            size = int(header[2])
            stream.start(size)
            yield path, size, stream
            stream.skip_rest()
            proc.stdout.read(1)  # the newline after each blob
        read_all = True
    finally:
        if not read_all:  # the reader stopped early: git would block writing, and its feeder
            proc.kill()
        writer.join(timeout=GIT_TIMEOUT_S)
        if read_all:
            _finish(proc, "cat-file")
        else:
            proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()


class _Counted:
    """A blob's content within cat-file's stream: never reads past its end."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._left = 0

    def start(self, size: int) -> None:
        self._left = size

    def read(self, n: int) -> bytes:
        data = self._raw.read(min(n, self._left)) if self._left > 0 else b""
        self._left -= len(data)
        if not data:
            self._left = 0  # git ended early: _finish reports it
        return data

    def skip_rest(self) -> None:
        while self._left > 0 and self.read(1 << 20):
            pass


def _heads(repo: Checkout, objects: dict[str, str]) -> dict[str, bytes]:
    """The first 8 KB of each blob: memory stays at a file's head, however large."""
    with contextlib.closing(_batch(repo, objects)) as blobs:
        return {path: stream.read(HEAD_BYTES) for path, _, stream in blobs}


def _start_git(directory: Path, *args: str, stdin: bool = False) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            ["git", *GIT_SAFETY, "-C", str(directory), *args],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except FileNotFoundError as e:
        raise RepositoryError("git is not installed.", hint=GIT_HINT) from e


def _finish(proc: subprocess.Popen[bytes], what: str) -> None:
    try:
        proc.wait(timeout=GIT_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        proc.kill()
        raise RepositoryError(f"git {what} took longer than {GIT_TIMEOUT_S} s.") from e
    finally:
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    if proc.returncode != 0:
        raise RepositoryError(f"git {what} failed (exit code {proc.returncode}).")


def export(repo: Checkout, selection: Selection, into: Path) -> dict[str, str]:
    """Write the selected files, their committed bytes exactly, into the directory ``into``
    (which holds only what this writes: no link, nothing else). A file that cannot be
    written there (a name that clashes with another's on a case-insensitive disk, or a
    forged tree's file and folder of one name) is left out: path -> why."""
    failed: dict[str, str] = {}
    with contextlib.closing(_batch(repo, selection.objects)) as blobs:
        for path, _, stream in blobs:
            target = into.joinpath(*path.split("/"))
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except OSError as e:
                failed[path] = f"cannot be written beside the other files ({e.strerror or e})"
                continue
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(1 << 20):
                    out.write(chunk)
    return failed
