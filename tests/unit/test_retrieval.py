"""Passages and the passage index: offsets that cite, pages that hold, a search that
ranks, and an index that follows its documents through add, change and removal."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from shesha.retrieval.index import PassageIndex, SyncReport, query_terms
from shesha.retrieval.passages import MAX_CHARS, split
from shesha.retrieval.window import fill
from shesha.storage.store import ProjectStore, StoredProject

PDF_TEXT = (
    "--- Page 1 ---\nAnnual report.\n\nThe company makes pumps.\n\n"
    "--- Page 2 ---\nRevenue was 4,711 million dollars in 2022.\n\nCosts rose.\n\n"
    "--- Page 3 ---\nThe chief executive is Maria Lopez.\n"
)


def test_every_passage_is_the_text_at_its_offsets_and_on_its_page() -> None:
    passages = split("report.pdf", PDF_TEXT)
    assert [p.page for p in passages] == [1, 2, 3]
    for p in passages:
        assert PDF_TEXT[p.start : p.end] == p.text
        assert "--- Page" not in p.text  # no passage spans a page mark
    assert "4,711" in passages[1].text
    assert passages[1].location == (
        f"report.pdf, page 2, characters {passages[1].start:,}-{passages[1].end:,}"
    )


def test_paragraphs_are_packed_and_long_ones_cut_at_line_ends() -> None:
    lines = "\n".join(f"row {i}: {'x' * 60}" for i in range(200))  # one 14K paragraph
    text = "Short one.\n\nShort two.\n\n" + lines
    passages = split("t.txt", text)
    assert passages[0].text.startswith("Short one.\n\nShort two.")
    assert all(len(p.text) <= MAX_CHARS for p in passages)
    assert all(text[p.start : p.end] == p.text for p in passages)
    assert all(p.text.startswith("row") for p in passages[1:])  # cut where a line ends
    assert "".join(p.text for p in passages).replace("\n", "").count("row") == 200


def test_text_with_no_breaks_at_all_is_still_cut() -> None:
    text = "x" * (3 * MAX_CHARS + 5)
    passages = split("blob.txt", text)
    assert sum(len(p.text) for p in passages) == len(text)
    assert max(len(p.text) for p in passages) <= MAX_CHARS


def test_sheets_and_slides_are_boundaries_too() -> None:
    text = "--- Sheet: Q1 ---\na,b\n1,2\n--- Sheet: Q2 ---\na,b\n3,4\n--- Slide 4 ---\nTitle"
    passages = split("book.xlsx", text)
    assert [p.text for p in passages] == ["a,b\n1,2", "a,b\n3,4", "Title"]
    assert [p.page for p in passages] == [None, None, 4]


def test_search_ranks_the_passage_that_holds_the_question_s_words() -> None:
    with PassageIndex.in_memory([("report.pdf", PDF_TEXT)]) as index:
        (best, *_) = index.search("Who is the chief executive?")
        assert (best.passage.page, best.rank) == (3, 1)
        (revenue, *_) = index.search("What was the revenue in 2022?")
        assert "4,711" in revenue.passage.text
        assert index.search("the of and") == []  # nothing to rank by
        assert index.search("zeppelin") == []


@pytest.mark.parametrize(
    "question", ['"unbalanced', "NEAR(a b)", "a AND OR NOT b", "col:value*", "^$%'--;", ""]
)
def test_no_question_breaks_the_query_syntax(question: str) -> None:
    with PassageIndex.in_memory([("a.txt", "value and near notes about b")]) as index:
        assert isinstance(index.search(question), list)


def test_stemming_matches_other_forms_of_a_word() -> None:
    with PassageIndex.in_memory([("a.txt", "The pumps were manufactured in Ohio.")]) as index:
        assert index.search("where are pumps manufacturing")


def test_query_terms_keep_numbers_and_drop_filler() -> None:
    assert query_terms("What is the FY2018 capex of 3M? In 2018, was it 1?") == [
        "fy2018", "capex", "3m", "2018", "1"
    ]  # fmt: skip


def _texts(**docs: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
    return [(name, f"sha-{hash(t)}") for name, t in docs.items()], dict(docs)


def test_sync_reads_only_what_changed_and_drops_what_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    read: list[str] = []

    def text_of(texts: dict[str, str]) -> Callable[[str], str]:
        def of(name: str) -> str:
            read.append(name)
            return texts[name]

        return of

    docs, texts = _texts(a="alpha apples", b="beta bananas")
    with PassageIndex.open(path) as index:
        assert index.sync(docs, text_of(texts)).added == 2
    assert sorted(read) == ["a", "b"]
    read.clear()
    with PassageIndex.open(path) as index:  # kept on disk: nothing is read again
        assert index.sync(docs, text_of(texts)) == SyncReport(0, 0, 0)
        assert read == []
        docs, texts = _texts(a="alpha apricots", c="gamma grapes")  # a changed, b gone, c new
        report = index.sync(docs, text_of(texts))
        assert (sorted(read), report.removed) == (["a", "c"], 1)
        assert index.search("bananas") == []
        assert index.search("apples") == []
        assert index.search("apricots")[0].passage.document == "a"
        assert index.passages("c")[0].text == "gamma grapes"


def test_a_changed_splitter_rebuilds_the_index(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    docs, texts = _texts(a="alpha apples")
    with PassageIndex.open(path) as index:
        index.sync(docs, texts.__getitem__)
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE meta SET value = 'old' WHERE key = 'split'")
    db.close()
    with PassageIndex.open(path) as index:
        assert index.indexed() == {}
        assert index.sync(docs, texts.__getitem__).added == 1


# -- kept with the project ------------------------------------------------------------


def _project(tmp_path: Path) -> StoredProject:
    return ProjectStore(tmp_path / "home").create("p")


def _found(project: StoredProject, question: str) -> list[str]:
    with project.passage_index() as index:
        return [h.passage.document for h in index.search(question)]


def test_the_index_is_built_at_add_and_follows_change_and_removal(tmp_path: Path) -> None:
    project = _project(tmp_path)
    (tmp_path / "a.txt").write_text("The pumps are made in Ohio.")
    (tmp_path / "b.txt").write_text("The valves are made in Texas.")
    project.add([tmp_path / "a.txt", tmp_path / "b.txt"])
    assert project.index_path.is_file()
    assert project.reindex() == SyncReport(0, 0, 0)  # built at add: an unchanged project
    assert _found(project, "where are valves made") == ["b.txt", "a.txt"]
    (tmp_path / "b.txt").write_text("The valves are now made in Utah.")
    project.add([tmp_path / "b.txt"])
    assert project.reindex() == SyncReport(0, 0, 0)
    assert _found(project, "Utah") == ["b.txt"]
    assert _found(project, "Texas") == []
    project.remove("a.txt")
    assert _found(project, "Ohio") == []
    assert project.reindex() == SyncReport(0, 0, 0)


def test_a_missing_or_damaged_index_is_built_again_from_the_records(tmp_path: Path) -> None:
    project = _project(tmp_path)
    (tmp_path / "a.txt").write_text("The pumps are made in Ohio.")
    project.add([tmp_path / "a.txt"])
    project.index_path.unlink()
    assert _found(project, "Ohio") == ["a.txt"]
    project.index_path.write_bytes(b"this is not a database" * 100)
    assert _found(project, "Ohio") == ["a.txt"]


def test_a_repository_update_updates_the_index(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "pumps.md").write_text("Pumps are tested in Ohio.")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    project = _project(tmp_path)
    project.add_repository(str(repo))
    assert _found(project, "Ohio") == ["pumps.md"]
    (repo / "pumps.md").unlink()
    (repo / "valves.md").write_text("Valves are tested in Utah.")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "two"], check=True)
    project.update_repositories()
    assert _found(project, "Ohio") == []
    assert _found(project, "Utah") == ["valves.md"]


# -- filling a window -----------------------------------------------------------------


def test_a_window_holds_the_best_passages_in_document_order_within_its_budget() -> None:
    filler = "\n\n".join(f"Paragraph {i} is about weather and tides." for i in range(200))
    docs = [
        ("a.txt", filler + "\n\nThe harbour master is Ada Quill.\n\n" + filler),
        ("b.txt", "The harbour opened in 1871.\n\n" + filler),
    ]
    with PassageIndex.in_memory(docs) as index:
        question = "When did the harbour open, and who is its master?"
        window = fill(index, question, 1000, ["a.txt", "b.txt"])
        assert len(window.text) <= 1000
        assert "Ada Quill" in window.text
        assert "1871" in window.text
        assert window.text.index("Ada Quill") < window.text.index("1871")  # a.txt first
        assert window.text.startswith("[a.txt, characters ")
        best = {(h.passage.document, h.passage.start) for h in window.hits}
        again = fill(index, "harbour master", 1000, ["a.txt", "b.txt"], skip=best)
        assert "Ada Quill" not in again.text
        assert "1871" not in again.text


def test_adjacent_passages_are_shown_as_one_stretch() -> None:
    text = "\n\n".join(f"Line {i}: the pump {'x' * 250}" for i in range(6))
    with PassageIndex.in_memory([("a.txt", text)]) as index:
        window = fill(index, "pump", 100_000, ["a.txt"])
        assert len(window.hits) > 1
        assert window.text.count("[a.txt") == 1
