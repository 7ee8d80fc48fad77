"""Prompt templates (placeholder checks, overrides) and reading the model's replies."""

from __future__ import annotations

from pathlib import Path

import pytest

from shesha.errors import ConfigError
from shesha.rlm import PromptSet
from shesha.rlm.extract import bare_final, code_blocks


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
    assert code_blocks(reply) == ["x = 1", "print(x)"]


@pytest.mark.parametrize(
    ("reply", "kind", "text"),
    [
        ("FINAL(42)", "value", "42"),
        ("Done.\nFINAL('a string')\n", "value", "a string"),
        ("FINAL(The answer is Paris)", "value", "The answer is Paris"),
        ("FINAL(line one\nline two)", "value", "line one\nline two"),
        ("  FINAL_VAR(result)", "var", "result"),
        ("FINAL_VAR('result')", "var", "result"),
    ],
)
def test_bare_final_forms(reply: str, kind: str, text: str) -> None:
    final = bare_final(reply)
    assert final is not None
    assert (final.kind, final.text) == (kind, text)


@pytest.mark.parametrize(
    "reply",
    [
        "no final here",
        "The FINAL(answer) is inline",
        "```repl\nFINAL(1)\n```",
        "FINAL_VAR(not a name)",
    ],
)
def test_not_a_bare_final(reply: str) -> None:
    assert bare_final(reply) is None
