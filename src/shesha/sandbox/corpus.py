"""What a sandbox loads as ``context``: a versioned, ordered set of documents."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


class Corpus(Protocol):
    """A project's documents as the sandbox sees them.

    ``version`` is a content hash: two corpora with the same version hold the same
    names and texts in the same order, so a container that has loaded one need not
    be sent the other.
    """

    @property
    def version(self) -> str: ...

    def documents(self) -> Sequence[tuple[str, str]]:
        """(name, text) pairs, in the project's stable order."""
        ...

    def sizes(self) -> Sequence[tuple[str, int]]:
        """(name, characters) pairs in the same order, without reading the texts."""
        ...


def content_version(documents: Sequence[tuple[str, str]]) -> str:
    """The sha256 over names and texts, in order, unambiguously delimited."""
    h = hashlib.sha256()
    for name, text in documents:
        for part in (name, text):
            data = part.encode("utf-8", "surrogatepass")
            h.update(len(data).to_bytes(8, "big"))
            h.update(data)
    return h.hexdigest()


@dataclass(frozen=True)
class InMemoryCorpus:
    """A corpus held in memory, e.g. for tests and one-off questions."""

    docs: Sequence[tuple[str, str]]
    version: str = field(default="")

    def __post_init__(self) -> None:
        if not self.version:
            object.__setattr__(self, "version", content_version(self.docs))

    def documents(self) -> Sequence[tuple[str, str]]:
        return self.docs

    def sizes(self) -> Sequence[tuple[str, int]]:
        return [(name, len(text)) for name, text in self.docs]
