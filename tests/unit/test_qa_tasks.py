"""Short-answer QA task sets: the questions file, parsing its documents, and the scoring."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from tests.fixtures import make_pdf

from shesha.bench.qa import qa_tasks, read_questions
from shesha.bench.scoring import normalise_answer, score_short_answer
from shesha.errors import ConfigError


def write_questions(folder: Path, rows: Sequence[Mapping[str, object]]) -> Path:
    path = folder / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    (tmp_path / "acme.txt").write_text("The CEO of Acme is Maria Lopez.")
    (tmp_path / "lease.pdf").write_bytes(make_pdf(["The lease starts on 1 March 2021."]))
    return tmp_path


def test_questions_become_tasks_with_parsed_documents(docs: Path) -> None:
    path = write_questions(
        docs,
        [
            {"id": "ceo", "question": "Who is the CEO?", "documents": ["acme.txt"],
             "gold": "Maria Lopez", "type": "name", "split": "dev"},
            {"id": "start", "question": "When does the lease start?",
             "documents": ["lease.pdf", "acme.txt"], "gold": ["1 March 2021", "March 1, 2021"],
             "type": "date", "split": "test"},
        ],
    )  # fmt: skip
    spec, tasks = qa_tasks(path)
    assert [t.id for t in tasks] == ["ceo", "start"]
    assert tasks[1].documents[0][0] == "lease.pdf"
    assert "The lease starts on 1 March 2021." in tasks[1].documents[0][1]
    assert tasks[1].meta["golds"] == ["1 March 2021", "March 1, 2021"]
    assert (tasks[0].kind, tasks[0].scoring) == ("qa", "qa")
    assert spec.tasks == 2
    _, test_only = qa_tasks(path, split="test")
    assert [t.id for t in test_only] == ["start"]


def test_a_bad_line_is_named_with_what_is_wrong(tmp_path: Path) -> None:
    path = write_questions(tmp_path, [{"id": "a", "question": "q", "gold": "x"}])
    with pytest.raises(ConfigError, match=r"line 1: not a question \(documents: Field required"):
        read_questions(path)
    path.write_text("{not json\n")
    with pytest.raises(ConfigError, match="line 1"):
        read_questions(path)


def test_a_missing_document_names_the_question_and_the_root(docs: Path) -> None:
    path = write_questions(
        docs, [{"id": "q1", "question": "q", "documents": ["nope.pdf"], "gold": "x"}]
    )
    with pytest.raises(ConfigError, match=r"Question q1: document nope\.pdf") as err:
        qa_tasks(path)
    assert str(docs) in (err.value.hint or "")


def test_duplicate_ids_and_an_empty_split_are_refused(docs: Path) -> None:
    row = {"id": "a", "question": "q", "documents": ["acme.txt"], "gold": "x", "split": "dev"}
    with pytest.raises(ConfigError, match="duplicate question ids: a"):
        read_questions(write_questions(docs, [row, row]))
    with pytest.raises(ConfigError, match="no question has split 'test'"):
        qa_tasks(write_questions(docs, [row]), split="test")


@pytest.mark.parametrize(
    ("answer", "golds", "kind", "expected"),
    [
        ("Maria Lopez", ["Maria Lopez"], "name", 1.0),
        ("maria lopez.", ["Maria Lopez"], "name", 1.0),
        ("The CEO is Maria Lopez.", ["Maria Lopez"], "name", 1.0),
        ("Lopez", ["Maria Lopez"], "name", 0.0),
        ("Maria Lopezz", ["Maria Lopez"], "name", 0.0),
        ("2019", ["March 2019"], "date", 0.0),
        ("2009-01-13", ["January 13, 2009"], "date", 1.0),
        ("Tuesday, January 13, 2009", ["13 January 2009"], "date", 1.0),
        ("01/13/2009", ["January 13, 2009"], "date", 1.0),
        ("2009-01-14", ["January 13, 2009"], "date", 0.0),
        ("March 1, 2021", ["1 March 2021", "March 1, 2021"], "date", 1.0),
        ("$1,577 million", ["$1577.00"], "number", 1.0),
        ("1577.4", ["$1577.00"], "number", 1.0),
        ("1600", ["$1577.00"], "number", 0.0),
        ("It grew 4.5%", ["4.5%"], "number", 1.0),
        ("Yes, it renews every year.", ["Yes"], "yesno", 1.0),
        ("No.", ["Yes"], "yesno", 0.0),
        (" ".join(["word"] * 30) + " Maria Lopez", ["Maria Lopez"], "name", 0.0),
        ("Answer: The Boston office", ["Boston office"], "phrase", 1.0),
    ],
)
def test_short_answer_scoring(answer: str, golds: list[str], kind: str, expected: float) -> None:
    assert score_short_answer(answer, golds, kind) == expected


def test_the_normaliser() -> None:
    assert normalise_answer("Answer: The $1,577.00 million!") == "1577.00 million"
    assert normalise_answer("Ünïcode \uff26\uff35\uff2c\uff2c") == "ünïcode full"  # fullwidth
