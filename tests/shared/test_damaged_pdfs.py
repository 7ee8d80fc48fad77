"""Real PDFs from ../shared/corpus, cut short at several points as an interrupted
download would leave them: what survives is read, matches the intact file, and what is
lost is named; a cut no tool can survive gets a plain error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shesha.errors import ParseError
from shesha.parser import parse_bytes

pytestmark = pytest.mark.shared

CUTS = (0.3, 0.6, 0.9)
FILES = [
    "pdf/pdfplumber__chelsea_pdta.pdf",
    "pdf/pdfplumber__federal-register-2020-17221.pdf",
    "pdf/unstructured__DA-619p.pdf",
    "pdf/pdfplumber__pr-136-example.pdf",
    "pdf/pypdf-samples__habibi-rotated.pdf",
    "pdf/unstructured__reliance.pdf",
]


def pages_of(text: str) -> dict[int, str]:
    parts = re.split(r"^--- Page (\d+) ---$", text, flags=re.M)
    return {int(parts[i]): parts[i + 1].strip() for i in range(1, len(parts), 2)}


@pytest.mark.parametrize("name", FILES)
def test_cut_pdfs_keep_their_surviving_pages_as_the_intact_file_reads_them(
    shared_dir: Path, name: str
) -> None:
    data = (shared_dir / "corpus" / name).read_bytes()
    intact = [set(text.split()) for text in pages_of(parse_bytes(data, name).text).values()]
    refused: list[str] = []
    for cut in CUTS:
        try:
            doc = parse_bytes(data[: int(len(data) * cut)], name)
        except ParseError as e:
            refused.append(str(e))
            continue
        assert "cut short" in doc.meta.warnings[0] or "damaged" in doc.meta.warnings[0]
        unsure = flagged(doc.meta.warnings[0])
        texts = [
            t
            for n, t in pages_of(doc.text).items()
            if t and not t.startswith("[page") and n not in unsure
        ]
        alike = sum(_as_intact(t, intact) for t in texts)
        assert alike >= 0.9 * len(texts), (cut, alike, len(texts))
    for said in refused:  # plain about it, and says what was tried
        assert "no page" in said
        assert "tried pdfium's own repair" in said


def flagged(warning: str) -> set[int]:
    """The pages a warning says lost some of their fonts."""
    m = re.search(r"pages? ([\d, -]+) lost some of their fonts", warning)
    numbers: set[int] = set()
    for span in m.group(1).split(", ") if m else []:
        first, _, last = span.partition("-")
        numbers.update(range(int(first), int(last or first) + 1))
    return numbers


def _as_intact(text: str, intact: list[set[str]]) -> bool:
    """The same words as an intact page, or nearly (a space more, a fragment drawn from
    a lost object less)."""
    words = set(text.split())
    return any(len(words & page) >= 0.85 * len(words | page) for page in intact)
