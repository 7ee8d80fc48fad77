"""search and llm_map: the helpers every query's code may call, run by the host."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from shesha.errors import ConfigError
from shesha.llm.types import Message, NotedChoice
from shesha.rlm.config import EngineConfig
from shesha.rlm.engine import RLMEngine
from shesha.rlm.helpers import pick
from shesha.rlm.result import QueryResult
from shesha.rlm.tools import HostTools
from shesha.sandbox import InMemoryCorpus, SandboxPool
from shesha.testing import FunctionModel

FILLER = "\n\n".join(f"Paragraph {i} describes the weather on the coast." for i in range(300))
HARBOUR = InMemoryCorpus(
    [("log.txt", FILLER + "\n\nThe harbour master is Ada Quill.\n\n" + FILLER)]
)
RECORDS = InMemoryCorpus(
    [("records.txt", "late delivery\nlovely service\nlate delivery\nwhere is my order\n")]
)


def is_subcall(messages: list[Message]) -> bool:
    return messages[0]["content"].startswith("You follow one instruction")


def run_code(
    code: str, corpus: InMemoryCorpus, sandboxes: SandboxPool, tmp_path: Path, sub: Any = None
) -> tuple[QueryResult, FunctionModel]:
    """One step: ``code``, which sets ``out``, then FINAL(str(out)) in the same block."""

    def fn(messages: list[Message], _: str) -> str:
        if is_subcall(messages):
            return sub(messages[-1]["content"]) if sub else "?"
        return f"```repl\n{code}\nFINAL(str(out))\n```"

    model = FunctionModel(fn)
    engine = RLMEngine(model, sandboxes, EngineConfig(model="m", strategy="code"))
    result = asyncio.run(engine.run("q", corpus, trace_dir=tmp_path / "traces"))
    return result, model


def test_search_finds_the_passage_and_says_where_it_is(
    sandboxes: SandboxPool, tmp_path: Path
) -> None:
    code = (
        "hit = search('harbour master', k=3)[0]\n"
        "out = ' '.join([hit['document'], str(hit['start']), hit['text']])"
    )
    result, _ = run_code(code, HARBOUR, sandboxes, tmp_path)
    assert result.status == "success"
    document, start, text = (result.answer or "").split(" ", 2)
    assert document == "log.txt"
    assert "The harbour master is Ada Quill." in text
    assert HARBOUR.documents()[0][1][int(start) :].startswith(text)  # where it is, exactly


def test_a_search_that_finds_nothing_says_so_and_shows_the_text(
    sandboxes: SandboxPool, tmp_path: Path
) -> None:
    code = "try:\n    out = search('zeppelin')\nexcept Exception as e:\n    out = e"
    result, _ = run_code(code, HARBOUR, sandboxes, tmp_path)
    assert "no passage has any word of 'zeppelin'" in (result.answer or "")
    assert "Paragraph 0 describes the weather" in (result.answer or "")


def test_llm_map_asks_each_distinct_item_once_and_keeps_to_the_choices(
    sandboxes: SandboxPool, tmp_path: Path
) -> None:
    asked: list[str] = []

    def sub(content: str) -> str:
        asked.append(content)
        if "late delivery" in content:
            return "Complaint."
        if "lovely" in content:
            return "praise"
        return "It is hard to say." if "only" not in content else "question"

    code = (
        "from collections import Counter\n"
        "records = context[0].splitlines()\n"
        "kinds = ['complaint', 'praise', 'question']\n"
        "labels = llm_map('Label the record.', records, choices=kinds)\n"
        "out = f'{labels} {Counter(labels).most_common(1)[0][0]}'"
    )
    result, _ = run_code(code, RECORDS, sandboxes, tmp_path, sub)
    assert result.answer == "['complaint', 'praise', 'complaint', 'question'] complaint"
    assert sum("late delivery" in a for a in asked) == 1  # identical items: asked once
    assert sum("where is my order" in a for a in asked) == 2  # named no choice: asked again
    assert result.subcalls == 4


def test_llm_map_asks_the_model_to_keep_to_the_choices(
    sandboxes: SandboxPool, tmp_path: Path
) -> None:
    code = (
        "kinds = ['complaint', 'praise', 'question']\n"
        "labels = llm_map('Label the record.', context[0].splitlines(), choices=kinds)\n"
        "free = llm_map('Say what the record is about.', ['late delivery'])\n"
        "out = labels"
    )
    _, model = run_code(code, RECORDS, sandboxes, tmp_path, lambda _: "praise")
    sub = [c for (_, m), c in zip(model.calls, model.constraints, strict=True) if is_subcall(m)]
    # distinct items, each reply a note on the item, then one of the choices
    assert sub[:3] == [NotedChoice(("complaint", "praise", "question"))] * 3
    assert sub[3:] == [None]  # no choices: a free reply


def test_llm_map_without_choices_returns_the_replies_in_order(
    sandboxes: SandboxPool, tmp_path: Path
) -> None:
    code = "out = llm_map('Upper-case it.', ['a', 'b', 'a'])"
    result, _ = run_code(code, RECORDS, sandboxes, tmp_path, lambda c: c.split("\n")[1].upper())
    assert result.answer == "['A', 'B', 'A']"


@pytest.mark.parametrize(
    "code",
    [
        "llm_map(1, ['a'])",
        "llm_map('x', 'not a list')",
        "llm_map('x', ['a'], choices=[])",
        "search('')",
        "search('a', k=1000)",
    ],
)
def test_bad_arguments_raise_in_the_code_with_what_to_do(
    code: str, sandboxes: SandboxPool, tmp_path: Path
) -> None:
    result, _ = run_code(
        f"try:\n    out = {code}\nexcept Exception as e:\n    out = 'refused ' + str(e)",
        RECORDS,
        sandboxes,
        tmp_path,
    )
    assert (result.answer or "").startswith("refused")


def test_a_user_tool_may_not_take_a_helper_s_name(sandboxes: SandboxPool) -> None:
    def search(words: str) -> str:
        return words

    with pytest.raises(ConfigError, match="search"):
        RLMEngine(FunctionModel(lambda m, _: ""), sandboxes, EngineConfig(model="m"),
                  tools=HostTools([search]))  # fmt: skip


@pytest.mark.parametrize(
    ("reply", "picked"),
    [("praise", "praise"), ("Praise.", "praise"), ("It is a complaint.", "complaint"),
     ("complaint or praise", None), ("no idea", None), ("complaints", None),
     # A note first, then the label: the label line decides, whatever the note names.
     ("Says: no praise here, the parcel was late\nLabel: complaint", "complaint"),
     ("Says: a complaint? no, a thank-you\nLabel: Praise.", "praise"),
     ("Says: it went wrong\nLabel: neither", None)],
)  # fmt: skip
def test_a_reply_picks_one_choice_or_none(reply: str, picked: str | None) -> None:
    assert pick(reply, ["complaint", "praise"]) == picked


def test_llm_map_shows_each_item_before_the_instruction(
    sandboxes: SandboxPool, tmp_path: Path
) -> None:
    code = "out = llm_map('Which kind is it?', ['late delivery'])"
    _, model = run_code(code, RECORDS, sandboxes, tmp_path, lambda _: "complaint")
    (user,) = [m[-1]["content"] for _, m in model.calls if is_subcall(m)]
    assert user.index("late delivery") < user.index("Which kind is it?")
    assert user.endswith("Which kind is it?")  # the question after the text


def test_llm_map_with_choices_asks_for_a_note_on_the_item_before_its_label(
    sandboxes: SandboxPool, tmp_path: Path
) -> None:
    # Measured with the local model: asked for a bare label, it called 5 of 10 short
    # messages right ('complaint' or 'non-complaint'); asked to say first what the
    # message says, 9 of 10.
    notes = {"late delivery": "Says: the order was late, not praise\nLabel: complaint"}
    code = "out = llm_map('Label it.', ['late delivery'], choices=['complaint', 'praise'])"
    result, model = run_code(code, RECORDS, sandboxes, tmp_path, lambda c: notes[c.split("\n")[1]])
    assert result.answer == "['complaint']"
    (user,) = [m[-1]["content"] for _, m in model.calls if is_subcall(m)]
    assert "Says:" in user  # the format is asked for in words too
    assert "Label:" in user
