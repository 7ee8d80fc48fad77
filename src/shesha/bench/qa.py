"""Short-answer questions about real documents: a JSONL of questions becomes a task set.

Each line of the questions file is an object::

    {"id": "acme-ceo", "question": "Who is the CEO?", "documents": ["docs/acme.pdf"],
     "gold": "Maria Lopez", "type": "name", "split": "dev"}

- ``documents``: paths, relative to ``root`` (default: the questions file's folder);
  each is parsed as ``shesha add`` would parse it.
- ``gold``: the answer, or a list of accepted answers.
- ``type`` (optional, default "other"): how results are grouped, e.g. name, title,
  phrase, date, number, yesno. ``number`` and ``yesno`` also choose the scoring.
- ``split`` (optional): keep only one split with ``--split``: develop on one, report on
  one you did not look at.
- ``password`` (optional): for an encrypted PDF.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from shesha import __version__
from shesha.bench.tasks import CHARS_PER_TOKEN, EvalTask, TaskSetSpec
from shesha.errors import ConfigError, SheshaError
from shesha.parser import parse_file


class QAQuestion(BaseModel):
    id: str = Field(min_length=1)
    question: str = Field(min_length=1)
    documents: list[str] = Field(min_length=1)
    gold: str | list[str]
    type: str = "other"
    split: str | None = None
    password: str | None = None

    @property
    def golds(self) -> list[str]:
        return [self.gold] if isinstance(self.gold, str) else list(self.gold)


def read_questions(path: Path) -> list[QAQuestion]:
    """The questions file, each line checked; a bad line is named with what is wrong."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror or e}).") from e
    questions: list[QAQuestion] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            questions.append(QAQuestion.model_validate(json.loads(line)))
        except (ValueError, ValidationError) as e:
            detail = e.errors()[0] if isinstance(e, ValidationError) else None
            what = (
                f"{'.'.join(str(p) for p in detail['loc'])}: {detail['msg']}" if detail else str(e)
            )
            raise ConfigError(
                f"{path}, line {number}: not a question ({what}).",
                hint='Each line is {"id", "question", "documents": [paths], "gold", '
                '"type", "split"}; see `shesha eval generate --help`.',
            ) from e
    ids = [q.id for q in questions]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"{path}: duplicate question ids: {', '.join(duplicates)}.")
    return questions


def qa_tasks(
    questions_file: Path, root: Path | None = None, split: str | None = None
) -> tuple[TaskSetSpec, list[EvalTask]]:
    """Parse every document the questions name (once each) and build the task set."""
    questions = read_questions(questions_file)
    if split is not None:
        questions = [q for q in questions if q.split == split]
        if not questions:
            raise ConfigError(f"{questions_file}: no question has split {split!r}.")
    base = root or questions_file.parent
    texts: dict[tuple[str, str | None], str] = {}
    tasks = []
    for q in questions:
        documents = []
        for name in q.documents:
            key = (name, q.password)
            if key not in texts:
                try:
                    texts[key] = parse_file(base / name, password=q.password).text
                except SheshaError as e:
                    raise ConfigError(
                        f"Question {q.id}: document {name} cannot be used: {e}",
                        hint=f"Paths are relative to {base} (--root).",
                    ) from e
            documents.append((name, texts[key]))
        chars = sum(len(t) for _, t in documents)
        meta: dict[str, Any] = {"type": q.type, "split": q.split, "golds": q.golds}
        tasks.append(
            EvalTask(
                id=q.id,
                kind="qa",
                length_tokens=chars // CHARS_PER_TOKEN,
                documents=documents,
                question=q.question,
                gold=q.golds[0],
                scoring="qa",
                meta=meta,
            )
        )
    spec = TaskSetSpec(
        generator=f"qa:{questions_file.name}" + (f":{split}" if split else ""),
        seed=0,
        n=len(tasks),
        lengths=sorted({t.length_tokens for t in tasks}),
        haystack=str(base),
        shesha_version=__version__,
        tasks=len(tasks),
    )
    return spec, tasks
