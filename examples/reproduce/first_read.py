"""A short first read of the best passages, against one read of the full window (dev).

python examples/reproduce/first_read.py --pages 10 --out runs/first-read

On the dev pages of L-Eval's Natural Questions (../shared/qa/leval-dev, pages 0-9; never
the holdout), for the first two questions of each page, with the engine's passages
prompt:

- ``full``: one read of the window retrieval fills for the local model's 8K-token window
  (16,547 characters of passages);
- ``short``: one read of the best --short characters of passages (4,000);
- ``widened``: ``short``, and where it says NOT FOUND, a read of the full window of the
  next-best passages (the engine's retrieve strategy with ``first_passages_chars``).

It starts the local model (``make local-model``) and writes rows.jsonl and a table under
--out. The figures are in docs/results/leval-nq-qwen2.5-coder-1.5b/README.md.
"""

from __future__ import annotations

import re
from typing import Any

from piecewise_reading import WINDOW, Reader, dev_arguments, print_table, run_dev

from shesha.bench.scoring import score_short_answer
from shesha.retrieval.index import PassageIndex
from shesha.retrieval.window import fill
from shesha.rlm.strategy import passages_rounds


def words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def study(
    reader: Reader, question: str, gold: str, index: PassageIndex, *, doc: str, short: int
) -> dict[str, Any]:
    first_chars, budget = passages_rounds(WINDOW, question, short)
    full = fill(index, question, budget, [doc])
    first = fill(index, question, first_chars, [doc])
    full_answer, full_tokens = reader.passages(full.text, question)
    short_answer, short_tokens = reader.passages(first.text, question)
    widened_answer, widened_tokens = short_answer, 0
    if short_answer is None:
        shown = {(h.passage.document, h.passage.start) for h in first.hits}
        wide = fill(index, question, budget, [doc], skip=shown)
        widened_answer, widened_tokens = reader.passages(wide.text, question)

    def right(answer: str | None) -> float:
        return score_short_answer(answer, [gold]) if answer else 0.0

    return {
        "question": question,
        "gold_in_full": words(gold) in words(full.text),
        "gold_in_short": words(gold) in words(first.text),
        "full": right(full_answer), "full_tokens": full_tokens,
        "short": right(short_answer), "short_tokens": short_tokens,
        "short_not_found": short_answer is None,
        "widened": right(widened_answer), "widened_tokens": short_tokens + widened_tokens,
    }  # fmt: skip


def main() -> None:
    p = dev_arguments(__doc__ or "")
    p.set_defaults(pages=10)
    p.add_argument("--short", type=int, default=4_000, help="characters of the first read")
    args = p.parse_args()
    rows = run_dev(args, lambda r, q, g, i, d: study(r, q, g, i, doc=d, short=args.short))
    print_table(rows, ("full", "short", "widened"))


if __name__ == "__main__":
    main()
