"""`shesha serve` and `shesha mcp` as users run them: real processes, real Docker
sandboxes, a scripted model over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.context import ClientRequestContext
from mcp.types import CreateMessageRequestParams, CreateMessageResult, TextContent

from shesha.testing import ScriptedLLMServer

pytestmark = pytest.mark.docker

SHESHA = str(Path(sys.executable).with_name("shesha"))


def scripted(messages: list[dict[str, Any]], model: str) -> str:
    if not any(m["role"] == "assistant" for m in messages):
        return "```repl\nprint(doc_names)\n```"
    return "FINAL(Maria Lopez)"


@pytest.fixture(scope="module")
def model() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer(scripted) as s:
        yield s


@pytest.fixture
def env(model: ScriptedLLMServer, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "acme.txt").write_text("The CEO of Acme is Maria Lopez.")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHESHA_")}
    env.update(
        {
            "SHESHA_HOME": str(tmp_path / "home"),
            "SHESHA_MODEL": "openai/scripted",
            "SHESHA_API_BASE": model.api_base,
            "SHESHA_API_KEY": "t",
            "SHESHA_POOL_SIZE": "1",
        }
    )
    return env


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SHESHA, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=180,
        check=False,
    )  # fmt: skip


def test_serve_in_the_background_ask_through_it_and_stop_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    started = run(
        ["serve", "--background", "--port", "0", "--allow-path", str(tmp_path)], env, tmp_path
    )
    assert started.returncode == 0, started.stderr
    try:
        state = json.loads((tmp_path / "home" / "server.json").read_text())
        status = run(["serve", "status"], env, tmp_path)
        assert status.stdout.startswith(state["url"])
        asked = run(["ask", "Who is the CEO?", "docs", "--json"], env, tmp_path)
        assert asked.returncode == 0, asked.stderr
        assert json.loads(asked.stdout)["answer"] == "Maria Lopez"
        doctor = run(["doctor", "--json"], env, tmp_path)
        server = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}["server"]
        assert server["detail"].startswith(state["url"])
        again = run(["serve", "--background", "--port", "0"], env, tmp_path)
        assert again.returncode == 1
        assert "already serves" in again.stderr
    finally:
        stopped = run(["serve", "stop"], env, tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    assert not (tmp_path / "home" / "server.json").exists()
    # Without a server the same command runs in-process, with the same answer.
    local = run(["ask", "Who is the CEO?", "docs", "--json"], env, tmp_path)
    assert json.loads(local.stdout)["answer"] == "Maria Lopez"


def test_the_openai_sdk_asks_a_project_through_a_real_serve_with_a_token(
    env: dict[str, str], tmp_path: Path
) -> None:
    added = run(["add", "docs", str(tmp_path / "docs")], env, tmp_path)
    assert added.returncode == 0, added.stderr
    env = {**env, "SHESHA_TOKEN": "e2e-token"}
    started = run(["serve", "--background", "--port", "0"], env, tmp_path)
    assert started.returncode == 0, started.stderr
    try:
        url = json.loads((tmp_path / "home" / "server.json").read_text())["url"]
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="e2e-token", max_retries=0)
        assert [m.id for m in client.models.list()] == ["shesha/docs"]
        question: list[Any] = [{"role": "user", "content": "Who is the CEO?"}]
        stream = client.chat.completions.create(model="shesha/docs", messages=question, stream=True)
        chunks = list(stream)
        answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert answer == "Maria Lopez"
        figures = (chunks[-1].model_extra or {})["shesha"]
        follow = client.chat.completions.create(
            model="shesha/docs",
            messages=[*question, {"role": "assistant", "content": answer}, *question],
        )
        followed = (follow.model_extra or {})["shesha"]["conversation"]
        assert followed != figures["conversation"]  # a new record: the history, then this
        headers = {"Authorization": "Bearer e2e-token"}
        shown = httpx.get(f"{url}/api/projects/docs/conversations/{followed}", headers=headers)
        assert [e["answer"] for e in shown.json()["exchanges"]] == ["Maria Lopez"] * 2
        wrong = openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model="shesha/docs", messages=question)
    finally:
        stopped = run(["serve", "stop"], env, tmp_path)
    assert stopped.returncode == 0, stopped.stderr


def test_mcp_over_stdio_with_a_docker_session_and_sampling(
    env: dict[str, str], tmp_path: Path
) -> None:
    async def sampling(
        context: ClientRequestContext, params: CreateMessageRequestParams
    ) -> CreateMessageResult:
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text="sampled"),
            model="client", stop_reason="endTurn",
        )  # fmt: skip

    params = StdioServerParameters(
        command=SHESHA, args=["mcp", "--allow-path", str(tmp_path)], env=env, cwd=str(tmp_path)
    )

    async def go() -> tuple[str, str]:
        async with (
            stdio_client(params) as (read, write),
            ClientSession(read, write, sampling_callback=sampling) as session,
        ):
            await session.initialize()
            await session.call_tool(
                "add_documents", {"project": "acme", "paths": [str(tmp_path / "docs")]}
            )
            asked = await session.call_tool(
                "ask", {"project": "acme", "question": "Who is the CEO?"}
            )
            opened = await session.call_tool("open_session", {"project": "acme"})
            sid = opened.structured_content["session_id"]
            code = "import socket\nprint(llm_query('Read', context[0]), socket.gethostname() != '')"
            ran = await session.call_tool("execute_python", {"session_id": sid, "code": code})
            await session.call_tool("close_session", {"session_id": sid})
            return str(asked.structured_content["answer"]), str(ran.structured_content["stdout"])

    answer, out = asyncio.run(go())
    assert answer == "Maria Lopez"
    assert out == "sampled True\n"
