"""The project store: parsed documents on disk under one data directory.

Layout, under the home the store is given (``shesha.config.home_dir``: the ``home``
setting, else ``$SHESHA_HOME``, else platformdirs' user data directory)::

    projects/<name>/project.json           the project's metadata
    projects/<name>/.lock                  a file lock: one writer at a time
    projects/<name>/docs/<key>.json        a document's record (the commit point)
    projects/<name>/docs/<key>.<sha>.txt   its parsed text (content-addressed)
    projects/<name>/originals/<key><ext>   the original file, when kept
    projects/<name>/index.sqlite           the passage index (derived: rebuilt from the
                                           records when missing, stale or damaged)
    projects/<name>/traces/                query traces
    projects/<name>/conversations/<id>.json  conversations (``storage.conversations``)
    projects/<name>/cache/subcalls/        the sub-call cache (``rlm.cache``)
    cache/ocr/                             OCR results, shared by every project

A document exists when its record exists; the record names its text file, which is
written (atomically) before the record. A crash leaves the old record or the new one,
never half of either. Stray temporaries are swept under the lock.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from filelock import FileLock
from pydantic import BaseModel, ValidationError

from shesha.errors import (
    AlreadyExists,
    InvalidName,
    NotFoundError,
    ProjectGone,
    RepositoryError,
    StorageError,
)
from shesha.parser import DocumentMeta, ParsedDocument
from shesha.parser.bounds import DEFAULT as DEFAULT_BOUNDS
from shesha.parser.bounds import ParseBounds
from shesha.parser.ocr import OcrSettings
from shesha.retrieval.index import PassageIndex, SyncReport
from shesha.storage import gitrepo
from shesha.storage.atomic import (
    PRIVATE_DIR,
    PRIVATE_FILE,
    atomic_write,
    private_dir,
    private_file,
    sweep_temporaries,
)
from shesha.storage.inputs import DEFAULT_IGNORE, Candidate, expand, open_inside, read_inside
from shesha.storage.names import validate_document_name, validate_project_name
from shesha.storage.parsing import ParseJob, ParseLimits, parse_all

DEFAULT_LIMITS = ParseLimits()

FORMAT_VERSION = 1


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class StoredDocument(BaseModel):
    """A document's record."""

    name: str
    key: str
    text_file: str
    text_sha256: str
    added: str
    meta: DocumentMeta
    original: str | None = None


class AddedDocument(BaseModel):
    name: str
    status: str  # "added", "replaced" or "unchanged"
    meta: DocumentMeta


class FailedInput(BaseModel):
    path: str
    error: str


class AddReport(BaseModel):
    project: str
    stored: list[AddedDocument]
    failed: list[FailedInput]
    skipped: dict[str, str] = {}
    """Files of a repository left out, and why (vendored, generated, binary...)."""
    removed: list[str] = []
    """Documents removed because the repository deleted them (an update)."""
    commit: str | None = None
    """The commit of a repository that was read."""

    @property
    def ok(self) -> bool:
        return not self.failed


class RepositorySource(BaseModel):
    """A git repository added to a project: where, which ref, and the commit read."""

    location: str
    ref: str | None = None
    commit: str


class AddProgress(BaseModel):
    """One step of an add, for progress displays: a file done, or (status "ocr") a page
    of a file read by OCR."""

    done: int
    total: int
    name: str
    status: str  # "added", "replaced", "unchanged", "failed" or "ocr"
    pages_done: int | None = None
    pages_total: int | None = None


ProgressCallback = Callable[[AddProgress], None]


def _key(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:32]


def _file_sha256(path: Path, roots: Sequence[Path] | None) -> str:
    h = hashlib.sha256()
    with os.fdopen(open_inside(path, roots), "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _within_add(
    parsed: Iterator[tuple[Candidate, ParsedDocument | str]], add_chars: int
) -> Iterator[tuple[Candidate, ParsedDocument | str]]:
    """The parsed files, until their text passes ``add_chars`` in all: from there on,
    each fails with the bound (the files before it are stored)."""
    produced = 0
    for c, outcome in parsed:
        if isinstance(outcome, ParsedDocument):
            produced += len(outcome.text)
            if produced > add_chars:
                yield (
                    c,
                    (
                        f"{c.name}: this add has given more than {add_chars:,} characters of text "
                        "in all (the bound of one add); add the rest in another, or raise "
                        "max_add_chars"
                    ),
                )
                continue
        yield c, outcome


class StoredProject:
    """A named set of parsed documents. It is a ``Corpus`` for the sandbox."""

    def __init__(self, store: ProjectStore, name: str) -> None:
        self.store = store
        self.name = name
        self.path = store.projects_dir / name
        self.docs_dir = self.path / "docs"
        self.originals_dir = self.path / "originals"
        self.traces_dir = self.path / "traces"
        self.index_path = self.path / "index.sqlite"
        self._lock = FileLock(str(self.path / ".lock"), mode=PRIVATE_FILE)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The project's lock, held while the project exists. A handle to a project
        deleted meanwhile gets ``ProjectGone``, and what waiting for the lock made again
        (the lock's own file and folder) is removed: a writer never brings back a
        deleted project, nor blocks a new one of that name."""
        with self._lock:
            if not (self.path / "project.json").is_file():
                (self.path / ".lock").unlink(missing_ok=True)
                with contextlib.suppress(OSError):  # not empty: a writer of its own
                    self.path.rmdir()
                raise ProjectGone(
                    f"Project {self.name!r} was deleted; nothing more is stored in it.",
                    hint=f"`shesha add {self.name} ...` makes it again.",
                )
            yield

    def _still_exists(self) -> None:
        """``ProjectGone`` if the project was deleted (checked under its lock)."""
        with self._locked():
            return

    def __repr__(self) -> str:
        return f"StoredProject({self.name!r})"

    # -- reading --------------------------------------------------------------------------

    def _records(self) -> list[StoredDocument]:
        records = []
        if not self.docs_dir.is_dir():
            return []
        for p in self.docs_dir.glob("*.json"):
            try:
                records.append(StoredDocument.model_validate_json(p.read_bytes()))
            except (OSError, ValidationError) as e:
                raise StorageError(
                    f"Project {self.name!r}: the record {p} is unreadable ({e}).",
                    hint="Remove that file and add the document again.",
                ) from e
        return sorted(records, key=lambda r: r.name)

    def documents_meta(self) -> list[StoredDocument]:
        """Every document's record, sorted by name: the order of ``context``."""
        return self._records()

    def document(self, name: str) -> StoredDocument:
        validate_document_name(name)
        p = self.docs_dir / f"{_key(name)}.json"
        if not p.exists():
            raise NotFoundError(
                f"Project {self.name!r} has no document {name!r}.",
                hint=f"`shesha docs {self.name}` lists its documents.",
            )
        return StoredDocument.model_validate_json(p.read_bytes())

    def text(self, name: str) -> str:
        record = self.document(name)
        return (self.docs_dir / record.text_file).read_text(encoding="utf-8")

    def documents(self) -> list[tuple[str, str]]:
        """(name, text) in the project's stable order (sorted by name)."""
        with self._locked():
            return self._texts(self._records())

    def _texts(self, records: Sequence[StoredDocument]) -> list[tuple[str, str]]:
        return [
            (r.name, (self.docs_dir / r.text_file).read_text(encoding="utf-8")) for r in records
        ]

    def sizes(self) -> list[tuple[str, int]]:
        """(name, characters) in the same order, from the records alone."""
        return [(r.name, r.meta.chars) for r in self._records()]

    @property
    def version(self) -> str:
        """A content hash over the documents' names and texts, in order."""
        return _version(self._records())

    def snapshot(self) -> ProjectSnapshot:
        """The documents as they are now, for one query: the records are read once."""
        return ProjectSnapshot(self, self._records())

    def passage_index(self) -> PassageIndex:
        """The project's passage index, brought up to date with its documents first (only
        new and changed documents are read). The caller closes it."""
        with self._locked():
            return self._synced_index()[0]

    def reindex(self) -> SyncReport:
        """Bring the passage index up to date; what it changed."""
        with self._locked():
            index, report = self._synced_index()
            index.close()
            return report

    def _synced_index(
        self, records: Sequence[StoredDocument] | None = None
    ) -> tuple[PassageIndex, SyncReport]:
        """The index, brought to ``records`` (default: the project's as they are now)."""
        if not self.path.is_dir():
            raise NotFoundError(f"Project {self.name!r} does not exist.")
        if records is None:
            records = self._records()
        paths = {r.name: r.text_file for r in records}

        def text_of(name: str) -> str:
            return (self.docs_dir / paths[name]).read_text(encoding="utf-8")

        for attempt in (1, 2):
            try:
                # Created 0600 before SQLite opens it: its -wal and -shm files follow suit.
                private_file(self.index_path).close()
                index = PassageIndex.open(self.index_path)
                try:
                    return index, index.sync([(r.name, r.text_sha256) for r in records], text_of)
                except BaseException:
                    index.close()
                    raise
            except sqlite3.DatabaseError:
                if attempt == 2:
                    raise
                # Derived data only: a damaged index is dropped and built again.
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.index_path}{suffix}").unlink(missing_ok=True)
        raise AssertionError("unreachable")

    # -- writing ---------------------------------------------------------------------------

    def _commit(
        self, name: str, parsed: ParsedDocument, original_bytes: bytes | None, suffix: str
    ) -> str:
        """Store one parsed document atomically; return added or replaced."""
        validate_document_name(name)
        key = _key(name)
        data = parsed.text.encode("utf-8", "surrogatepass")
        text_sha = hashlib.sha256(data).hexdigest()
        text_file = f"{key}.{text_sha[:16]}.txt"
        record_path = self.docs_dir / f"{key}.json"
        with self._locked():
            private_dir(self.docs_dir)
            old = (
                StoredDocument.model_validate_json(record_path.read_bytes())
                if record_path.exists()
                else None
            )
            atomic_write(self.docs_dir / text_file, data)
            original = None
            if original_bytes is not None:
                private_dir(self.originals_dir)
                original = f"{key}{suffix.lower()}"
                atomic_write(self.originals_dir / original, original_bytes)
            record = StoredDocument(
                name=name,
                key=key,
                text_file=text_file,
                text_sha256=text_sha,
                added=_now(),
                meta=parsed.meta,
                original=original,
            )
            atomic_write(record_path, record.model_dump_json(indent=1).encode())
            if old is not None and old.text_file != text_file:
                (self.docs_dir / old.text_file).unlink(missing_ok=True)
            if old is not None and old.original and old.original != original:
                (self.originals_dir / old.original).unlink(missing_ok=True)
        return "replaced" if old is not None else "added"

    def add(
        self,
        inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
        *,
        password: str | None = None,
        ignore: Sequence[str] = DEFAULT_IGNORE,
        keep_originals: bool = False,
        on_progress: ProgressCallback | None = None,
        workers: int | None = None,
        ocr: OcrSettings | None = None,
        roots: Sequence[Path] | None = None,
        bounds: ParseBounds = DEFAULT_BOUNDS,
        limits: ParseLimits = DEFAULT_LIMITS,
    ) -> AddReport:
        """Add files, directories (recursively) and globs. Parsing runs in parallel;
        unchanged files cost only their hash; one bad file never stops the batch.
        ``ocr`` reads scanned pages and images (None: not at all); its cache defaults to
        ``<home>/cache/ocr``. ``roots``: where files may be read from, links resolved
        (a server's allowed folders); a file that resolves elsewhere is refused.
        ``bounds``: what one file, and this add, may inflate to and produce; ``limits``:
        the memory and time of the worker processes that parse."""
        if isinstance(inputs, str | os.PathLike):
            inputs = [inputs]
        self._still_exists()  # a deleted project says so at once, whatever the inputs are
        candidates, problems = expand(inputs, ignore, roots)
        allowed = [r.resolve() for r in roots] if roots is not None else None
        failed = [FailedInput(path=p.path, error=p.error) for p in problems]
        stored: list[AddedDocument] = []
        total = len(candidates)
        done = 0

        def report(name: str, status: str) -> None:
            nonlocal done
            done += 1
            if on_progress is not None:
                on_progress(AddProgress(done=done, total=total, name=name, status=status))

        todo = self._changed(candidates, allowed, stored, failed, report)
        names = {str(c.path): c.name for c in todo}

        def page_read(path: str, pages_done: int, pages_total: int) -> None:
            if on_progress is not None:
                on_progress(
                    AddProgress(
                        done=done, total=total, name=names.get(path, path), status="ocr",
                        pages_done=pages_done, pages_total=pages_total,
                    )
                )  # fmt: skip

        settings = None
        if ocr is not None:
            settings = replace(ocr, cache_dir=ocr.cache_dir or self.store.home / "cache" / "ocr")
        parsed = self._parse_all(
            todo, password=password, workers=workers, ocr=settings, page_read=page_read,
            bounds=bounds, limits=limits, roots=allowed,
        )  # fmt: skip
        for c, outcome in _within_add(parsed, bounds.add_chars):
            if isinstance(outcome, str):
                failed.append(FailedInput(path=str(c.path), error=outcome))
                report(c.name, "failed")
                continue
            try:
                original = read_inside(c.path, allowed) if keep_originals else None
                status = self._commit(c.name, outcome, original, c.path.suffix)
            except ProjectGone:
                raise  # deleted meanwhile: nothing more can be stored
            except (StorageError, OSError) as e:  # a name refused, a full disk: this file only
                failed.append(FailedInput(path=str(c.path), error=str(e)))
                report(c.name, "failed")
                continue
            stored.append(AddedDocument(name=c.name, status=status, meta=outcome.meta))
            report(c.name, status)
        stored.sort(key=lambda d: d.name)
        return self._indexed(AddReport(project=self.name, stored=stored, failed=failed))

    def _changed(
        self,
        candidates: Sequence[Candidate],
        allowed: list[Path] | None,
        stored: list[AddedDocument],
        failed: list[FailedInput],
        report: Callable[[str, str], None],
    ) -> list[Candidate]:
        """The candidates to parse: new, or changed since they were stored. An unchanged
        file goes to ``stored`` as it is, an unreadable one to ``failed``."""
        known = {r.name: r for r in self._records()}
        todo: list[Candidate] = []
        for c in candidates:
            try:
                sha = _file_sha256(c.path, allowed)
            except OSError as e:
                failed.append(FailedInput(path=str(c.path), error=f"cannot be read: {e}"))
                report(c.name, "failed")
                continue
            old = known.get(c.name)
            if old is not None and old.meta.sha256 == sha:
                stored.append(AddedDocument(name=c.name, status="unchanged", meta=old.meta))
                report(c.name, "unchanged")
            else:
                todo.append(c)
        return todo

    def _indexed(self, report: AddReport) -> AddReport:
        """The report, once the passage index holds what was stored."""
        if report.stored:
            self.reindex()
        return report

    @staticmethod
    def _parse_all(
        todo: list[Candidate],
        *,
        password: str | None,
        workers: int | None,
        ocr: OcrSettings | None,
        page_read: Callable[[str, int, int], None],
        bounds: ParseBounds,
        limits: ParseLimits,
        roots: Sequence[Path] | None,
    ) -> Iterator[tuple[Candidate, ParsedDocument | str]]:
        """Every file in a worker process (``parsing.py``), never in this one."""
        n = min(workers or min(os.cpu_count() or 1, 8), len(todo)) or 1
        if ocr is not None and not ocr.workers:  # the cores shared out, not multiplied
            ocr = replace(ocr, workers=max(1, (os.cpu_count() or 1) // n))
        within = tuple(str(r) for r in roots) if roots is not None else None
        jobs = [
            (c, ParseJob(str(c.path), password, ocr, bounds, within, PurePosixPath(c.name).name))
            for c in todo
        ]
        yield from parse_all(jobs, n, limits, on_page=page_read)

    # -- git repositories -------------------------------------------------------------------

    def repositories(self) -> list[RepositorySource]:
        """The repositories added to this project, with the commit each was read at."""
        meta = json.loads((self.path / "project.json").read_text(encoding="utf-8"))
        return [RepositorySource.model_validate(r) for r in meta.get("repositories", [])]

    def _record_repository(self, source: RepositorySource) -> None:
        with self._locked():
            path = self.path / "project.json"
            meta = json.loads(path.read_text(encoding="utf-8"))
            kept = [r for r in meta.get("repositories", []) if r.get("location") != source.location]
            meta["repositories"] = [*kept, source.model_dump()]
            atomic_write(path, json.dumps(meta, ensure_ascii=False).encode())

    def add_repository(
        self,
        location: str,
        *,
        ref: str | None = None,
        on_progress: ProgressCallback | None = None,
        workers: int | None = None,
        ocr: OcrSettings | None = None,
        bounds: ParseBounds = DEFAULT_BOUNDS,
        limits: ParseLimits = DEFAULT_LIMITS,
    ) -> AddReport:
        """Add the files committed in a git repository (a local clone's directory, or a URL
        to clone) at ``ref`` (default HEAD), by the rules in ``gitrepo``; record the commit."""
        local = Path(location).expanduser()
        if local.is_dir():  # recorded absolute, so that an update works from anywhere
            location = str(local.resolve())
        shown = gitrepo.without_credentials(location)
        known = next((r for r in self.repositories() if r.location == shown), None)
        with gitrepo.checkout(location, ref) as repo:
            selection = gitrepo.select(repo, gitrepo.committed_files(repo))
            self._refuse_clashes(location, selection.files)
            report = self._add_selected(
                repo, selection, on_progress, workers, ocr, bounds=bounds, limits=limits
            )
            # Read again: what its earlier commit had and this one lacks leaves the project.
            before = self._files_at(repo, known.commit) if known and known.commit else set()
        gone = self._remove_present(sorted(before - set(selection.files)))
        # A token in the URL is not written down: an update asks git again (its own
        # credential helper, ssh keys), as a user would.
        self._record_repository(RepositorySource(location=shown, ref=ref, commit=repo.commit))
        return report.model_copy(
            update={"skipped": selection.skipped, "removed": gone, "commit": repo.commit}
        )

    @staticmethod
    def _files_at(repo: gitrepo.Checkout, commit: str) -> set[str]:
        try:
            return set(gitrepo.entries(repo, commit))
        except RepositoryError:
            return set()  # that commit is gone (history rewritten): nothing to compare with

    def _remove_present(self, names: Sequence[str]) -> list[str]:
        present = {r.name for r in self._records()}
        gone = [n for n in names if n in present]
        for name in gone:
            self.remove(name)
        return gone

    def _refuse_clashes(self, location: str, files: Sequence[str]) -> None:
        """Documents are named by their paths, so two repositories in one project must not
        share a path: the second would overwrite the first, and updating one would remove
        the other's file."""
        shown = gitrepo.without_credentials(location)
        others = [r.location for r in self.repositories() if r.location != shown]
        if not others:
            return
        clash = sorted(set(files) & {r.name for r in self._records()})
        if clash:
            raise RepositoryError(
                f"{len(clash)} files of {shown} have the names of documents already in "
                f"project {self.name!r} from {others[0]} (e.g. {', '.join(clash[:3])}).",
                hint="Add each repository to a project of its own.",
            )

    def update_repositories(
        self,
        *,
        on_progress: ProgressCallback | None = None,
        workers: int | None = None,
        ocr: OcrSettings | None = None,
        bounds: ParseBounds = DEFAULT_BOUNDS,
        limits: ParseLimits = DEFAULT_LIMITS,
    ) -> list[AddReport]:
        """Read again only what changed in each recorded repository since its commit, and
        remove what it deleted. Raises NotFoundError when the project has none."""
        sources = self.repositories()
        if not sources:
            raise NotFoundError(
                f"Project {self.name!r} has no git repository to update.",
                hint="Add one first: `shesha add PROJECT path/to/clone` or `--git URL`.",
            )
        reports = []
        for source in sources:
            with gitrepo.checkout(source.location, source.ref) as repo:
                if repo.commit == source.commit:
                    reports.append(AddReport(project=self.name, stored=[], failed=[],
                                             commit=repo.commit))  # fmt: skip
                    continue
                changed, deleted = gitrepo.changed_since(repo, source.commit)
                selection = gitrepo.select(repo, changed)
                report = self._add_selected(
                    repo, selection, on_progress, workers, ocr, bounds=bounds, limits=limits
                )
            gone = self._remove_present([*deleted, *selection.skipped])
            self._record_repository(source.model_copy(update={"commit": repo.commit}))
            reports.append(
                report.model_copy(
                    update={"skipped": selection.skipped, "removed": gone, "commit": repo.commit}
                )
            )
        return reports

    def _add_selected(
        self,
        repo: gitrepo.Checkout,
        selection: gitrepo.Selection,
        on_progress: ProgressCallback | None,
        workers: int | None,
        ocr: OcrSettings | None,
        *,
        bounds: ParseBounds,
        limits: ParseLimits,
    ) -> AddReport:
        with tempfile.TemporaryDirectory(prefix="shesha-export-") as tmp:
            unwritten = gitrepo.export(repo, selection, Path(tmp))
            not_written = [FailedInput(path=p, error=e) for p, e in unwritten.items()]
            if not selection.files:
                return AddReport(project=self.name, stored=[], failed=[])
            report = self.add(
                [tmp], ignore=(), on_progress=on_progress, workers=workers, ocr=ocr,
                bounds=bounds, limits=limits,
            )  # fmt: skip
        report.failed[:0] = not_written
        return report

    def remove(self, name: str) -> None:
        record = self.document(name)
        with self._locked():
            (self.docs_dir / f"{record.key}.json").unlink(missing_ok=True)
            (self.docs_dir / record.text_file).unlink(missing_ok=True)
            if record.original:
                (self.originals_dir / record.original).unlink(missing_ok=True)
            self._synced_index()[0].close()

    def sweep(self) -> int:
        """Remove what a killed writer left behind: temporaries and unreferenced texts."""
        with self._locked():
            removed = sweep_temporaries(self.docs_dir) + sweep_temporaries(self.path)
            if self.docs_dir.is_dir():
                live = {r.text_file for r in self._records()}
                for p in self.docs_dir.glob("*.txt"):
                    if p.name not in live:
                        p.unlink(missing_ok=True)
                        removed += 1
        return removed


class ProjectSnapshot:
    """A project's documents as one query sees them (a ``Corpus``): its records are read
    once, so the version, the sizes and the order cannot change under the query, and a
    project of thousands of documents is not reread at every step. The texts are
    content-addressed, and read when asked for."""

    def __init__(self, project: StoredProject, records: list[StoredDocument]) -> None:
        self.project = project
        self._records = records

    @property
    def name(self) -> str:
        return self.project.name

    @property
    def path(self) -> Path:
        return self.project.path

    @functools.cached_property
    def version(self) -> str:
        return _version(self._records)

    def documents_meta(self) -> list[StoredDocument]:
        return list(self._records)

    def sizes(self) -> list[tuple[str, int]]:
        return [(r.name, r.meta.chars) for r in self._records]

    def documents(self) -> list[tuple[str, str]]:
        with self._reading():
            return self.project._texts(self._records)

    def passage_index(self) -> PassageIndex:
        """The project's index, brought to this snapshot's documents: retrieval reads what
        the query reads, whatever was added since. The caller closes it."""
        with self._reading():
            return self.project._synced_index(self._records)[0]

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """Under the project's lock; a text gone since the snapshot is a clear error."""
        try:
            with self.project._locked():
                yield
        except FileNotFoundError as e:
            raise StorageError(
                f"Project {self.name!r}: a document was removed or replaced while a query "
                f"read it ({e}).",
                hint="Ask again: the next query reads the project as it is now.",
            ) from e


def _version(records: Sequence[StoredDocument]) -> str:
    """A content hash over the documents' names and texts, in order."""
    h = hashlib.sha256()
    for r in records:
        h.update(f"{len(r.name)}:{r.name}:{r.text_sha256}\n".encode())
    return h.hexdigest()


class ProjectStore:
    """All projects under one data directory, ``home`` (the settings say where:
    ``shesha.config.home_dir``)."""

    def __init__(self, home: str | os.PathLike[str]) -> None:
        self.home = Path(home).expanduser()
        self.projects_dir = self.home / "projects"

    def _project_path(self, name: str) -> Path:
        validate_project_name(name)
        path = self.projects_dir / name
        if path.resolve().parent != self.projects_dir.resolve():
            raise InvalidName(f"Invalid project name {name!r}: it leaves the data directory.")
        return path

    def exists(self, name: str) -> bool:
        return (self._project_path(name) / "project.json").is_file()

    def create(self, name: str) -> StoredProject:
        path = self._project_path(name)
        try:
            private_dir(self.home)
            private_dir(self.projects_dir)
        except OSError as e:
            raise StorageError(
                f"Cannot create the data directory {self.projects_dir}: {e.strerror or e}.",
                hint="Set SHESHA_HOME to a writable directory.",
            ) from e
        if (path / "project.json").exists():
            raise AlreadyExists(f"Project {name!r} already exists.")
        # Build it aside and rename it into place: a killed create leaves no half project.
        staging = self.projects_dir / f".creating-{uuid.uuid4().hex}"
        staging.mkdir(mode=PRIVATE_DIR)
        (staging / "docs").mkdir(mode=PRIVATE_DIR)
        (staging / "traces").mkdir(mode=PRIVATE_DIR)
        meta = {"name": name, "created": _now(), "format": FORMAT_VERSION}
        atomic_write(staging / "project.json", json.dumps(meta, ensure_ascii=False).encode())
        try:
            self._into_place(staging, path)
        except OSError as e:
            shutil.rmtree(staging, ignore_errors=True)
            if (path / "project.json").exists():  # another process made it first
                return StoredProject(self, name)
            raise StorageError(f"Cannot create project {name!r} at {path}: {e}") from e
        return StoredProject(self, name)

    def _into_place(self, staging: Path, path: Path) -> None:
        """``staging`` renamed to ``path``; a folder there that holds no project (what a
        killed or outlived writer left) is moved aside and removed first."""
        try:
            os.rename(staging, path)
            return
        except OSError:
            if not path.is_dir() or (path / "project.json").exists():
                raise
        stale = self.projects_dir / f".deleting-{uuid.uuid4().hex}"
        os.replace(path, stale)
        shutil.rmtree(stale, ignore_errors=True)
        os.rename(staging, path)

    def get(self, name: str) -> StoredProject:
        if not self.exists(name):
            raise NotFoundError(
                f"No project named {name!r} in {self.projects_dir}.",
                hint="`shesha projects list` shows the projects; `shesha add` makes one.",
            )
        project = StoredProject(self, name)
        project.sweep()
        return project

    def get_or_create(self, name: str) -> StoredProject:
        return self.get(name) if self.exists(name) else self.create(name)

    def list(self) -> list[str]:
        if not self.projects_dir.is_dir():
            return []
        return sorted(
            p.name
            for p in self.projects_dir.iterdir()
            if not p.name.startswith(".") and (p / "project.json").is_file()
        )

    def delete(self, name: str) -> None:
        path = self._project_path(name)
        if not (path / "project.json").is_file():
            raise NotFoundError(f"No project named {name!r} to delete.")
        # Rename first, so the project vanishes at once and whole; then remove the files.
        # Under its lock: no writer is half-way, and the ones that wait find it gone.
        trash = self.projects_dir / f".deleting-{uuid.uuid4().hex}"
        with StoredProject(self, name)._locked():
            os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
