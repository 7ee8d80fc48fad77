"""Seeded, deterministic task generators: S-NIAH, OOLONG-style and OOLONG-Pairs-style.

The same seed gives the same bytes. Gold answers are computed by code from the records
the generator wrote, never typed in.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import date, timedelta
from itertools import combinations
from pathlib import Path

from shesha import __version__
from shesha.bench.tasks import CHARS_PER_TOKEN, EvalTask, Scoring, TaskSetSpec

KEY_WORDS = (
    "amber", "basil", "cobalt", "dune", "ember", "fjord", "garnet", "harbor", "indigo",
    "juniper", "kelp", "lumen", "maple", "nectar", "onyx", "pebble", "quartz", "raven",
    "saffron", "tundra", "umber", "velvet", "willow", "yarrow", "zephyr",
)  # fmt: skip
FILLER_WORDS = (
    "the", "a", "river", "market", "people", "said", "that", "morning", "long", "city",
    "and", "of", "light", "walked", "through", "old", "house", "under", "quiet", "rain",
    "letters", "found", "between", "two", "hills", "season", "was", "slowly", "bright",
)  # fmt: skip

# OOLONG-style records: the label is hidden in how the text is phrased.
LABELS = ("complaint", "praise", "question", "request")
TEMPLATES: dict[str, tuple[str, ...]] = {
    "complaint": (
        "The delivery arrived late again and the box was crushed.",
        "I waited forty minutes on hold and nobody solved my problem.",
        "The charger stopped working after two days, which is unacceptable.",
    ),
    "praise": (
        "The support team fixed everything in minutes, thank you so much.",
        "Lovely quality, it fits perfectly and looks even better in person.",
        "Fast shipping and a handwritten note, what a delightful surprise.",
    ),
    "question": (
        "Does this model work with the older adapters I already own?",
        "How long does the battery usually last on a single charge?",
        "Is there a version of this jacket that comes in navy blue?",
    ),
    "request": (
        "Please change the shipping address on my order to the new flat.",
        "Kindly send me a copy of the invoice for my records.",
        "Could you cancel the second item and refund it to my card.",
    ),
}


def _rng(seed: int, *parts: object) -> random.Random:
    # Seeded and reproducible on purpose: these are benchmark data, not secrets.
    return random.Random("-".join(str(p) for p in (seed, *parts)))  # noqa: S311


def load_haystack(folder: Path | None) -> tuple[str, str]:
    """Text to hide needles in: a folder of .txt files (sorted), or '' for filler."""
    if folder is None or not folder.is_dir():
        return "", "generated filler"
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(folder.glob("*.txt"))]
    joined = "\n\n".join(t.strip() for t in texts if t.strip())
    return joined, str(folder) if joined else "generated filler"


def _filler(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        sentence = " ".join(rng.choice(FILLER_WORDS) for _ in range(rng.randint(8, 16)))
        sentence = sentence[0].upper() + sentence[1:] + ". "
        out.append(sentence)
        size += len(sentence)
    return "".join(out)[:chars]


def _haystack(base: str, rng: random.Random, chars: int) -> str:
    if not base:
        return _filler(rng, chars)
    start = rng.randrange(len(base))
    text = (base[start:] + "\n\n" + base) * (chars // len(base) + 2)
    return text[:chars]


def sniah(
    seed: int, n: int, lengths: list[int], haystack_dir: Path | None = None
) -> tuple[TaskSetSpec, list[EvalTask]]:
    """RULER-style single needle: a key's 7-digit number at a controlled depth."""
    base, source = load_haystack(haystack_dir)
    tasks = []
    for length in lengths:
        # One haystack per length, as in RULER: tasks differ only by needle and depth.
        hay = _haystack(base, _rng(seed, "sniah-haystack", length), length * CHARS_PER_TOKEN)
        for i in range(n):
            rng = _rng(seed, "sniah", length, i)
            key = f"{rng.choice(KEY_WORDS)}-{rng.choice(KEY_WORDS)}"
            value = str(rng.randint(1_000_000, 9_999_999))
            needle = f" The special magic number for {key} is: {value}. "
            depth = (i + 0.5) / n
            text = hay
            at = int(len(text) * depth)
            boundary = text.find(". ", at)
            at = boundary + 1 if 0 <= boundary < at + 500 else at
            text = text[:at] + needle + text[at:]
            tasks.append(
                EvalTask(
                    id=f"sniah-{length}-{i:03d}",
                    kind="sniah",
                    length_tokens=length,
                    documents=[("haystack.txt", text)],
                    question=(
                        f"What is the special magic number for {key} mentioned in the "
                        "documents? Answer with the number only."
                    ),
                    gold=value,
                    scoring="contains",
                    meta={"depth": round(depth, 4), "key": key, "position": at},
                )
            )
    spec = TaskSetSpec(generator="sniah", seed=seed, n=n, lengths=lengths, haystack=source,
                       shesha_version=__version__, tasks=len(tasks))  # fmt: skip
    return spec, tasks


def _records(rng: random.Random, chars: int, users: list[int]) -> list[tuple[str, int, str, str]]:
    """(date, user, label, text) records until the length is reached."""
    records = []
    size = 0
    start = date(2023, 1, 1)
    while size < chars:
        label = rng.choice(LABELS)
        text = rng.choice(TEMPLATES[label])
        day = (start + timedelta(days=rng.randrange(365))).isoformat()
        user = rng.choice(users)
        records.append((day, user, label, text))
        size += len(text) + 40
    return records


def _render(records: list[tuple[str, int, str, str]]) -> str:
    return "\n".join(f"Date: {d} || User: {u} || Instance: {t}" for d, u, _, t in records)


LABEL_HELP = (
    "Each line is a record 'Date || User || Instance'. Each instance is one of these labels, "
    "not written in the text: complaint (something went wrong), praise (the customer is "
    "happy), question (the customer asks something), request (the customer asks us to do "
    "something)."
)


def oolong(seed: int, n: int, lengths: list[int]) -> tuple[TaskSetSpec, list[EvalTask]]:
    """Aggregation over hidden labels: counts, the most frequent label, user comparisons."""
    tasks = []
    for length in lengths:
        for i in range(n):
            rng = _rng(seed, "oolong", length, i)
            users = sorted(rng.sample(range(10_000, 99_999), 12))
            records = _records(rng, length * CHARS_PER_TOKEN, users)
            counts = Counter(label for _, _, label, _ in records)
            kind = ("count", "most_frequent", "compare")[i % 3]
            if kind == "most_frequent" and len(set(counts.values())) < len(counts):
                kind = "count"  # a tie has no single gold answer
            scoring: Scoring
            if kind == "count":
                label = rng.choice(LABELS)
                question = f"How many instances have the label '{label}'? Answer with a number."
                gold, scoring = str(counts[label]), "numeric"
            elif kind == "most_frequent":
                question = "Which label is the most frequent? Answer with the label only."
                gold, scoring = counts.most_common(1)[0][0], "exact"
            else:
                label = rng.choice(LABELS)
                a, b = rng.sample(users, 2)
                per_user = Counter((u, lab) for _, u, lab, _ in records)
                question = (
                    f"Does user {a} have more '{label}' instances than user {b}? Answer yes or no."
                )
                more = per_user[(a, label)] > per_user[(b, label)]
                gold, scoring = ("yes" if more else "no"), "exact"
            tasks.append(
                EvalTask(
                    id=f"oolong-{length}-{i:03d}",
                    kind="oolong",
                    length_tokens=length,
                    documents=[("records.txt", _render(records))],
                    question=f"{LABEL_HELP}\n\n{question}",
                    gold=gold,
                    scoring=scoring,
                    meta={"question_kind": kind, "records": len(records)},
                )
            )
    spec = TaskSetSpec(generator="oolong", seed=seed, n=n, lengths=lengths, haystack="records",
                       shesha_version=__version__, tasks=len(tasks))  # fmt: skip
    return spec, tasks


def oolong_pairs(seed: int, n: int, lengths: list[int]) -> tuple[TaskSetSpec, list[EvalTask]]:
    """All pairs of users that both satisfy a condition; scored by F1 over pairs."""
    tasks = []
    for length in lengths:
        for i in range(n):
            rng = _rng(seed, "pairs", length, i)
            users = sorted(rng.sample(range(10_000, 99_999), 10))
            records = _records(rng, length * CHARS_PER_TOKEN, users)
            label = rng.choice(LABELS)
            threshold = max(1, len(records) // (len(users) * len(LABELS)))
            per_user = Counter(u for _, u, lab, _ in records if lab == label)
            chosen = sorted(u for u in users if per_user[u] >= threshold)
            gold_pairs = list(combinations(chosen, 2))
            question = (
                f"List all pairs of users who both have at least {threshold} '{label}' "
                "instances. Write each pair as (smaller id, larger id)."
            )
            tasks.append(
                EvalTask(
                    id=f"pairs-{length}-{i:03d}",
                    kind="oolong-pairs",
                    length_tokens=length,
                    documents=[("records.txt", _render(records))],
                    question=f"{LABEL_HELP}\n\n{question}",
                    gold=", ".join(f"({a}, {b})" for a, b in gold_pairs),
                    scoring="pairs_f1",
                    meta={"label": label, "threshold": threshold, "pairs": len(gold_pairs)},
                )
            )
    spec = TaskSetSpec(
        generator="oolong-pairs", seed=seed, n=n, lengths=lengths, haystack="records",
        shesha_version=__version__, tasks=len(tasks),
    )  # fmt: skip
    return spec, tasks
