"""shesha's MCP server answers clients of the current protocol revision (2026-07-28:
``server/discover``, no handshake) and of the earlier ones (the ``initialize``
handshake, 2024-11-05 to 2025-11-25), over HTTP on `shesha serve` and over stdio: the
SDK's client at each way it offers, and a raw handshake at each earlier revision."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

from shesha import Shesha
from shesha.mcp_clients import shesha_command
from shesha.sandbox import SandboxPool
from shesha.testing import FunctionModel, RunningServer

CURRENT = MODERN_PROTOCOL_VERSIONS[-1]
PREVIOUS = HANDSHAKE_PROTOCOL_VERSIONS[-1]


@pytest.fixture
def served(sandboxes: SandboxPool, tmp_path: Path) -> Iterator[str]:
    sh = Shesha(
        home=str(tmp_path / "home"), llm=FunctionModel(lambda m, n: "FINAL(x)"), sandboxes=sandboxes
    )
    sh.project("acme")
    with RunningServer(sh) as url:
        yield url
    sh.close()


async def _use(session: ClientSession, modern: bool) -> tuple[str, list[str]]:
    if modern:
        version = (await session.discover()).supported_versions[-1]
    else:
        version = (await session.initialize()).protocol_version
    listed = await session.call_tool("list_projects", {})
    assert not listed.is_error, listed.content
    return version, [p["name"] for p in (listed.structured_content or {})["result"]]


async def over_http(url: str, modern: bool) -> tuple[str, list[str]]:
    async with (
        httpx2.AsyncClient(timeout=60) as http,
        streamable_http_client(f"{url}/mcp/", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        return await _use(session, modern)


async def over_stdio(home: Path, modern: bool) -> tuple[str, list[str]]:
    env = {**os.environ, "SHESHA_HOME": str(home)}
    params = StdioServerParameters(command=shesha_command(), args=["mcp"], env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        return await _use(session, modern)


@pytest.mark.parametrize(("modern", "version"), [(True, CURRENT), (False, PREVIOUS)])
def test_the_sdk_client_at_the_current_and_the_previous_revision(
    served: str, tmp_path: Path, modern: bool, version: str
) -> None:
    assert asyncio.run(over_http(served, modern)) == (version, ["acme"])
    assert asyncio.run(over_stdio(tmp_path / "home", modern)) == (version, ["acme"])


def handshake(url: str, version: str) -> dict[str, Any]:
    """A raw ``initialize`` at ``version``, as a client of that revision sends it."""
    r = httpx.post(
        f"{url}/mcp/",
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": version,
                "capabilities": {},
                "clientInfo": {"name": "old-client", "version": "1"},
            },
        },
        headers={"Accept": "application/json, text/event-stream"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    if r.headers["content-type"].startswith("text/event-stream"):
        data = next(ln[6:] for ln in r.text.splitlines() if ln.startswith("data: "))
        return dict(json.loads(data))
    return dict(r.json())


@pytest.mark.parametrize("version", HANDSHAKE_PROTOCOL_VERSIONS)
def test_a_handshake_at_each_earlier_revision_is_answered_at_it(served: str, version: str) -> None:
    reply = handshake(served, version)
    assert reply["result"]["protocolVersion"] == version
    assert reply["result"]["serverInfo"]["name"]
    assert "tools" in reply["result"]["capabilities"]
