"""Conversations: follow-ups see earlier questions and answers, share a namespace, and
survive a restart by replaying their recorded code."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from shesha import Shesha
from shesha.cli import app
from shesha.errors import NotFoundError
from shesha.llm.types import Message
from shesha.rlm.history import earlier_exchanges
from shesha.sandbox import SandboxPool
from shesha.testing import FunctionModel

SUBCALL = "You follow one instruction"


def model(messages: list[Message], name: str) -> str:
    """First question: builds an index (with a sub-call). Follow-ups: use it."""
    if messages[0]["content"].startswith(SUBCALL):
        return "an index of words"
    question = messages[1]["content"].rsplit("Question:", 1)[-1]  # this one, not earlier ones
    step = sum(1 for m in messages if m["role"] == "assistant")
    if "build" in question:
        if step == 0:
            return (
                "```repl\nindex = {w: i for i, w in enumerate(context[0].split())}\n"
                "kind = llm_query('What is this?', 'x')\nprint(len(index), kind)\n```"
            )
        return 'FINAL("built")'
    if "hang" in question:
        return "```repl\nimport time\ntime.sleep(60)\n```" if step == 0 else 'FINAL("hung")'
    if step == 0:
        return "```repl\nprint(sorted(index)[:2], kind)\n```"
    return "FINAL(used it)"


@pytest.fixture
def sh(sandboxes: SandboxPool, tmp_path: Path) -> Shesha:
    (tmp_path / "d.txt").write_text("beta alpha gamma")
    s = Shesha(home=str(tmp_path / "home"), llm=FunctionModel(model), sandboxes=sandboxes)
    s.project("words").add([tmp_path / "d.txt"])
    return s


def test_a_follow_up_sees_the_earlier_exchange_and_the_same_namespace(sh: Shesha) -> None:
    with sh.project("words").chat() as conv:
        first = conv.ask("Please build an index.")
        second = conv.ask("What are its first words?")
    assert (first.answer, second.answer) == ("built", "used it")
    llm = sh._llm
    assert isinstance(llm, FunctionModel)
    roots = [m for _, m in llm.calls if not m[0]["content"].startswith(SUBCALL)]
    follow_up = roots[2][1]["content"]  # the second question's opening message
    assert "Q: Please build an index.\nA: built" in follow_up
    assert "Q: " not in roots[0][1]["content"]  # the first question has no earlier ones
    output = roots[3][-1]["content"]
    assert "['alpha', 'beta'] an index of words" in output  # variables from the first question
    sh.close()


def test_a_conversation_is_taken_up_again_after_a_restart(sh: Shesha, tmp_path: Path) -> None:
    with sh.project("words").chat() as conv:
        conv.ask("Please build an index.")
        cid = conv.id
    sh.close()
    calls_before = len(sh._llm.calls)  # type: ignore[union-attr]
    again = Shesha(home=str(tmp_path / "home"), llm=sh._llm, sandboxes=sh._sandboxes)
    with again.project("words").chat(cid) as conv:
        assert [e.question for e in conv.exchanges] == ["Please build an index."]
        r = conv.ask("What are its first words?")
    assert r.answer == "used it"
    llm = again._llm
    assert isinstance(llm, FunctionModel)
    new_calls = llm.calls[calls_before:]
    assert not any(m[0]["content"].startswith(SUBCALL) for _, m in new_calls)  # replayed
    assert "['alpha', 'beta'] an index of words" in new_calls[1][1][-1]["content"]
    assert [c.id for c in again.project("words").conversations()] == [cid]
    with pytest.raises(NotFoundError, match="No conversation"):
        again.project("words").chat("nope")
    again.close()


def test_a_lost_sandbox_is_rebuilt_before_the_next_follow_up(sh: Shesha) -> None:
    with sh.project("words").chat() as conv:
        conv.ask("Please build an index.")
        hung = conv.ask("Now hang.", exec_timeout_s=1)
        assert hung.answer == "hung"
        after = conv.ask("What are its first words?")
    assert after.answer == "used it"
    llm = sh._llm
    assert isinstance(llm, FunctionModel)
    third = [m for _, m in llm.calls if "What are its" in m[1]["content"]]
    assert "['alpha', 'beta'] an index of words" in third[1][3]["content"]
    sh.close()


def test_a_long_history_is_compacted_newest_first() -> None:
    exchanges = [(f"question {i}", "answer " + "x" * 700) for i in range(20)]
    text = earlier_exchanges(exchanges, budget=2_000)
    assert "question 19" in text
    assert "question 0\n" not in text
    assert text.splitlines()[0].endswith("earlier exchanges left out)")
    assert "x" * 601 not in text  # long answers are cut


def test_shesha_chat_in_the_terminal(sandboxes: SandboxPool, tmp_path: Path) -> None:
    (tmp_path / "d.txt").write_text("beta alpha gamma")
    llm = FunctionModel(model)

    def factory(**kw: object) -> Shesha:
        return Shesha(llm=llm, sandboxes=sandboxes, **kw)  # type: ignore[arg-type]

    env = {"SHESHA_HOME": str(tmp_path / "home"), "SHESHA_MODEL": None}
    CliRunner().invoke(app, ["add", "words", str(tmp_path / "d.txt")], obj=factory, env=env)
    typed = "Please build an index.\nWhat are its first words?\n\n"
    r = CliRunner().invoke(app, ["chat", "words"], input=typed, obj=factory, env=env)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.count("built") == 1
    assert "used it" in r.stdout
    cid = r.stderr.split("Conversation ")[1].split()[0]
    listed = CliRunner().invoke(app, ["chat", "words", "--list"], obj=factory, env=env)
    assert listed.stdout.startswith(f"{cid}  2 questions  Please build an index.")


def test_a_conversation_replays_with_the_configured_prompts(
    sandboxes: SandboxPool, tmp_path: Path
) -> None:
    # Regression: replay keyed sub-calls with the packaged prompts, so with a prompts
    # directory every recorded answer was missed and the namespace held refusals.
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "subcall_system.md").write_text(SUBCALL + ", and answer in a few words.")
    (tmp_path / "d.txt").write_text("beta alpha gamma")
    llm = FunctionModel(model)
    home = str(tmp_path / "home")
    with Shesha(home=home, llm=llm, sandboxes=sandboxes, prompts_dir=str(prompts)) as sh:
        sh.project("words").add([tmp_path / "d.txt"])
        with sh.project("words").chat() as conv:
            conv.ask("Please build an index.")
            cid = conv.id
    before = len(llm.calls)
    with (
        Shesha(home=home, llm=llm, sandboxes=sandboxes, prompts_dir=str(prompts)) as again,
        again.project("words").chat(cid) as conv,
    ):
        assert conv.ask("What are its first words?").answer == "used it"
    new_calls = llm.calls[before:]
    assert not any(m[0]["content"].startswith(SUBCALL) for _, m in new_calls)  # replayed
    assert "['alpha', 'beta'] an index of words" in new_calls[1][1][-1]["content"]


def test_a_writers_temporary_file_or_a_damaged_record_is_not_a_conversation(
    sh: Shesha,
) -> None:
    with sh.project("words").chat() as conv:
        conv.ask("Please build an index.")
        cid = conv.id
    folder = sh.project("words").stored.path / "conversations"
    (folder / f".tmp-0123abcd-{cid}.json").write_text("{")  # a save in flight
    (folder / "notes.json").write_text("[]")  # not a conversation's name
    (folder / "0123456789ab.json").write_text('{"id": "0123456789ab"}')  # damaged
    assert [c.id for c in sh.project("words").conversations()] == [cid]
    sh.close()
