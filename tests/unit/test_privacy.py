"""The data directory is this user's alone: every folder in it 0700 and every file 0600,
from the moment each is made (whatever the umask), server.json with the token included."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shesha import Shesha
from shesha.sandbox import SandboxPool
from shesha.server.state import ServerState, write_state
from shesha.testing import FunctionModel


@pytest.fixture
def loose_umask() -> Iterator[None]:
    before = os.umask(0o022)  # the usual one: world-readable unless shesha says otherwise
    try:
        yield
    finally:
        os.umask(before)


def answer(messages: list[Any], model: str) -> str:
    if messages[0]["content"].startswith("You follow one instruction"):
        return "a sub-call's answer"
    if len(messages) == 2:
        return "```repl\nprint(llm_query('Summarise', context[0]))\n```"
    return "FINAL(done)"


def test_every_folder_is_0700_and_every_file_0600(
    loose_umask: None, sandboxes: SandboxPool, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    doc = tmp_path / "contract.md"
    doc.write_text("# A contract\nThe fee is 10 EUR.")
    with Shesha(home=str(home), llm=FunctionModel(answer), sandboxes=sandboxes) as sh:
        project = sh.project("p")
        project.add([doc], keep_originals=True)
        project.query("What is the fee?")
        with project.chat() as chat:  # its sandbox goes back to the (shared) pool
            chat.ask("What is the fee?")
        write_state(home, ServerState("http://127.0.0.1:1", os.getpid(), str(home), "x", "t0ken"))
    loose = []
    for root, dirs, files in os.walk(home):
        for name in [*dirs, *files]:
            mode = stat.S_IMODE(os.lstat(Path(root) / name).st_mode)
            if mode & 0o077:
                loose.append(f"{Path(root, name).relative_to(home)}: {oct(mode)}")
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert loose == []
    assert (home / "server.json").is_file()
    assert list((home / "projects" / "p" / "traces").glob("*.jsonl"))
