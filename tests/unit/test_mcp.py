"""MCP through the official SDK's own client: in-process, over streamable HTTP on
127.0.0.1, and over stdio with `shesha mcp` as a child process."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, ClientSession, StdioServerParameters, stdio_client
from mcp.client.context import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CreateMessageRequestParams, CreateMessageResult, TextContent

from shesha import Shesha
from shesha.llm.types import Message
from shesha.sandbox import SandboxPool
from shesha.server.mcp_tools import McpHub
from shesha.service import Service
from shesha.testing import FunctionModel, RunningServer

SUBCALL = "You follow one instruction"


model_calls: list[list[Message]] = []


def model(messages: list[Message], name: str) -> str:
    model_calls.append(list(messages))
    if messages[0]["content"].startswith(SUBCALL):
        return "shesha's sub-model read it"
    step = sum(1 for m in messages if m["role"] == "assistant")
    return "```repl\nprint(doc_names)\n```" if step == 0 else "FINAL(Maria Lopez)"


async def sampling(
    context: ClientRequestContext, params: CreateMessageRequestParams
) -> CreateMessageResult:
    """The client's own model: it says what it was given to read."""
    text = params.messages[0].content.text  # type: ignore[union-attr]
    read = text.split(">\n", 1)[1].rsplit("\n</", 1)[0].strip()  # inside the content tags
    return CreateMessageResult(
        role="assistant",
        content=TextContent(type="text", text=f"client read: {read}"),
        model="client-model",
        stop_reason="endTurn",
    )


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "acme.txt").write_text("The CEO of Acme is Maria Lopez.")
    return folder


@pytest.fixture
def sh(sandboxes: SandboxPool, tmp_path: Path) -> Iterator[Shesha]:
    with Shesha(home=str(tmp_path / "home"), llm=FunctionModel(model), sandboxes=sandboxes) as s:
        yield s


def structured(result: Any) -> Any:
    assert not result.is_error, result.content
    data = result.structured_content
    return data["result"] if isinstance(data, dict) and set(data) == {"result"} else data


def test_tools_for_agents_that_want_answers(sh: Shesha, docs: Path, tmp_path: Path) -> None:
    hub = McpHub(Service(sh, roots=[tmp_path]))

    async def go() -> None:
        async with Client(hub.server) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"ask", "add_documents", "list_projects", "list_documents", "read_document",
                    "list_traces", "read_trace", "open_session", "execute_python", "get_variable",
                    "reset_session", "list_sessions", "close_session"} <= names  # fmt: skip
            added = structured(
                await client.call_tool("add_documents", {"project": "acme", "paths": [str(docs)]})
            )
            assert [d["name"] for d in added["stored"]] == ["acme.txt"]
            projects = structured(await client.call_tool("list_projects", {}))
            assert [p["name"] for p in projects] == ["acme"]
            page = structured(
                await client.call_tool(
                    "read_document", {"project": "acme", "name": "acme.txt", "limit": 7}
                )
            )
            assert (page["text"], page["next_offset"]) == ("The CEO", 7)
            seen: list[tuple[float, str | None]] = []

            async def on_progress(
                progress: float, total: float | None, message: str | None
            ) -> None:
                seen.append((progress, message))

            answer = structured(
                await client.call_tool(
                    "ask",
                    {"project": "acme", "question": "Who is the CEO?"},
                    progress_callback=on_progress,
                )
            )
            assert (answer["answer"], answer["status"]) == ("Maria Lopez", "success")
            assert seen
            assert seen[0][1] is not None
            traces = structured(await client.call_tool("list_traces", {"project": "acme"}))
            steps = structured(
                await client.call_tool(
                    "read_trace", {"project": "acme", "trace": traces[0]["name"]}
                )
            )
            assert steps["header"]["question"] == "Who is the CEO?"
            asked = {"project": "acme", "question": "Who?", "conversation": "new"}
            first = structured(await client.call_tool("ask", asked))
            follow_up = {**asked, "question": "And then?", "conversation": first["conversation"]}
            second = structured(await client.call_tool("ask", follow_up))
            assert second["conversation"] == first["conversation"]
            assert "Q: Who?\nA: Maria Lopez" in model_calls[-2][1]["content"]
            outside = await client.call_tool(
                "add_documents", {"project": "acme", "paths": ["/etc/hostname"]}
            )
            assert outside.is_error
            assert "--allow-path" in outside.content[0].text  # type: ignore[union-attr]

    asyncio.run(go())


def test_a_session_lets_the_client_be_the_root_model_with_sampling(
    sh: Shesha, docs: Path, tmp_path: Path
) -> None:
    hub = McpHub(Service(sh, roots=[tmp_path]))
    sh.project("acme").add([docs])

    async def go() -> None:
        async with Client(hub.server, mode="legacy", sampling_callback=sampling) as client:
            opened = structured(await client.call_tool("open_session", {"project": "acme"}))
            sid = opened["session_id"]
            assert opened["documents"] == ["acme.txt"]
            ran = structured(
                await client.call_tool(
                    "execute_python",
                    {"session_id": sid, "code": "x = llm_query('Read', context[0])\nprint(x)"},
                )
            )
            assert ran["stdout"] == "client read: The CEO of Acme is Maria Lopez.\n"
            value = structured(
                await client.call_tool("get_variable", {"session_id": sid, "name": "x"})
            )
            assert value["stdout"].startswith("'client read:")
            bad = await client.call_tool(
                "get_variable", {"session_id": sid, "name": "x; import os"}
            )
            assert bad.is_error
            structured(await client.call_tool("reset_session", {"session_id": sid}))
            gone = structured(
                await client.call_tool("get_variable", {"session_id": sid, "name": "x"})
            )
            assert "NameError" in (gone["error"] or "")
            assert [
                s["session_id"] for s in structured(await client.call_tool("list_sessions", {}))
            ] == [sid]
            structured(await client.call_tool("close_session", {"session_id": sid}))
            closed = await client.call_tool("execute_python", {"session_id": sid, "code": "1"})
            assert closed.is_error

    asyncio.run(go())


def test_without_sampling_llm_query_uses_the_sub_model_or_says_what_to_set_up(
    sandboxes: SandboxPool, sh: Shesha, docs: Path, tmp_path: Path
) -> None:
    sh.project("acme").add([docs])
    code = {"code": "print(llm_query('Read', context[0]))"}

    async def ask_in_a_session(hub: McpHub) -> str:
        async with Client(hub.server) as client:  # no sampling callback
            sid = structured(await client.call_tool("open_session", {"project": "acme"}))[
                "session_id"
            ]
            out = structured(await client.call_tool("execute_python", {"session_id": sid, **code}))
        await hub.close()
        return str(out["stdout"])

    assert asyncio.run(ask_in_a_session(McpHub(Service(sh)))) == "shesha's sub-model read it\n"
    with Shesha(home=str(tmp_path / "home"), sandboxes=sandboxes) as no_model:
        said = asyncio.run(ask_in_a_session(McpHub(Service(no_model))))
    assert "enable sampling" in said
    assert "SHESHA_MODEL" in said


def test_idle_sessions_expire(sh: Shesha, docs: Path) -> None:
    sh.project("acme").add([docs])
    hub = McpHub(Service(sh), session_ttl_s=0.2)

    async def go() -> list[str]:
        async with Client(hub.server) as client:
            sid = structured(await client.call_tool("open_session", {"project": "acme"}))[
                "session_id"
            ]
            await asyncio.sleep(0.4)
            expired = await hub.expire()
            assert expired == [sid]
            late = await client.call_tool("execute_python", {"session_id": sid, "code": "1"})
            assert late.is_error
            assert "expired" in late.content[0].text  # type: ignore[union-attr]
            await hub.close()
            return expired

    assert len(asyncio.run(go())) == 1


def test_streamable_http_on_the_server_with_a_token_and_sampling(
    sh: Shesha, docs: Path, tmp_path: Path
) -> None:
    sh.project("acme").add([docs])

    async def go(url: str) -> str:
        headers = {"Authorization": "Bearer t0ken"}
        async with (
            httpx2.AsyncClient(headers=headers) as http,
            streamable_http_client(f"{url}/mcp/", http_client=http) as (read, write),
            ClientSession(read, write, sampling_callback=sampling) as session,
        ):
            await session.initialize()
            opened = await session.call_tool("open_session", {"project": "acme"})
            sid = structured(opened)["session_id"]
            ran = await session.call_tool(
                "execute_python",
                {"session_id": sid, "code": "print(llm_query('Read', context[0]))"},
            )
            return str(structured(ran)["stdout"])

    with RunningServer(sh, token="t0ken", allow_paths=[tmp_path]) as url:
        assert asyncio.run(go(url)) == "client read: The CEO of Acme is Maria Lopez.\n"


def test_stdio_with_shesha_mcp_as_a_child_process(docs: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHESHA_")}
    env["SHESHA_HOME"] = str(tmp_path / "stdio-home")
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "shesha.cli", "mcp", "--allow-path", str(tmp_path)],
        env=env,
        cwd=str(tmp_path),
    )

    async def go() -> tuple[list[str], str]:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            await session.call_tool("add_documents", {"project": "acme", "paths": [str(docs)]})
            projects = structured(await session.call_tool("list_projects", {}))
            page = structured(
                await session.call_tool("read_document", {"project": "acme", "name": "acme.txt"})
            )
            return [p["name"] for p in projects], str(page["text"])

    names, text = asyncio.run(go())
    assert names == ["acme"]
    assert text == "The CEO of Acme is Maria Lopez.\n"
