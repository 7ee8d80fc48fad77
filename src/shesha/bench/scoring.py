"""Scoring rules: S-NIAH contains the value; OOLONG numeric answers score 0.75^|error|,
other answers exact match; OOLONG-Pairs F1 over pairs."""

from __future__ import annotations

import re

from shesha.bench.tasks import EvalTask

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_PAIR = re.compile(r"(\d+)\s*[,;&-]\s*(\d+)|\((\d+)\s*,\s*(\d+)\)")


def normalise(text: str) -> str:
    text = text.strip().lower()
    text = re.sub(r"^(final\s*answer|answer)\s*[:\-]\s*", "", text)
    return re.sub(r"[^\w\s]", "", text).strip()


def score_numeric(answer: str, gold: str) -> float:
    found = _NUMBER.findall(answer.replace(",", ""))
    if not found:
        return 0.0
    error = abs(float(found[0]) - float(gold))
    return float(0.75**error)


def score_exact(answer: str, gold: str) -> float:
    return 1.0 if normalise(answer) == normalise(gold) else 0.0


def parse_pairs(text: str) -> set[tuple[int, int]]:
    pairs = set()
    for m in _PAIR.finditer(text):
        a, b = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        x, y = int(a), int(b)
        pairs.add((min(x, y), max(x, y)))
    return pairs


def score_pairs_f1(answer: str, gold: str) -> float:
    predicted, expected = parse_pairs(answer), parse_pairs(gold)
    if not expected:
        return 1.0 if not predicted else 0.0
    hits = len(predicted & expected)
    if hits == 0:
        return 0.0
    precision, recall = hits / len(predicted), hits / len(expected)
    return 2 * precision * recall / (precision + recall)


def score(task: EvalTask, answer: str | None) -> float:
    if answer is None:
        return 0.0
    if task.scoring == "contains":
        return 1.0 if task.gold in answer else 0.0
    if task.scoring == "numeric":
        return score_numeric(answer, task.gold)
    if task.scoring == "pairs_f1":
        return score_pairs_f1(answer, task.gold)
    return score_exact(answer, task.gold)
