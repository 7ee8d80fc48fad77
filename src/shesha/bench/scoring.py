"""Scoring rules: S-NIAH contains the value; OOLONG numeric answers score 0.75^|error|,
other answers exact match; OOLONG-Pairs F1 over pairs.

Short answers (``qa``) are scored against each accepted gold answer, after this
normaliser: Unicode NFKC, case folded, thousands separators dropped (``1,577`` ->
``1577``), an ``Answer:`` prefix dropped, punctuation turned into spaces (a ``.``
between digits kept), the articles a/an/the dropped, whitespace collapsed. Then:

- ``number`` questions: 1 when a number in the answer is within 1% of the gold's first
  number (``$1577.00`` matches ``1,577 million``);
- ``yesno`` questions: 1 when the answer starts with the gold's yes or no;
- ``date`` questions: also 1 when the answer and the gold name the same day in any
  common spelling (``2009-01-13``, ``January 13, 2009``, ``13 January 2009``,
  ``01/13/2009``), as the day it is, not as words;
- every other type: 1 when the normalised gold appears in the normalised answer as whole
  words, and the answer is not much longer than needed (at most twice the gold's words
  plus eight), so pasting a whole passage does not score.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from datetime import date, datetime

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


_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_NOT_WORD = re.compile(r"(?!(?<=\d)\.(?=\d))[^\w\s]")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def normalise_answer(text: str) -> str:
    """The short-answer normaliser described above."""
    text = unicodedata.normalize("NFKC", text).casefold().strip()
    text = re.sub(r"^(?:final\s*answer|answer)\s*[:\-]\s*", "", text)
    text = _NOT_WORD.sub(" ", _THOUSANDS.sub("", text))
    return " ".join(_ARTICLES.sub(" ", text).split())


def _numbers(text: str) -> list[float]:
    return [float(n) for n in _NUMBER.findall(_THOUSANDS.sub("", text))]


_DATE_FORMATS = ("%Y-%m-%d", "%B %d, %Y", "%b %d, %Y", "%d %B %Y", "%d %b %Y", "%m/%d/%Y",
                 "%A, %B %d, %Y", "%B %d %Y")  # fmt: skip
_DATE_SPAN = re.compile(
    r"\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{4}|(?:[A-Z][a-z]+, )?[A-Z][a-z]+\.? \d{1,2},? \d{4}"
    r"|\d{1,2} [A-Z][a-z]+\.? \d{4}"
)


def _days(text: str) -> set[date]:
    """Every day a text names, in the spellings above."""
    found = set()
    for span in _DATE_SPAN.findall(text):
        for fmt in _DATE_FORMATS:
            try:
                found.add(datetime.strptime(span.replace(".", ""), fmt).date())
                break
            except ValueError:
                continue
    return found


def score_short_answer(answer: str, golds: list[str], kind: str = "other") -> float:
    """1.0 when the answer matches any accepted gold answer (see the module's rules)."""
    said = normalise_answer(answer)
    if kind == "date" and len(answer) < 80 and _days(answer) & {d for g in golds for d in _days(g)}:
        return 1.0
    for gold in golds:
        expected = normalise_answer(gold)
        if kind == "number":
            wanted = _numbers(gold)
            if wanted and any(
                abs(n - wanted[0]) <= max(0.01 * abs(wanted[0]), 1e-9) for n in _numbers(answer)
            ):
                return 1.0
            continue
        if kind == "yesno":
            first = expected.split()[:1]
            if first and said.split()[:1] == first:
                return 1.0
            continue
        words, gold_words = said.split(), expected.split()
        if not gold_words or len(words) > 2 * len(gold_words) + 8:
            continue
        if f" {expected} " in f" {said} ":
            return 1.0
    return 0.0


def score(task: EvalTask, answer: str | None) -> float:
    if answer is None:
        return 0.0
    if task.scoring == "contains":
        return 1.0 if task.gold in answer else 0.0
    if task.scoring == "numeric":
        return score_numeric(answer, task.gold)
    if task.scoring == "pairs_f1":
        return score_pairs_f1(answer, task.gold)
    if task.scoring == "qa":
        golds = task.meta.get("golds") or [task.gold]
        return score_short_answer(answer, [str(g) for g in golds], str(task.meta.get("type")))
    return score_exact(answer, task.gold)


def constant_baseline(
    tasks: Sequence[EvalTask], chosen_on: Sequence[EvalTask] | None = None
) -> float:
    """The mean score of answering every question of a kind with one constant answer.

    For each kind of question (the task's ``question_kind``, else its scoring) at each
    length, the answer is the gold of ``chosen_on`` that scores best over ``chosen_on``'s
    tasks of that kind and length. Choose on another task set of the same generator
    (another seed): chosen on ``tasks`` themselves (the default), a kind with one task
    scores 1, by hindsight. A method that does not beat it has learnt nothing from the
    documents."""
    pool = tasks if chosen_on is None else chosen_on
    groups: dict[tuple[str, int], list[EvalTask]] = {}
    for task in pool:
        groups.setdefault(_kind(task), []).append(task)
    best = {key: _best_constant(group) for key, group in groups.items()}
    total = sum(score(t, best[_kind(t)]) for t in tasks if _kind(t) in best)
    return total / len(tasks) if tasks else 0.0


def _best_constant(group: Sequence[EvalTask]) -> str:
    """Of the group's golds, the one that scores best given to every task of it."""
    return max(sorted({t.gold for t in group}), key=lambda a: sum(score(t, a) for t in group))


def _kind(task: EvalTask) -> tuple[str, int]:
    return str(task.meta.get("question_kind", task.scoring)), task.length_tokens
