"""Judging steps: did one make progress, fail the way an earlier one failed, or answer
with something no output has shown? The loop changes what it says on these judgements."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from shesha.rlm.extract import PLACEHOLDERS, typed_final, without_last_statement
from shesha.rlm.history import Turn

NO_OUTPUT = "(no output: nothing was printed."
"""Every empty step's note starts so; what follows depends on the documents."""
EMPTY_SEARCH = (
    " If this was a search, it matched nothing. Look at how the text is written, and search "
    "for words it uses; it begins:\n{sample})"
)
NOTHING_FOUND = frozenset({"0", "0.0", "[]", "{}", "()", "set()", "None", "''", '""'})
"""A printed count of 0 or an empty collection: often the words are written otherwise."""
NOTHING_FOUND_NOTE = (
    "(found nothing: the text may write these words otherwise, in another case or form. "
    "Print a short sample of the text before you trust an empty result)"
)
SHORT_CORPUS = (
    "(the documents are only {chars:,} characters: print them whole, "
    "for example with print(context[0]), and read the answer there)"
)
REPEATED = (
    "(the same code and the same output as your last step: if the output shows the answer, "
    "reply with FINAL(answer); if not, change the code)"
)
REPEAT_NUDGE_AT = 2
"""The second identical failure in a row gets a nudge that quotes it."""
STALL_AT = 3
"""The third ends the loop with one "answer now" call: no query repeats one error more."""


NOT_AN_ANSWER = (
    "FINAL({answer!r}) holds no answer. Read the output above again, or search with other "
    "words, and print what you find."
)


def no_answer(answer: str) -> bool:
    """Empty, or a prompt's placeholder copied ("your answer"). Every well-formed answer
    counts, "none", "0", "no" and "[]" included: they are answers."""
    text = answer.strip().strip("'\"").strip()
    return not text or text.casefold() in PLACEHOLDERS


def printed(text: str) -> bool:
    return not text.startswith(NO_OUTPUT)


def failure(turn: Turn, earlier: Sequence[Turn] = ()) -> str | None:
    """How a step failed, comparable across steps; None when it made progress, and ""
    when it neither failed nor printed anything new (an empty search, or output the
    model has already seen)."""
    if turn.nudge is not None:
        return "no code to run: " + turn.reply.strip()[:300]
    if turn.error is not None:
        lines = [ln for ln in turn.error.strip().splitlines() if ln.strip()]
        return lines[-1].strip() if lines else turn.error
    if turn.outputs and turn.outputs[-1][1] == REPEATED:
        return REPEATED
    seen = {text for t in earlier for _, text in t.outputs}
    if not any(printed(text) and text not in seen for _, text in turn.outputs):
        return ""
    return None


@dataclass
class Streak:
    """Counts each kind of failure since the last step that made progress, so that two
    failures taking turns (an empty search, a guess, the same search...) add up too."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, failed: str | None) -> int:
        if failed is None:
            self.counts.clear()
            return 0
        if not failed:
            return 0  # nothing printed: not progress, and not a failure to count
        self.counts[failed] = self.counts.get(failed, 0) + 1
        return self.counts[failed]


def supported(guess: str | None, turns: Sequence[Turn]) -> str | None:
    """The guess, if REPL output the model has seen shows it; a guess it has not is made up.

    Output of a block that failed does not count: its traceback quotes the code itself.
    """
    if guess is None or guess.strip().casefold() in PLACEHOLDERS:
        return None
    needle = guess.casefold()
    for turn in turns:
        for attrs, text in turn.outputs:
            if 'status="ok"' in attrs and needle in text.casefold():
                return guess
    return None


_NUMBER_ONLY = re.compile(r"[-+]?[$€£]?\d[\d,]*(?:\.\d+)?%?")


def unseen(answer: str, turns: Sequence[Turn]) -> bool:
    """A typed answer no REPL output can have shown: before any code printed anything, or
    a bare number that no output holds. Small models answer so from a prompt's example."""
    shown = any(
        'status="ok"' in attrs and printed(text) for turn in turns for attrs, text in turn.outputs
    )
    if not shown:
        return True
    return bool(_NUMBER_ONLY.fullmatch(answer.strip())) and supported(answer, turns) is None


def typed_answer(answer: str | None, blocks: Sequence[str]) -> str | None:
    """The answer a reply types: a text FINAL, or a block that is only FINAL(literal)."""
    if answer is None and len(blocks) == 1 and not without_last_statement(blocks[0]):
        return typed_final(blocks[0])
    return answer


def last_value(turns: Sequence[Turn], max_chars: int = 60) -> str | None:
    """The one short value the last step that ran printed (a number, a name), if any."""
    for turn in reversed(turns):
        if not turn.outputs:
            continue
        attrs, text = turn.outputs[-1]
        text = text.replace(NOTHING_FOUND_NOTE, "")
        lines = [line for line in text.strip().splitlines() if line.strip()]
        value = lines[0].strip() if len(lines) == 1 else None
        ok = 'status="ok"' in attrs and printed(text)
        return value if ok and value and len(value) <= max_chars else None
    return None


def same_step(before: Turn, now: Turn) -> bool:
    """The same code as an earlier step, with the same output."""
    return (
        before.reply == now.reply and [o for o in before.outputs if o[1] != REPEATED] == now.outputs
    )
