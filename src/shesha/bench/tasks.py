"""Evaluation tasks, and task sets on disk (``spec.json`` + ``tasks.jsonl``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from shesha.errors import ConfigError
from shesha.storage.atomic import atomic_write

Scoring = Literal["contains", "numeric", "exact", "pairs_f1", "qa"]
CHARS_PER_TOKEN = 4
"""Lengths are given in tokens and realised in characters, at about four per token."""


class EvalTask(BaseModel):
    id: str
    kind: str
    length_tokens: int
    documents: list[tuple[str, str]]
    question: str
    gold: str
    scoring: Scoring
    meta: dict[str, Any] = Field(default_factory=dict)


class TaskSetSpec(BaseModel):
    generator: str
    seed: int
    n: int
    lengths: list[int]
    haystack: str
    shesha_version: str
    tasks: int


def parse_lengths(text: str) -> list[int]:
    """'8k,32k,1m' -> [8192, 32768, 1048576] tokens; plain numbers are tokens."""
    out = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", part)
        if not m:
            raise ConfigError(f"Bad length {part!r}: use numbers of tokens like 8k, 32k or 1m.")
        scale = {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]
        out.append(int(float(m.group(1)) * scale))
    return out


def write_task_set(out: Path, spec: TaskSetSpec, tasks: list[EvalTask]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = "".join(t.model_dump_json() + "\n" for t in tasks)
    atomic_write(out / "tasks.jsonl", lines.encode())
    atomic_write(out / "spec.json", spec.model_dump_json(indent=1).encode())


def read_task_set(folder: Path) -> tuple[TaskSetSpec, list[EvalTask]]:
    try:
        spec = TaskSetSpec.model_validate_json((folder / "spec.json").read_bytes())
        with open(folder / "tasks.jsonl", encoding="utf-8") as f:
            tasks = [EvalTask.model_validate(json.loads(line)) for line in f if line.strip()]
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"{folder} is not a task set ({e}).",
            hint="Make one with `shesha eval generate ... --out DIR`.",
        ) from e
    return spec, tasks
