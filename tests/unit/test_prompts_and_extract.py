"""Prompt templates (placeholder checks, overrides) and reading the model's replies."""

from __future__ import annotations

from pathlib import Path

import pytest

from shesha.errors import ConfigError
from shesha.rlm import PromptSet
from shesha.rlm.extract import ParsedReply, final_in_last_reply, read_reply


def test_packaged_prompts_load_and_render() -> None:
    prompts = PromptSet.load()
    text = prompts.render("user", question="Why?")
    assert text.startswith("Question: Why?")
    assert len(prompts.hash) == 16


def test_an_override_directory_replaces_single_prompts(tmp_path: Path) -> None:
    (tmp_path / "user.md").write_text("Q: {{question}}")
    prompts = PromptSet.load(tmp_path)
    assert prompts.render("user", question="x") == "Q: x"
    assert prompts.hash != PromptSet.load().hash
    assert "user" in prompts.source


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("user.md", "No question here", "missing \\['question'\\]"),
        ("user.md", "{{question}} {{surprise}}", "unknown \\['surprise'\\]"),
        ("usr.md", "{{question}}", "Unknown prompt files"),
    ],
)
def test_bad_overrides_are_refused(tmp_path: Path, name: str, text: str, problem: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=problem):
        PromptSet.load(tmp_path)


def test_code_blocks_repl_and_python_in_order() -> None:
    reply = (
        "a\n```repl\nx = 1\n```\ntext\n```python\nprint(x)\n```\n```bash\nls\n```\n```repl\n\n```"
    )
    assert read_reply(reply).blocks == ("x = 1", "print(x)")


# Every shape of a final answer we have seen models write, or found reported against the
# peers' parsers. Each row: the reply, and what the engine must do with it.
ANSWERS = [
    # The text contract: FINAL(<text>) is the answer itself.
    ("FINAL(Maria Lopez)", "Maria Lopez"),
    ("FINAL(42)", "42"),
    ("FINAL(-3.5)", "-3.5"),
    ("Done.\nFINAL('a string')\n", "a string"),
    ('FINAL("Paris")', "Paris"),
    ("FINAL(The answer is Paris)", "The answer is Paris"),
    ("FINAL(line one\nline two)", "line one\nline two"),
    ("FINAL(Acme (Pty) Ltd)", "Acme (Pty) Ltd"),
    ("FINAL(O'Brien & Sons)", "O'Brien & Sons"),
    ("FINAL($1,577 million)", "$1,577 million"),
    ("FINAL(2023-12-31)", "2023-12-31"),  # a date, not 1980
    ("FINAL(12/31/2022)", "12/31/2022"),
    ("FINAL(1,577)", "1,577"),  # a number as people write it, not a tuple
    ("FINAL(Yes, it renews automatically.)", "Yes, it renews automatically."),
    ('FINAL("He said \\"no\\"")', 'He said "no"'),
    # Claude-class models: FINAL in prose, with markdown around it.
    ("The CEO is named in the second line.\n\nFINAL(Maria Lopez)", "Maria Lopez"),
    ("**FINAL(Maria Lopez)**", "Maria Lopez"),
    ("`FINAL(Maria Lopez)`", "Maria Lopez"),
    ("- FINAL(Maria Lopez)", "Maria Lopez"),
    ("> FINAL(Maria Lopez)", "Maria Lopez"),
    ("FINAL(Maria Lopez).", "Maria Lopez"),
    ("Final(Maria Lopez)", "Maria Lopez"),  # case as the model wrote it (peers' shape 24)
    ("final(Maria Lopez)", "Maria Lopez"),
    ("Answer: FINAL(Maria Lopez)", "Maria Lopez"),
    ("**Final answer:** FINAL(Maria Lopez)", "Maria Lopez"),
    ("FINAL( Maria Lopez )", "Maria Lopez"),
    ("FINAL (Maria Lopez)", "Maria Lopez"),
    ("<think>Maybe FINAL(wrong)?</think>\nFINAL(Maria Lopez)", "Maria Lopez"),
    # A model that revises its answer writes the new one last.
    ("FINAL(first draft)\non reflection:\nFINAL(the real one)", "the real one"),
    ("<|im_start|>FINAL(42)<|im_end|>", "42"),  # chat-template tokens (rlm PR #7)
    ("FINAL(42) -- let me know if you need more.", "42"),
    ("FINAL(42)\nSee the table (row 3)", "42"),
    ("FINAL(a smiley :) face)", "a smiley :) face"),
    ("FINAL: Paris", "Paris"),
    ("Final answer: **Maria Lopez**", "Maria Lopez"),
]


@pytest.mark.parametrize(("reply", "answer"), ANSWERS)
def test_a_final_given_as_text_is_the_answer(reply: str, answer: str) -> None:
    assert read_reply(reply) == ParsedReply(answer=answer)


# Shapes whose FINAL runs in the sandbox: (reply, the code that runs).
RUNS = [
    ("FINAL_VAR(result)", "FINAL_VAR('result')"),
    ("  FINAL_VAR('result')", "FINAL_VAR('result')"),
    ('FINAL_VAR("result")', "FINAL_VAR('result')"),
    ("FINAL(answer)", "FINAL(answer)"),  # a variable, or a word: the engine decides
    ('FINAL(f"{n} rows")', 'FINAL(f"{n} rows")'),
    ("FINAL(len(hits))", "FINAL(len(hits))"),
    ("FINAL(True)", "FINAL(True)"),
    ("FINAL(10-K)", "FINAL(10-K)"),  # Python; if K is undefined, the engine decides
    # Code blocks: a FINAL line whose argument is text is quoted, the rest runs as written.
    ("```repl\nFINAL(Maria Lopez)\n```", "FINAL('Maria Lopez')"),
    ("```python\nFINAL(Maria Lopez)\n```", "FINAL('Maria Lopez')"),
    ("```py\nFINAL(2023-12-31)\n```", "FINAL('2023-12-31')"),
    ("```Python\nx = 1\n```", "x = 1"),
    ("~~~python\nx = 1\n~~~", "x = 1"),
    ("```\nprint(len(context))\n```", "print(len(context))"),  # no language, Python
    ("```repl\nif hits:\n    FINAL(Acme (Pty) Ltd)\n```", "if hits:\n    FINAL('Acme (Pty) Ltd')"),
    ("```repl\nFINAL(answer)\n```", "FINAL(answer)"),
    ("```repl\nFinal(1987)\n```", "FINAL('1987')"),  # the sandbox knows only FINAL
    ("```repl\nfinal_var(result)\n```", "FINAL_VAR('result')"),
    ("```repl\nprint('FINAL(x) later')\n```", "print('FINAL(x) later')"),
    ("```repl\n# FINAL(Maria Lopez)\nx = 1\n```", "# FINAL(Maria Lopez)\nx = 1"),
    ("```repl\nx = 1```", "x = 1"),  # the closing fence on the code's line
    ("```\n```python\nprint(1)\n```\n```", "print(1)"),  # a fence doubled (DSPy #9309)
    ("Here is my code:\n```python\nx = 1\n```\nThat should work.", "x = 1"),
    # Local Qwen models: code with no fence at all.
    ("print(context[0][:500])", "print(context[0][:500])"),
    ("import re\nm = re.search('CEO', context[0])\nprint(m)", None),
    ("for t in context:\n    print(len(t))", None),
]


@pytest.mark.parametrize(("reply", "code"), RUNS)
def test_a_final_or_code_that_runs(reply: str, code: str | None) -> None:
    read = read_reply(reply)
    assert read.answer is None
    assert read.blocks == (code or reply,)


@pytest.mark.parametrize(
    "reply",
    [
        "no final here",
        "The FINAL(answer) is inline",
        "I will call FINAL(answer) once the output shows it.",
        "Paris",
        "4711",
        "FINAL_VAR(not a name)",
        "FINAL()",
        "FINAL(your final answer here)",  # the prompt's placeholder, copied
        "Reasoning: None\nCode: None",  # DSPy #9632
        "...and then provide FINAL_VAR(output) as the answer.",  # rlm #37
        "```text\nMaria Lopez\n```",
        "```\nMaria Lopez\n```",
        '```json\n{"a": 1}\n```',
    ],
)
def test_replies_with_nothing_to_run_and_no_answer(reply: str) -> None:
    assert read_reply(reply) == ParsedReply()


def test_a_final_next_to_code_is_not_an_answer() -> None:
    read = read_reply("```repl\nx = len(context)\n```\nFINAL(made-up answer)")
    assert read.answer is None
    assert read.blocks == ("x = len(context)",)
    assert read.ignored == ("made-up answer",)


def test_unfenced_code_is_marked() -> None:
    assert read_reply("print(1)").unfenced
    assert not read_reply("```repl\nprint(1)\n```").unfenced


@pytest.mark.parametrize(
    ("reply", "answer"),
    [
        ("FINAL(Maria Lopez)", "Maria Lopez"),
        ("```repl\nFINAL('from code')\n```", "from code"),
        ("```repl\nFINAL(Maria Lopez)\n```", "Maria Lopez"),
        ('I found it.\nFINAL("Paris")', "Paris"),
        ("no answer at all", None),
    ],
)
def test_the_last_reply_is_read_for_a_final_anywhere(reply: str, answer: str | None) -> None:
    assert final_in_last_reply(reply) == answer
