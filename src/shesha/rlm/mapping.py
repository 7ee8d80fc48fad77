"""The map strategy: a question that counts, compares or ranks across records is answered
by mapping a sub-call over the records and counting in code; the model only names the
labels and reads the counts.

1. The corpus must be records (``shesha.retrieval.records``): lines with named fields.
2. The model names the labels each record is sorted into (one call, a JSON schema holds
   the reply), having seen the fields and the first records.
3. ``llm_map`` labels each distinct record text once, its reply held to the labels.
4. Code counts the labels: in all, and for each value of a field with few values, or a
   value the question names (``User 4410``).
5. The model reads the counts and answers.

Anything that cannot go this way (no records, no labels, more texts than the sub-call
budget leaves) gives no answer: the code loop takes the question.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from shesha.llm.types import JsonSchema, Message
from shesha.retrieval.records import Records
from shesha.rlm.events import Final, RecordsMapped, Warned
from shesha.rlm.history import UNTRUSTED, with_earlier, wrap
from shesha.rlm.prompting import PromptSet
from shesha.rlm.reading import QueryState, RootModel
from shesha.rlm.strategy import read_answer

MAX_LABELS = 12
LABEL_CHARS = 40
MEANS_CHARS = 120
LABELS = JsonSchema(
    {
        "type": "object",
        "properties": {
            "labels": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "label": {"type": "string", "maxLength": LABEL_CHARS},
                        "means": {"type": "string", "maxLength": MEANS_CHARS},
                    },
                    "required": ["label", "means"],
                    "additionalProperties": False,
                },
                "minItems": 2,
                "maxItems": MAX_LABELS,
            }
        },
        "required": ["labels"],
        "additionalProperties": False,
    }
)
"""What the model replies: the labels a record is sorted into, each with what it means.
Asked for their meanings, the local model names every label the question lists; asked
for names alone, it named only the one the question asks about."""


@dataclass(frozen=True)
class Label:
    name: str
    means: str = ""


OTHER = "other"
"""Added to a single label, so that a record can be neither."""
ADDED_OTHER = Label(OTHER, "none of the others")
SAMPLE_RECORDS = 5
MAX_GROUPS = 20
"""A field the question names is counted for each of its values when it has at most
this many; otherwise only the values the question names are."""
MAX_TABLE_LINES = 150
MAX_COMPARED = 5
"""Named values of one field, up to this many, are also compared label by label."""
GROUP_WORDS = 3
"""A field of text whose values average more words than this is never a group."""

Mapper = Callable[[str, list[str], list[str]], Awaitable[list[str | None]]]
"""``llm_map(instruction, items, choices)``: the engine's, with its budget and cache."""


def named_labels(reply: str) -> list[Label] | None:
    """The labels in the model's reply: trimmed, distinct (in any case), none empty or a
    placeholder; a single label gains ``other``. None when it names none. A label may be
    a bare string (a server that could not hold the reply to the schema)."""
    try:
        said = json.loads(reply)
    except ValueError:
        return None
    if isinstance(said, dict):
        said = said.get("labels")
    if not isinstance(said, list):
        return None
    labels: list[Label] = []
    for item in said:
        name, means = (
            (item.get("label"), item.get("means", "")) if isinstance(item, dict) else (item, "")
        )
        if not isinstance(name, str):
            continue
        name = _clean(name)
        if not name or len(name) > LABEL_CHARS or not re.search(r"\w", name):
            continue
        if name.casefold() not in {seen.name.casefold() for seen in labels}:
            means = _clean(means)[:MEANS_CHARS] if isinstance(means, str) else ""
            labels.append(Label(name, means))
    labels = labels[:MAX_LABELS]
    if len(labels) == 1 and labels[0].name.casefold() != OTHER:
        labels.append(ADDED_OTHER)
    return labels if len(labels) > 1 else None


def _clean(text: str) -> str:
    return " ".join(text.strip().strip("\"'`.,;:").split())


def labelling(labels: Sequence[Label]) -> str:
    """The labels as the sub-model is shown them: one a line, with what each means."""
    return "\n".join(f"- {x.name}: {x.means}" if x.means else f"- {x.name}" for x in labels)


def tally(
    records: Records, labels: Sequence[str], given: Sequence[str | None], question: str
) -> str:
    """The counts the model reads: for the values of each field the question names (or
    every value of a field it names, when there are few), then each label's in all, last,
    beside the question."""
    lines: list[str] = []
    for field in records.fields:
        column = records.column(field)
        values = list(dict.fromkeys(column))
        if len(values) < 2 or (field in records.worded and _long(values)):
            continue  # one value says nothing; a free text is no group
        named = [v for v in values if _named(v, question)]
        if not named and _named(field, question) and len(values) <= MAX_GROUPS:
            named = values
        if not named:
            continue
        lines.append(f"By {field}:")
        for value in sorted(named):
            counts = Counter(label for v, label in zip(column, given, strict=True) if v == value)
            parts = ", ".join(f"{label} {counts[label]:,}" for label in labels)
            n = sum(1 for v in column if v == value)
            lines.append(f"- {field} {value}: {parts} ({n:,} record{'' if n == 1 else 's'})")
        if 2 <= len(named) <= MAX_COMPARED:
            lines += _compared(field, named, column, labels, given)
        lines.append("")
        if len(lines) > MAX_TABLE_LINES:
            lines = [*lines[:MAX_TABLE_LINES], "(more groups left out)", ""]
            break
    total = Counter(given)
    lines.append(f"In all, {len(records.rows):,} records, each given one label, most first:")
    lines += _ranked(labels, total)
    if total[None]:
        lines.append(f"- (no label): {total[None]:,}")
    return "\n".join(lines)


def _ranked(labels: Sequence[str], total: Counter[str | None]) -> list[str]:
    """The labels' counts, most first, the most and the fewest marked: ranked by code."""
    ranked = sorted(labels, key=lambda label: -total[label])
    most, fewest = total[ranked[0]], total[ranked[-1]]
    lines = []
    for label in ranked:
        n = total[label]
        tied = sum(1 for x in labels if total[x] == n) > 1
        mark = ""
        if most != fewest and n in (most, fewest):
            mark = (
                " ("
                + ("tied for " if tied else "")
                + ("the most" if n == most else "the fewest")
                + ")"
            )
        lines.append(f"- {label}: {n:,}{mark}")
    return lines


def _compared(
    field: str,
    named: Sequence[str],
    column: Sequence[str],
    labels: Sequence[str],
    given: Sequence[str | None],
) -> list[str]:
    """For each label, the named values side by side, most first, and which has more:
    the comparison is made by code, not left to the reader."""
    lines = ["Compared, label by label (most first):"]
    for label in labels:
        counts = Counter(v for v, x in zip(column, given, strict=True) if x == label)
        ranked = sorted(named, key=lambda v: -counts[v])
        side = ", ".join(f"{field} {v} {counts[v]:,}" for v in ranked)
        top = [v for v in ranked if counts[v] == counts[ranked[0]]]
        if len(top) == len(ranked):
            verdict = "the same"
        elif len(top) == 1:
            verdict = f"{field} {top[0]} has " + ("more" if len(ranked) == 2 else "the most")
        else:
            verdict = "no one has the most"
        lines.append(f"- {label}: {side} ({verdict})")
    return lines


def _long(values: Sequence[str]) -> bool:
    """Values of more than a few words: text, not categories."""
    return sum(len(v.split()) for v in values) > GROUP_WORDS * len(values)


def _named(value: str, question: str) -> bool:
    value = value.strip()
    return len(value) >= 2 and bool(
        re.search(rf"(?<!\w){re.escape(value)}(?!\w)", question, re.IGNORECASE)
    )


async def map_records(
    query: QueryState,
    records: Records,
    model: RootModel,
    prompts: PromptSet,
    llm_map: Mapper,
    *,
    room: int | None,
    earlier: Sequence[tuple[str, str | None]] = (),
) -> str | None:
    """The answer read from the labels' counts of ``records``; None when the question
    cannot go this way.
    ``room``: the sub-calls the budget still allows (None: no limit)."""
    query.iteration += 1
    sample = "\n".join(records.words(r) for r in records.rows[:SAMPLE_RECORDS])
    prompt = prompts.render(
        "labels",
        question=query.question,
        fields=wrap(query.nonce, UNTRUSTED, ", ".join(records.fields)),  # a header is data
        records=f"{len(records.rows):,}",
        sample=wrap(query.nonce, UNTRUSTED, sample),
        max=str(MAX_LABELS),
    )
    labels = named_labels(await model.ask([{"role": "user", "content": prompt}], LABELS))
    if labels is None or labels[-1] == ADDED_OTHER:
        # One label (or one repeated): ask once more, for every label a record can get.
        again = prompt + "\n\n" + prompts.render("labels_again")
        labels = named_labels(await model.ask([{"role": "user", "content": again}], LABELS))
    if labels is None:
        return None
    texts = [records.words(r) for r in records.rows]
    distinct = len(set(texts))
    if room is not None and distinct > room:
        query.emit(Warned(message=f"{distinct:,} record texts to label, {room:,} sub-calls left."))
        return None
    # The sub-model sees the labels, never the question, and in an order of their own: a
    # small model labels most records with the label the question asks about when it
    # reads the question (3 of 12 right, against 11 without it, on OOLONG-style records).
    labels = sorted(labels, key=lambda x: (x.name == OTHER, x.name.casefold()))
    instruction = prompts.render("label_record", labels=labelling(labels))
    names = [x.name for x in labels]
    given = await llm_map(instruction, texts, names)
    counts = Counter(given)
    query.emit(
        RecordsMapped(
            records=len(records.rows),
            fields=list(records.fields),
            read=list(records.worded),
            labels=names,
            distinct=distinct,
            counts=[(name, counts[name]) for name in names],
            unlabelled=counts[None],
        )
    )
    query.iteration += 1
    question = query.question
    table = wrap(query.nonce, UNTRUSTED, tally(records, names, given, query.question))
    start: list[Message] = [
        {"role": "system", "content": prompts.render("tally_system")},
        {"role": "user", "content": prompts.render("tally_user", table=table, question=question)},
    ]
    answer = read_answer(await model.ask(with_earlier(prompts, model.with_schema(start), earlier)))
    if answer is None or model.problem(answer) is not None:
        return None
    query.emit(Final(answer=answer, source="map"))
    return answer
