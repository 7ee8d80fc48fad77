"""The count strategy: "how many times is X mentioned" is counted by code on the host. The
model only names what to count (one constrained call); it never types the number."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from shesha.llm.types import JsonSchema, Message
from shesha.rlm.config import EngineConfig
from shesha.rlm.counting import named_phrase, occurrences
from shesha.rlm.engine import RLMEngine
from shesha.rlm.events import Final, PhraseCounted, StrategyChosen, strategy_note
from shesha.rlm.result import QueryResult
from shesha.rlm.strategy import choose, counts_mentions
from shesha.rlm.trace import read_trace
from shesha.sandbox import InMemoryCorpus, SandboxPool
from shesha.testing import FunctionModel

FILLER = "\n\n".join(f"Paragraph {i} describes the weather on the coast." for i in range(400))
BOOK = InMemoryCorpus(
    [
        ("a-volume-one.txt", FILLER + "\nThey rode to Moscow. MOSCOW burned.\n" + FILLER),
        ("b-volume-two.txt", "Moscow's streets; a Muscovite; moscow again.\n" + FILLER),
    ]
)  # "Moscow" as written or in capitals: 3 times ("moscow" and "Muscovite" are not)
WINDOW = 3_000  # past it: BOOK is about 40,000 characters
PHRASE_PROMPT = "word or phrase"


def is_phrase_call(messages: list[Message]) -> bool:
    return PHRASE_PROMPT in messages[-1]["content"]


def run(
    fn: Any, sandboxes: SandboxPool, tmp_path: Path, question: str, **config: Any
) -> tuple[QueryResult, FunctionModel]:
    model = FunctionModel(fn)
    config.setdefault("show_whole_chars", WINDOW)
    engine = RLMEngine(model, sandboxes, EngineConfig(model="m", **config))
    result = asyncio.run(engine.run(question, BOOK, trace_dir=tmp_path / "traces"))
    return result, model


def events(result: QueryResult) -> list[Any]:
    return read_trace(result.trace_path or "").events


# -- the rule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "question",
    [
        "How many times is Moscow mentioned in the book?",
        "How often does the word 'ship' appear?",
        "How many times does the name Ada occur in the log?",
        "Count the mentions of Napoleon.",
        "What is the number of occurrences of 'harbour'?",
    ],
)
def test_questions_about_how_often_words_appear_are_counted(question: str) -> None:
    assert counts_mentions(question)
    assert choose("auto", 9_000, 5_000, needs_all=True, mentions=True).strategy == "count"
    assert choose("auto", 1_000, 5_000, needs_all=True, mentions=True).strategy == "count"


@pytest.mark.parametrize(
    "question",
    [
        "How many times did Pierre meet Natasha?",
        "Which label is the most frequent?",
        "How many orders were late?",
        "Who is the harbour master?",
        # Events, not words (regressions: each was routed to the count):
        "How many times did the outage occur?",
        "How many times was the drug used?",
        "How many times did the defendant appear in court?",
        "How many times has the paper been cited?",
        "How many times was she named employee of the month?",
        "How often did earthquakes occur in 2020?",
        "How many times did Pierre's team win and Natasha's lose?",  # apostrophes, no quote
    ],
)
def test_other_questions_are_not_counted_by_phrase(question: str) -> None:
    assert not counts_mentions(question)


def test_a_model_with_no_window_keeps_the_code_loop() -> None:
    assert choose("auto", 9_000, 0, needs_all=True, mentions=True).strategy == "code"
    assert choose("count", 10, 0).strategy == "count"  # asked for


# -- what the model names ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "phrase"),
    [
        ('{"phrase": "Moscow"}', "Moscow"),
        ('{"phrase": " \\"Moscow\\". "}', "Moscow"),
        ("Moscow", "Moscow"),
        ('{"phrase": "moscow"}', "Moscow"),  # as the question writes it
        ('{"phrase": "NONE"}', None),
        ('{"phrase": ""}', None),
        ('{"phrase": "Paris"}', None),  # not a word of the question: never counted
        ('{"phrase": "Mosc"}', None),  # part of a word is not a phrase of the question
        ("not json {", None),
        # The question's own counting words are not what it counts (regressions):
        ('{"phrase": "Moscow mentioned"}', None),
        ('{"phrase": "the book"}', None),
        ('{"phrase": "How many times"}', None),
        ('{"phrase": "mentioned"}', None),
        ('{"phrase": "is"}', None),
    ],
)
def test_the_phrase_must_be_words_of_the_question(reply: str, phrase: str | None) -> None:
    assert named_phrase(reply, "How many times is Moscow mentioned in the book?") == phrase


@pytest.mark.parametrize(
    ("reply", "question", "phrase"),
    [
        ("moscow", "How many times is Moscow mentioned?", "Moscow"),  # the question's case
        ("ship", 'How often does the word "ship" appear?', "ship"),
        ("word", 'How often does the word "ship" appear?', None),
        ("she", "How many times is she mentioned?", None),  # a follow-up's pronoun
        ("it", "How many times is it mentioned in the text?", None),
        ("US", "How many times is the US mentioned?", "US"),  # capitals: not the pronoun
        (".NET", "How many times is .NET mentioned?", ".NET"),
        # Anything else in the question narrows the count: the code loop takes it.
        ("Paris", "How many times is Paris mentioned in chapter 3?", None),
        ("cats", "How many times are cats and dogs mentioned?", None),
        ("cat", "How many times more often is cat mentioned than dog?", None),
    ],
)
def test_the_phrase_is_exactly_what_the_question_counts(
    reply: str, question: str, phrase: str | None
) -> None:
    assert named_phrase(json.dumps({"phrase": reply}), question) == phrase


def test_occurrences_are_whole_words() -> None:
    text = "Moscow, moscow; MOSCOW. Moscow's gate. Muscovite. Moscowitz. xMoscow"
    assert occurrences("Moscow", text) == 3  # as written, or in capitals
    assert occurrences("moscow", text) == 4  # lower case: any case
    assert occurrences("new  york", "New York, new\nyork, NewYork") == 2  # any spacing
    assert occurrences("a.b", "a.b axb") == 1  # the phrase is literal, not a pattern
    assert occurrences("Moscow", "") == 0


def test_occurrences_keep_names_apart_from_words() -> None:
    # Regressions: "US" counted "us", "May" the verb, ".NET" lost its dot.
    assert occurrences("US", "let us go to the US, then the US again") == 2
    assert occurrences("May", "In May we may go. MAY") == 2
    assert occurrences(".NET", ".NET and net income") == 1


def test_occurrences_of_symbols_and_either_apostrophe() -> None:
    assert occurrences("$", "It cost $100 and $5.") == 2  # no word boundary at a symbol
    assert occurrences("50%", "50% and 150% and 50 %") == 1
    assert occurrences("don't", "I don\u2019t, you don't, they dont") == 2


# -- end to end --------------------------------------------------------------------------


def test_a_mention_count_is_computed_not_typed(sandboxes: SandboxPool, tmp_path: Path) -> None:
    def fn(messages: list[Message], _: str) -> str:
        assert is_phrase_call(messages), "only the phrase is asked of the model"
        return json.dumps({"phrase": "Moscow"})

    result, model = run(fn, sandboxes, tmp_path, "How many times is Moscow mentioned in the book?")
    assert (result.answer, result.status) == ("3", "success")
    assert len(model.calls) == 1
    assert isinstance(model.constraints[0], JsonSchema)
    trace = events(result)
    assert [e.strategy for e in trace if isinstance(e, StrategyChosen)] == ["count"]
    (counted,) = [e for e in trace if isinstance(e, PhraseCounted)]
    assert (counted.phrase, counted.total) == ("Moscow", 3)
    assert counted.documents == [("a-volume-one.txt", 2), ("b-volume-two.txt", 1)]
    assert not counted.any_case  # "Moscow" as written, or in capitals
    note = strategy_note(counted)
    assert "'Moscow'" in note
    assert "as written or in capitals" in note
    assert ": 3 in 2 document(s)" in note
    assert [e.source for e in trace if isinstance(e, Final)] == ["count"]


def test_zero_is_an_answer(sandboxes: SandboxPool, tmp_path: Path) -> None:
    result, _ = run(
        lambda m, _: '{"phrase": "Kutuzov"}', sandboxes, tmp_path,
        "How many times is Kutuzov mentioned?",
    )  # fmt: skip
    assert (result.answer, result.status) == ("0", "success")


def test_a_phrase_not_in_the_question_goes_to_the_code_loop(
    sandboxes: SandboxPool, tmp_path: Path
) -> None:
    def fn(messages: list[Message], _: str) -> str:
        if is_phrase_call(messages):
            return '{"phrase": "Paris"}'
        if "repl" in messages[0]["content"] and len(messages) == 2:
            return "```repl\nprint(sum(t.count('Moscow') for t in context))\n```"
        return "FINAL(3)"

    result, _ = run(fn, sandboxes, tmp_path, "How many times is Moscow mentioned in the book?")
    assert (result.answer, result.status) == ("3", "success")
    assert not [e for e in events(result) if isinstance(e, PhraseCounted)]


def test_a_question_of_another_kind_is_never_asked_for_a_phrase(
    sandboxes: SandboxPool, tmp_path: Path
) -> None:
    def fn(messages: list[Message], _: str) -> str:
        assert not is_phrase_call(messages)
        return "```repl\nprint(2)\n```" if len(messages) == 2 else "FINAL(2)"

    result, _ = run(fn, sandboxes, tmp_path, "Which label is the most frequent?")
    assert result.answer == "2"


def test_a_count_of_a_phrase_costs_no_routing_call(sandboxes: SandboxPool, tmp_path: Path) -> None:
    # Regression: "the number of appearances" first cost a FIND/COUNT call past the window.
    asked: list[str] = []

    def fn(messages: list[Message], _: str) -> str:
        asked.append(messages[-1]["content"])
        return '{"phrase": "weather"}'

    question = "What is the number of appearances of 'weather'?"
    result, _ = run(fn, sandboxes, tmp_path, question)
    assert (result.answer, result.status) == ("1200", "success")  # 400 a filler, 3 fillers
    assert len(asked) == 1
    assert "FIND or COUNT" not in asked[0]
