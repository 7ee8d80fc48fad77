"""Ranked search over a project's passages: SQLite FTS5 with BM25, on disk beside the
project, or in memory for a corpus that has no home.

The index is derived data: the store's records are the truth. ``sync`` brings it to a
list of (document, text hash) pairs, re-reading only the documents that are new or
changed and dropping those that are gone, in one transaction; an unchanged project costs
one small query. A change to the splitter (``SPLIT_VERSION``) rebuilds it.

Why FTS5: it is in Python's standard library (no new dependency), keeps the index on
disk, updates a document at a time, and ranks with BM25; ``benchmarks/retrieval.py``
measures its index and query time and its recall of FinanceBench's evidence pages.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from shesha.retrieval.passages import MAX_CHARS, TARGET_CHARS, Passage, split

SPLIT_VERSION = f"1:{TARGET_CHARS}:{MAX_CHARS}"
"""Stored with the index; when the splitter changes, the index is rebuilt."""

STOPWORDS = frozenset(
    """
    a an and are as at be been but by can could did do does for from had has have how i
    if in into is it its me my no not of on or our shall should so than that the their
    them then there these they this those to was we were what when where which while
    who whom whose why will with would you your about after before between during each
    other over under up down out any all both more most some such only own same very
    just also please give answer question according based
    """.split()  # noqa: SIM905 (a list of 120 words reads better as text)
)
"""Words too common to rank by. "no", "not", "all", "most" stay out of the query only:
the passages keep every word."""

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Hit:
    passage: Passage
    rank: int
    """1 for the best match."""
    score: float
    """BM25 (higher is better)."""


@dataclass(frozen=True)
class SyncReport:
    added: int
    removed: int
    passages: int


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def query_terms(question: str) -> list[str]:
    """The question's words to rank by, in order, each once."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(question.casefold()):
        if (len(word) > 1 or word.isdigit()) and word not in STOPWORDS:
            seen.setdefault(word, None)
    return list(seen)


class PassageIndex:
    """``PassageIndex.open(path)`` or ``PassageIndex.in_memory()``; thread-safe."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._lock = threading.Lock()
        with self._lock, self._db:
            self._db.executescript(
                """
                CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
                CREATE TABLE IF NOT EXISTS documents(name TEXT PRIMARY KEY, sha TEXT);
                CREATE VIRTUAL TABLE IF NOT EXISTS passages USING fts5(
                    text, document UNINDEXED, page UNINDEXED, start UNINDEXED,
                    "end" UNINDEXED, tokenize = 'porter unicode61'
                );
                """
            )
            row = self._db.execute("SELECT value FROM meta WHERE key = 'split'").fetchone()
            if row is None or row[0] != SPLIT_VERSION:
                self._db.execute("DELETE FROM passages")
                self._db.execute("DELETE FROM documents")
                self._db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('split', ?)", (SPLIT_VERSION,)
                )

    @classmethod
    def open(cls, path: str | Path) -> PassageIndex:
        db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode = WAL")
        return cls(db)

    @classmethod
    def in_memory(cls, documents: Iterable[tuple[str, str]] = ()) -> PassageIndex:
        """An index of these (name, text) pairs, for a corpus that is not stored."""
        index = cls(sqlite3.connect(":memory:", check_same_thread=False))
        texts = dict(documents)
        index.sync([(name, _sha(text)) for name, text in texts.items()], texts.__getitem__)
        return index

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> PassageIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- keeping it current --------------------------------------------------------------

    def indexed(self) -> dict[str, str]:
        """{document: the text hash it was indexed at}."""
        with self._lock:
            return dict(self._db.execute("SELECT name, sha FROM documents").fetchall())

    def sync(
        self, documents: Sequence[tuple[str, str]], text_of: Callable[[str], str]
    ) -> SyncReport:
        """Make the index hold exactly these (name, text hash) documents; ``text_of(name)``
        is called only for the new and changed ones."""
        wanted = dict(documents)
        have = self.indexed()
        stale = [name for name, sha in have.items() if wanted.get(name) != sha]
        fresh = [name for name, sha in wanted.items() if have.get(name) != sha]
        if not stale and not fresh:
            return SyncReport(0, 0, 0)
        rows = [
            (p.text, p.document, p.page, p.start, p.end)
            for name in fresh
            for p in split(name, text_of(name))
        ]
        with self._lock, self._db:
            self._db.executemany(
                "DELETE FROM passages WHERE document = ?", [(name,) for name in stale]
            )
            self._db.executemany("DELETE FROM documents WHERE name = ?", [(n,) for n in stale])
            self._db.executemany(
                'INSERT INTO passages(text, document, page, start, "end") VALUES (?, ?, ?, ?, ?)',
                rows,
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO documents VALUES (?, ?)",
                [(name, wanted[name]) for name in fresh],
            )
        return SyncReport(
            added=len(fresh), removed=len(set(stale) - set(fresh)), passages=len(rows)
        )

    # -- reading -------------------------------------------------------------------------

    def search(self, question: str, k: int = 10, *, skip: int = 0) -> list[Hit]:
        """The ``k`` passages that best match the question's words (after the ``skip``
        best), best first; [] when no word of it is in any passage."""
        terms = query_terms(question)
        if not terms or k <= 0:
            return []
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        with self._lock:
            rows = self._db.execute(
                'SELECT text, document, page, start, "end", bm25(passages) AS s FROM passages '
                "WHERE passages MATCH ? ORDER BY s LIMIT ? OFFSET ?",
                (match, k, skip),
            ).fetchall()
        return [
            Hit(Passage(doc, page, start, end, text), rank=skip + i + 1, score=-s)
            for i, (text, doc, page, start, end, s) in enumerate(rows)
        ]

    def passages(self, document: str) -> list[Passage]:
        """A document's passages, in order."""
        with self._lock:
            rows = self._db.execute(
                'SELECT text, document, page, start, "end" FROM passages WHERE document = ? '
                "ORDER BY start",
                (document,),
            ).fetchall()
        return [Passage(doc, page, start, end, text) for text, doc, page, start, end in rows]
