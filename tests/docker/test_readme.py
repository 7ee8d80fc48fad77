"""Every `shesha` command shown in the README and in docs/*.md runs, against the scripted
model server.

Model names are swapped for the scripted server's; everything else runs as written, the
README's commands first, then each page's in name order (docs/results/ is left out: its
pages record runs, they do not teach commands). A command that cannot run here is in
NOT_RUN, with the reason. No command that runs may name an address off this machine: the
test fails before it would connect (tests run against loopback only).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from tests.fixtures import make_pdf

from shesha import Shesha
from shesha.testing import ScriptedLLMServer, ScriptedReply

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
SHESHA = str(Path(sys.executable).with_name("shesha"))
MODEL_FLAGS = {"--model", "--sub-model"}
NOT_RUN = {
    "shesha models fetch": "downloads the real model's pinned packages (1.1 GB); the test's "
    "model is scripted, and tests/real_llm covers the fetched model",
    "shesha eval run runs/sniah-tasks --model openai/gpt-4o-mini --ray --ray-address "
    "head-node:6379": "joins a Ray cluster on other machines; tests/cluster runs the same "
    "command against a three-node cluster on loopback",
}
HOST_PORT = re.compile(r"^\[?([\w.:-]+?)\]?:\d{1,5}$")


def page_commands(page: Path) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", page.read_text(), re.S)
    return [
        line.strip()
        for block in blocks
        for line in block.splitlines()
        if line.strip().startswith("shesha ")
    ]


def readme_commands() -> list[str]:
    return page_commands(README)


def documented_commands() -> list[tuple[str, str]]:
    """(page, command) for every command of the README and the docs pages, in order."""
    return [(page.relative_to(ROOT).as_posix(), c) for page in PAGES for c in page_commands(page)]


def without_comment(command: str) -> str:
    return shlex.join(shlex.split(command, comments=True))


def off_machine(args: list[str]) -> list[str]:
    """The hosts ``args`` name (URLs, host:port) that are not this machine's loopback."""
    hosts: list[str] = []
    for arg in args:
        host = urlsplit(arg).hostname if "://" in arg else None
        if host is None and (m := HOST_PORT.match(arg)):
            host = m.group(1)
        if host is not None and not is_loopback(host):
            hosts.append(host)
    return hosts


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False  # a name that is not localhost may resolve anywhere


def scripted(messages: list[dict[str, Any]], model: str) -> ScriptedReply:
    if str(messages[0]["content"]).startswith("You follow one instruction"):
        return "yes"
    if not any(m["role"] == "assistant" for m in messages):
        return (
            "```repl\nhits = [n for n, t in zip(doc_names, context) if 'renew' in t]\n"
            "print(hits)\n```"
        )
    return "```repl\nFINAL(', '.join(hits))\n```"


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer(scripted) as s:
        yield s


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("readme")
    (root / "contracts").mkdir()
    (root / "contracts" / "lease.pdf").write_bytes(make_pdf(["This lease will renew every year."]))
    (root / "contracts" / "supply.md").write_text("Supply contract: ends in 2027.")
    (root / "notes").mkdir()
    (root / "notes" / "call.md").write_text("Call notes: the licence auto-renews.")
    (root / "examples" / "data").mkdir(parents=True)
    (root / "examples" / "data" / "war-and-peace.txt").write_text("Moscow renews. " * 10)
    (root / "docs").mkdir()
    (root / "docs" / "a.txt").write_text("A contract that renews.")
    return root


def adapt(command: str, api_base: str) -> list[str]:
    args = shlex.split(command, comments=True)[1:]
    out: list[str] = []
    i = 0
    while i < len(args):
        if args[i] in MODEL_FLAGS:
            out += [args[i], "openai/scripted"]
            i += 2
        elif args[i] == "--api-base":
            out += ["--api-base", api_base]
            i += 2
        else:
            out.append(args[i])
            i += 1
    if out[0] == "ask" and "--api-base" in out:
        out += ["--api-key", "test"]  # else the environment names the model and its endpoint
    if out[:2] == ["serve", "--background"]:
        out += ["--port", "0"]  # the default port may be taken on a test machine
    return out


def test_the_readme_shows_the_commands_users_need() -> None:
    verbs = {shlex.split(c)[1] for c in readme_commands()}
    assert {"ask", "add", "docs", "traces", "doctor"} <= verbs


def test_the_docs_pages_commands_are_collected_too() -> None:
    pages = {page for page, _ in documented_commands()}
    assert {"docs/server.md", "docs/research.md", "docs/local-model.md"} <= pages
    assert not any(page.startswith("docs/results/") for page in pages)


def test_every_command_not_run_is_still_shown() -> None:
    shown = {without_comment(c) for _, c in documented_commands()}
    assert set(NOT_RUN) <= shown, "NOT_RUN names a command no page shows any more"


def test_no_command_that_runs_names_an_address_off_this_machine() -> None:
    """The docs may show a cluster's or a provider's address; this test must never dial
    one. After ``adapt`` (which points --api-base at the scripted server), every host a
    command that runs names is loopback."""
    for page, command in documented_commands():
        if without_comment(command) not in NOT_RUN:
            args = adapt(command, "http://127.0.0.1:9/v1")
            assert off_machine(args) == [], f"{page}: {command} names {off_machine(args)}"


@pytest.mark.parametrize(
    ("args", "hosts"),
    [
        (["--ray-address", "10.0.0.5:6379"], ["10.0.0.5"]),
        (["--ray-address", "head-node:6379"], ["head-node"]),
        (["--api-base", "http://192.168.1.2:8000/v1"], ["192.168.1.2"]),
        (["--api-base", "https://api.example.com/v1"], ["api.example.com"]),
        (["--to", "[::1]:7733", "http://localhost:1/x", "127.0.0.2:80"], []),
        (["note:", "a:b"], []),
    ],
)
def test_off_machine_finds_every_way_to_write_a_remote_host(
    args: list[str], hosts: list[str]
) -> None:
    assert off_machine(args) == hosts


@pytest.mark.parametrize(
    "sandbox", ["docker", pytest.param("bwrap (Docker stopped)", marks=pytest.mark.bwrap)]
)
def test_every_documented_command_runs(
    server: ScriptedLLMServer, workdir: Path, sandbox: str, request: pytest.FixtureRequest
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHESHA_")}
    home = workdir / ("home" if sandbox == "docker" else "home-bwrap")
    if sandbox != "docker":
        request.getfixturevalue("bwrap_ready")
        env["DOCKER_HOST"] = f"unix://{workdir}/no-docker.sock"  # as if Docker were stopped
    env.update(
        {
            "SHESHA_HOME": str(home),
            "HOME": str(workdir / "user"),  # `shesha mcp install` writes a client's file there
            "XDG_CONFIG_HOME": str(workdir / "user" / ".config"),
            "CODEX_HOME": str(workdir / "user" / ".codex"),
            "SHESHA_POOL_SIZE": "1",
            "SHESHA_MODEL": "openai/scripted",
            "SHESHA_API_BASE": server.api_base,
        }
    )
    for page, command in documented_commands():
        if without_comment(command) in NOT_RUN:
            continue
        args = adapt(command, server.api_base)
        r = subprocess.run(
            [SHESHA, *args],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert r.returncode == 0, f"{page}: {command}\n-> {args}\n{r.stdout}\n{r.stderr}"
        if "--json" in args:
            json.loads(r.stdout)
        if args[0] == "ask" and "--json" not in args:
            assert r.stdout.strip(), (command, r.stderr)


def test_the_readme_python_example_runs(
    server: ScriptedLLMServer, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = README.read_text()
    block = re.search(r"```python\n(from shesha import Shesha\n.*?)```", text, re.S)
    assert block is not None
    code = block.group(1).replace(
        'Shesha(model="openai/gpt-4o-mini")',
        f'Shesha(model="openai/scripted", api_base="{server.api_base}", api_key="t", '
        f'home="{workdir / "pyhome"}", pool_size=1)',
    )
    monkeypatch.chdir(workdir)
    printed: list[str] = []
    exec(
        compile(code, "README.md", "exec"),
        {"print": lambda *a: printed.append(" ".join(map(str, a)))},
    )
    assert printed
    assert printed[0].startswith("a.txt, call.md success")


ANSWER_SCRIPT: dict[str, list[str | None]] = {
    "Quote the clause": ["cite('supply.md', 'Supply contract: ends in 2027.')\nFINAL('2027')"],
    "whether each renews": [
        "FINAL({'contracts': [{'name': 'lease.pdf', 'renews_automatically': True},"
        " {'name': 'supply.md', 'renews_automatically': False}]})"
    ],
    "rent in US dollars": ["print(usd_rate('EUR') * 1000)", None],
    "with its end date": ["ends = {'supply.md': 2027, 'lease.pdf': 2025}\nprint(ends)", None],
    "end after 2026": ["print([n for n, y in ends.items() if y > 2026])", None],
    "renew automatically?": ["print(llm_query_batched('Does it renew?', context))", None],
}
ANSWERS = {
    "rent in US dollars": "FINAL(1080.0)",
    "with its end date": 'FINAL("supply.md 2027, lease.pdf 2025")',
    "end after 2026": "FINAL(supply.md)",
    "renew automatically?": 'FINAL("lease.pdf")',
}


def answering(messages: list[dict[str, Any]], model: str) -> ScriptedReply:
    if str(messages[0]["content"]).startswith("You follow one instruction"):
        return "yes"
    question = str(messages[1]["content"]).rsplit("Question:", 1)[-1]
    key = next(k for k in ANSWER_SCRIPT if k in question)
    step = sum(1 for m in messages if m["role"] == "assistant")
    code = ANSWER_SCRIPT[key][min(step, len(ANSWER_SCRIPT[key]) - 1)]
    return f"```repl\n{code}\n```" if code is not None else ANSWERS[key]


def test_the_answer_examples_run(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (ROOT / "docs" / "python-api.md").read_text()
    section = text.split("## Answers you can check", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 5
    monkeypatch.chdir(workdir)
    printed: list[str] = []
    with (
        ScriptedLLMServer(answering) as server,
        Shesha(
            model="openai/scripted",
            api_base=server.api_base,
            api_key="t",
            home=str(workdir / "answers-home"),
            pool_size=1,
        ) as sh,
    ):
        p = sh.project("contracts")
        p.add(["contracts/"])
        p.query("Which contracts renew automatically?", temperature=0)
        for code in blocks:
            exec(
                compile(code, "python-api.md", "exec", dont_inherit=True),  # as a user runs it
                {"p": p, "print": lambda *a: printed.append(" ".join(map(str, a)))},
            )
    assert printed[0] == "verified supply.md None Supply contract: ends in 2027."
    assert printed[1] == "['lease.pdf']"
    assert printed[2] == "1080.0 1"
    assert printed[3].startswith("supply.md ")
    assert printed[4].startswith("2 ")  # both documents' sub-calls came from the cache
