"""Answers you can check: citations verified against the stored text, typed answers, and
host tools, through the public API with a FunctionModel and the runner as a process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from shesha import Shesha
from shesha.cli import app
from shesha.errors import ConfigError
from shesha.llm.types import Message
from shesha.rlm import read_trace
from shesha.rlm.events import Cited, ToolCalled
from shesha.sandbox import SandboxPool
from shesha.testing import FunctionModel

SUBCALL = "You follow one instruction"
LEASE = (
    "--- Page 1 ---\nThis lease is made on 1 May 2024.\n"
    "--- Page 2 ---\nThe tenant\u2019s \u201cnotice period\u201d\n  is three   months.\n"
    "The rent is $1,200.\n"
)


def steps(*replies: str, sub: str = "yes") -> Callable[[list[Message], str], str]:
    def fn(messages: list[Message], model: str) -> str:
        if messages[0]["content"].startswith(SUBCALL):
            return sub
        n = sum(1 for m in messages if m["role"] == "assistant")
        return replies[min(n, len(replies) - 1)]

    return fn


def repl(code: str) -> str:
    return f"```repl\n{code}\n```"


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "lease.txt").write_text(LEASE)
    (tmp_path / "docs" / "notes.md").write_text("# Notes\nThe landlord is Ana Ruiz.\n")
    return tmp_path


def ask(
    sandboxes: SandboxPool, home: Path, fn: Callable[[list[Message], str], str], **kwargs: object
) -> tuple[Shesha, object]:
    sh = Shesha(home=str(home / "home"), llm=FunctionModel(fn), sandboxes=sandboxes)
    p = sh.project("lease")
    p.add([home / "docs"])
    return sh, p


# -- citations --------------------------------------------------------------------------


def test_citations_are_checked_against_the_stored_text(
    sandboxes: SandboxPool, project_dir: Path
) -> None:
    code = (
        "cite('lease.txt', 'The tenant\\'s \"notice period\" is three months.')\n"  # normalised
        "cite(1, 'The landlord is Ana Ruiz.')\n"  # by index
        "start = context[0].find('The rent')\n"
        "cite('lease.txt', start, start + 18)\n"  # by offsets
        "cite('lease.txt', 'The rent is $1,500.')\n"  # not in the text
        "cite('contract.pdf', 'anything')\n"  # no such document
        "FINAL('three months')"
    )
    with Shesha(
        home=str(project_dir / "h"), llm=FunctionModel(steps(repl(code))), sandboxes=sandboxes
    ) as sh:
        p = sh.project("lease")
        p.add([project_dir / "docs"])
        r = p.query("What is the notice period?")
    assert r.answer == "three months"
    by_quote = {c.quote: c for c in r.citations}
    notice = by_quote['The tenant\'s "notice period" is three months.']
    assert (notice.status, notice.page) == ("verified", 2)
    assert LEASE[notice.offset or 0 :].startswith("The tenant\u2019s")
    assert by_quote["The landlord is Ana Ruiz."].status == "verified"
    assert by_quote["The rent is $1,200"].status == "verified"
    wrong = by_quote["The rent is $1,500."]
    assert (wrong.status, wrong.reason) == ("unverified", "the quote is not in the document")
    assert by_quote["anything"].reason == "no document is named 'contract.pdf'"
    cited = [e for e in read_trace(r.trace_path or "").events if isinstance(e, Cited)]
    assert len(cited[0].citations) == 5


def test_verify_asks_the_sub_model_whether_each_quote_supports_the_answer(
    sandboxes: SandboxPool, project_dir: Path
) -> None:
    code = "cite('notes.md', 'The landlord is Ana Ruiz.')\nFINAL('Ana Ruiz')"
    with Shesha(
        home=str(project_dir / "h"),
        llm=FunctionModel(steps(repl(code), sub="Yes.")),
        sandboxes=sandboxes,
    ) as sh:
        p = sh.project("lease")
        p.add([project_dir / "docs"])
        assert p.query("Who is the landlord?").citations[0].supports is None
        checked = p.query("Who is the landlord?", verify_citations=True).citations[0]
    assert (checked.status, checked.supports) == ("verified", True)


def test_the_cli_prints_citations_and_marks_the_unverified(
    sandboxes: SandboxPool, project_dir: Path
) -> None:
    code = (
        "cite('notes.md', 'The landlord is Ana Ruiz.')\ncite('notes.md', 'made up')\n"
        "FINAL('Ana Ruiz')"
    )
    model = FunctionModel(steps(repl(code)))
    env = {"SHESHA_HOME": str(project_dir / "h"), "SHESHA_MODEL": None}

    def factory(**kw: object) -> Shesha:
        return Shesha(llm=model, sandboxes=sandboxes, **kw)  # type: ignore[arg-type]

    r = CliRunner().invoke(app, ["ask", "Who?", str(project_dir / "docs")], obj=factory, env=env)
    assert r.exit_code == 0, r.stderr
    assert '[verified] notes.md: "The landlord is Ana Ruiz."' in r.stdout
    assert "[UNVERIFIED: the quote is not in the document] notes.md" in r.stdout
    j = CliRunner().invoke(
        app, ["ask", "Who?", str(project_dir / "docs"), "--json"], obj=factory, env=env
    )
    assert [c["status"] for c in json.loads(j.stdout)["citations"]] == ["verified", "unverified"]


# -- typed answers ----------------------------------------------------------------------


class Lease(BaseModel):
    landlord: str
    rent: int
    renews: bool


def test_a_typed_answer_is_validated_and_a_bad_one_sent_back(
    sandboxes: SandboxPool, project_dir: Path
) -> None:
    bad = repl("FINAL({'landlord': 'Ana Ruiz', 'rent': 'twelve hundred'})")
    good = repl("FINAL({'landlord': 'Ana Ruiz', 'rent': 1200, 'renews': False})")
    model = FunctionModel(steps(bad, good))
    with Shesha(home=str(project_dir / "h"), llm=model, sandboxes=sandboxes) as sh:
        p = sh.project("lease")
        p.add([project_dir / "docs"])
        r = p.query("Describe the lease.", output=Lease)
    assert r.status == "success"
    assert r.output == Lease(landlord="Ana Ruiz", rent=1200, renews=False)
    assert json.loads(r.answer or "") == {"landlord": "Ana Ruiz", "rent": 1200, "renews": False}
    system, told = model.calls[0][1][0]["content"], model.calls[1][1][-1]["content"]
    assert '"landlord"' in system  # the schema is in the prompt
    assert "does not match the output schema" in told
    assert "rent" in told
    assert "renews" in told


def test_a_json_schema_works_the_same_and_a_bad_schema_is_refused(
    sandboxes: SandboxPool, project_dir: Path
) -> None:
    names = {"type": "array", "items": {"type": "string"}}
    schema = {"type": "object", "properties": {"names": names}, "required": ["names"]}
    model = FunctionModel(steps(repl("FINAL({'names': ['Ana Ruiz']})")))
    with Shesha(home=str(project_dir / "h"), llm=model, sandboxes=sandboxes) as sh:
        p = sh.project("lease")
        p.add([project_dir / "docs"])
        assert p.query("Who?", output=schema).output == {"names": ["Ana Ruiz"]}
        with pytest.raises(ConfigError, match="not a valid JSON schema"):
            p.query("Who?", output={"type": "nonsense"})


def test_the_cli_takes_an_output_schema_file(sandboxes: SandboxPool, project_dir: Path) -> None:
    (project_dir / "schema.json").write_text(
        json.dumps({"type": "object", "required": ["landlord"]})
    )
    model = FunctionModel(steps(repl("FINAL({'landlord': 'Ana Ruiz'})")))
    env = {"SHESHA_HOME": str(project_dir / "h"), "SHESHA_MODEL": None}

    def factory(**kw: object) -> Shesha:
        return Shesha(llm=model, sandboxes=sandboxes, **kw)  # type: ignore[arg-type]

    args = [
        "ask",
        "Who?",
        str(project_dir / "docs"),
        "--output-schema",
        str(project_dir / "schema.json"),
    ]
    r = CliRunner().invoke(app, [*args, "--json"], obj=factory, env=env)
    assert json.loads(r.stdout)["output"] == {"landlord": "Ana Ruiz"}
    (project_dir / "broken.json").write_text("{not json")
    bad = CliRunner().invoke(
        app, [*args[:-1], str(project_dir / "broken.json")], obj=factory, env=env
    )
    assert bad.exit_code == 2
    assert "broken.json: not a JSON file" in bad.stderr


# -- host tools -------------------------------------------------------------------------


def price(ticker: str, year: int = 2024) -> float:
    """The closing price of a ticker at the end of a year."""
    if ticker == "BAD":
        raise KeyError("no such ticker")
    return {"ACME": 12.5}.get(ticker, 1.0) * (year - 2020)


async def exchange(currency: str) -> dict[str, float]:
    """Today's rate against the dollar."""
    await asyncio.sleep(0.01)
    return {"rate": 0.9 if currency == "EUR" else 1.0}


def test_host_tools_are_listed_called_checked_and_traced(
    sandboxes: SandboxPool, project_dir: Path
) -> None:
    code = (
        "print(price('ACME'), price('ACME', year=2022), exchange('EUR')['rate'])\n"
        'for bad in ("price(\'BAD\')", "price(42)", "nope()"):\n'
        "    try:\n        eval(bad)\n"
        "    except Exception as e:\n        print(type(e).__name__, e)\n"
    )
    model = FunctionModel(steps(repl(code), "FINAL(done)"))
    with Shesha(home=str(project_dir / "h"), llm=model, sandboxes=sandboxes, tools=[price]) as sh:
        p = sh.project("lease")
        p.add([project_dir / "docs"])
        r = p.query("Prices?", tools=[exchange])
    output = model.calls[1][1][-1]["content"]
    assert "50.0 25.0 0.9" in output
    assert "RuntimeError price: KeyError: 'no such ticker'" in output
    assert "RuntimeError price: invalid 0: Input should be a valid string" in output
    assert "NameError" in output  # no tool of that name in the namespace
    system = model.calls[0][1][0]["content"]
    assert "price(ticker: str, year: int = 2024) -> float" in system
    assert "The closing price of a ticker" in system
    calls = [e for e in read_trace(r.trace_path or "").events if isinstance(e, ToolCalled)]
    assert [(c.name, c.ok) for c in calls] == [
        ("price", True), ("price", True), ("exchange", True), ("price", False), ("price", False),
    ]  # fmt: skip
    assert r.tool_calls == 5


def test_tool_calls_count_against_a_limit(sandboxes: SandboxPool, project_dir: Path) -> None:
    code = (
        "got = []\nfor i in range(5):\n    try:\n        got.append(price('ACME'))\n"
        "    except RuntimeError as e:\n        got.append(str(e))\nprint(got)"
    )
    model = FunctionModel(steps(repl(code), "FINAL(done)"))
    with Shesha(home=str(project_dir / "h"), llm=model, sandboxes=sandboxes, tools=[price]) as sh:
        p = sh.project("lease")
        p.add([project_dir / "docs"])
        r = p.query("Prices?", max_tool_calls=3)
    assert r.tool_calls == 3
    assert "refused: limit reached: 3 tool calls made, limit 3" in model.calls[1][1][-1]["content"]


def test_a_tool_must_be_a_named_function() -> None:
    with pytest.raises(ConfigError, match="plain function name"):
        Shesha(tools=[lambda x: x])
    with pytest.raises(ConfigError, match="Two tools are named"):
        Shesha(tools=[price, price])
