"""Citations, typed answers, host tools, the sub-call cache and conversations against real
Docker, with the scripted model served over HTTP: the sandbox has no network, so every
sub-call, tool call and citation crosses the host relay. (tests/unit covers the details
in-process.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from shesha import Shesha
from shesha.testing import ScriptedLLMServer, ScriptedReply

pytestmark = pytest.mark.docker

SUBCALL = "You follow one instruction"
LEASE = "--- Page 1 ---\nThe landlord is Ana Ruiz.\n--- Page 2 ---\nThe rent is $1,200.\n"

CODE = {
    "cite": (
        "cite('lease.txt', 'The rent is $1,200.')\ncite('lease.txt', 'The rent is $9.')\n"
        "FINAL('$1,200')"
    ),
    "typed": "FINAL({'landlord': 'Ana Ruiz', 'rent': 1200})",
    "tool": "print(price('ACME'), socket_free())",
    "map": "parts = llm_query_batched('Summarise', context[0].split('\\n'))\nprint(len(parts))",
    "build": "index = sorted(context[0].split())\nprint(len(index))",
    "use": "print(index[:2])",
}


def scripted(messages: list[dict[str, Any]], model: str) -> ScriptedReply:
    if messages[0]["content"].startswith(SUBCALL):
        return "a line"
    question = messages[1]["content"].rsplit("Question:", 1)[-1]
    kind = next(k for k in CODE if f"[{k}]" in question)
    if sum(1 for m in messages if m["role"] == "assistant") == 0:
        return f"```repl\n{CODE[kind]}\n```"
    if kind == "typed" and "does not match" not in messages[-1]["content"]:
        return "```repl\nFINAL({'landlord': 'Ana Ruiz', 'rent': 'lots'})\n```"
    return 'FINAL("done")'


class Lease(BaseModel):
    landlord: str
    rent: int


def price(ticker: str) -> float:
    """A price the host looks up (the sandbox could not: it has no network)."""
    return {"ACME": 12.5}[ticker]


def socket_free() -> str:
    """Says where it ran."""
    return "ran on the host"


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer(scripted) as s:
        yield s


@pytest.fixture
def sh(server: ScriptedLLMServer, tmp_path: Path) -> Iterator[Shesha]:
    (tmp_path / "lease.txt").write_text(LEASE)
    with Shesha(
        home=str(tmp_path / "home"),
        model="openai/scripted",
        api_base=server.api_base,
        api_key="test",
        pool_size=1,
        temperature=0,
        tools=[price, socket_free],
    ) as instance:
        instance.project("lease").add([tmp_path / "lease.txt"])
        yield instance


def replies_after(server: ScriptedLLMServer, start: int) -> list[str]:
    return [r.messages[-1]["content"] for r in server.requests[start:]]


def test_citations_typed_answers_and_tools_cross_the_docker_relay(
    sh: Shesha, server: ScriptedLLMServer
) -> None:
    p = sh.project("lease")
    cited = p.query("[cite] What is the rent?")
    assert [(c.quote, c.status, c.page) for c in cited.citations] == [
        ("The rent is $1,200.", "verified", 2),
        ("The rent is $9.", "unverified", None),
    ]
    typed = p.query("[typed] Describe the lease.", output=Lease)
    assert typed.output == Lease(landlord="Ana Ruiz", rent=1200)
    start = len(server.requests)
    tooled = p.query("[tool] What does ACME cost?")
    assert tooled.tool_calls == 2
    assert any("12.5 ran on the host" in m for m in replies_after(server, start))


def test_the_second_run_makes_no_sub_call_requests(sh: Shesha, server: ScriptedLLMServer) -> None:
    p = sh.project("lease")

    def subcall_requests() -> int:
        return sum(1 for r in server.requests if r.messages[0]["content"].startswith(SUBCALL))

    before = subcall_requests()
    first = p.query("[map] Summarise each line.")
    made = subcall_requests() - before
    second = p.query("[map] Summarise each line, again.")
    assert made == first.subcalls == 5
    assert subcall_requests() - before == made  # none more
    assert second.usage.cached_subcalls == 5


def test_a_conversation_keeps_its_namespace_across_a_restart(
    server: ScriptedLLMServer, tmp_path: Path, sh: Shesha
) -> None:
    with sh.project("lease").chat() as conv:
        conv.ask("[build] Index the words.")
        start = len(server.requests)
        conv.ask("[use] First words?")
        cid = conv.id
    assert any("['$1,200.', '---']" in m for m in replies_after(server, start))
    sh.close()
    with (
        Shesha(
            home=str(tmp_path / "home"),
            model="openai/scripted",
            api_base=server.api_base,
            api_key="test",
            pool_size=1,
        ) as again,
        again.project("lease").chat(cid) as conv,
    ):
        start = len(server.requests)
        r = conv.ask("[use] First words, once more?")
    assert r.answer == "done"
    assert any("['$1,200.', '---']" in m for m in replies_after(server, start))
