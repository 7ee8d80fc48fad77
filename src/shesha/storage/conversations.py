"""A project's conversation records: ``<project>/conversations/<id>.json``, each the
questions, answers and traces of one conversation, written atomically."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shesha.errors import NotFoundError
from shesha.storage.atomic import atomic_write, private_dir

CONVERSATION_ID = re.compile(r"[0-9a-f]{12}")


@dataclass
class Exchange:
    question: str
    answer: str | None
    status: str
    trace: str | None


@dataclass
class Record:
    id: str
    project: str
    exchanges: list[Exchange] = field(default_factory=list)


def folder(project_path: Path) -> Path:
    return project_path / "conversations"


def save(project_path: Path, record: Record) -> None:
    path = folder(project_path) / f"{record.id}.json"
    private_dir(path.parent)
    atomic_write(path, json.dumps(asdict(record), indent=1, ensure_ascii=False).encode())


def new_record(project: str) -> Record:
    return Record(id=secrets.token_hex(6), project=project)


def load(project_path: Path, conversation_id: str) -> Record:
    path = folder(project_path) / f"{conversation_id}.json"
    try:
        if not CONVERSATION_ID.fullmatch(conversation_id):
            raise ValueError("not an id")  # so it cannot name a file outside the folder
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise NotFoundError(
            f"No conversation {conversation_id!r} in this project.",
            hint="`shesha chat PROJECT` starts one and prints its id.",
        ) from e
    exchanges = [Exchange(**e) for e in data.get("exchanges", [])]
    return Record(id=data["id"], project=data["project"], exchanges=exchanges)


def listed(project_path: Path) -> list[Record]:
    """Every readable record; a writer's temporary file, or a stray or damaged one, is
    not a conversation and is passed over."""
    records = []
    for path in sorted(folder(project_path).glob("*.json")):
        if not CONVERSATION_ID.fullmatch(path.stem):
            continue
        try:
            records.append(load(project_path, path.stem))
        except (NotFoundError, KeyError, TypeError):
            continue  # damaged: its id names no conversation that can be continued
    return records
