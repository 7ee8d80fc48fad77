"""One service under every entry point: on one `shesha serve`, a REST query, an MCP `ask`
and an MCP session wait in one fair line, a conversation is one conversation whichever
door it comes through, and a slow MCP read never stalls the server's event loop.

Everything runs for real on 127.0.0.1: uvicorn on a thread, the official MCP client over
streamable HTTP, httpx for REST, a FunctionModel as the model."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import httpx
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from shesha import Shesha
from shesha.llm.types import Message
from shesha.sandbox import SandboxPool
from shesha.testing import FunctionModel, RunningServer

SUBCALL = "You follow one instruction"
WAIT_S = 20.0
T = TypeVar("T")

gate = threading.Event()
"""Holds every question that says HOLD at its first step, until the test opens it."""


async def model(messages: list[Message], name: str) -> str:
    if messages[0]["content"].startswith(SUBCALL):
        return "sub-answer"
    step = sum(1 for m in messages if m["role"] == "assistant")
    if step == 0 and "HOLD" in messages[-1]["content"]:
        await asyncio.to_thread(gate.wait, 2 * WAIT_S)
    return "```repl\nprint(doc_names)\n```" if step == 0 else "FINAL(Maria Lopez)"


@pytest.fixture
def server(sandboxes: SandboxPool, tmp_path: Path) -> Iterator[tuple[str, Shesha]]:
    """A server whose line has one slot (its pool's size)."""
    gate.clear()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "acme.txt").write_text("The CEO of Acme is Maria Lopez.")
    sh = Shesha(
        home=str(tmp_path / "home"), llm=FunctionModel(model), sandboxes=sandboxes, pool_size=1
    )
    sh.project("acme").add([docs])
    try:
        with RunningServer(sh, allow_paths=[tmp_path]) as url:
            yield url, sh
    finally:
        gate.set()
        sh.close()


def in_background(work: Callable[[], Awaitable[T]]) -> Future[T]:
    """Run a coroutine on a loop of its own thread (an MCP client beside the test)."""
    done: Future[T] = Future()

    def run() -> None:
        try:
            done.set_result(asyncio.run(work()))  # type: ignore[arg-type]
        except BaseException as e:
            done.set_exception(e)

    threading.Thread(target=run, daemon=True).start()
    return done


async def mcp_call(url: str, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """Call tools in order over one MCP session; their structured results."""
    results: list[Any] = []
    async with (
        httpx2.AsyncClient(timeout=60) as http,
        streamable_http_client(f"{url}/mcp/", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        for name, arguments in calls:
            for key, value in arguments.items():
                if callable(value):  # a value known only once an earlier call answered
                    arguments[key] = value(results)
            result = await session.call_tool(name, arguments)
            assert not result.is_error, result.content
            data = result.structured_content
            results.append(data["result"] if data and set(data) == {"result"} else data)
    return results


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"after {WAIT_S:g} s, still not: {what}"
        time.sleep(0.05)


def status(http: httpx.Client) -> dict[str, Any]:
    return dict(http.get("/api/status").json())


def rest_ask(http: httpx.Client, question: str, **body: Any) -> dict[str, Any]:
    r = http.post("/api/projects/acme/queries", json={"question": question, **body})
    assert r.status_code == 202, r.text
    return dict(r.json())


def rest_result(http: httpx.Client, query_id: str) -> dict[str, Any]:
    wait_for(lambda: http.get(f"/api/queries/{query_id}").json()["state"] != "running", "ended")
    wait_for(lambda: http.get(f"/api/queries/{query_id}").json()["state"] != "queued", "ended")
    shown = http.get(f"/api/queries/{query_id}").json()
    assert shown["state"] == "done", shown
    return dict(shown["result"])


def test_an_mcp_ask_and_a_rest_query_with_one_slot_answer_in_turn(
    server: tuple[str, Shesha],
) -> None:
    url, _ = server
    with httpx.Client(base_url=url, timeout=30) as http:
        asked = in_background(
            lambda: mcp_call(url, [("ask", {"project": "acme", "question": "HOLD: who?"})])
        )
        wait_for(lambda: status(http)["running"] == 1, "the MCP ask holds the line's slot")
        queued = rest_ask(http, "Who is the CEO?")
        assert queued["state"] == "queued", "a REST query went past an MCP ask in the line"
        assert status(http)["waiting"] == 1
        gate.set()
        assert asked.result(timeout=WAIT_S)[0]["answer"] == "Maria Lopez"
        assert rest_result(http, queued["id"])["answer"] == "Maria Lopez"


def test_a_rest_query_waits_in_line_behind_an_mcp_ask_that_came_first(
    server: tuple[str, Shesha],
) -> None:
    url, _ = server
    with httpx.Client(base_url=url, timeout=30) as http:
        first = rest_ask(http, "HOLD: who is the CEO?")
        wait_for(lambda: status(http)["running"] == 1, "the REST query runs")
        asked = in_background(
            lambda: mcp_call(url, [("ask", {"project": "acme", "question": "Who?"})])
        )
        wait_for(lambda: status(http)["waiting"] == 1, "the MCP ask waits its turn")
        assert not asked.done()
        gate.set()
        assert rest_result(http, first["id"])["answer"] == "Maria Lopez"
        assert asked.result(timeout=WAIT_S)[0]["status"] == "success"


def test_an_mcp_session_holds_a_slot_until_it_is_closed(server: tuple[str, Shesha]) -> None:
    url, _ = server
    gate.set()
    opened: Future[list[Any]] = Future()
    close = threading.Event()

    async def session_then_close() -> list[Any]:
        async with (
            httpx2.AsyncClient(timeout=60) as http_client,
            streamable_http_client(f"{url}/mcp/", http_client=http_client) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            result = await session.call_tool("open_session", {"project": "acme"})
            assert result.structured_content is not None
            sid = result.structured_content["session_id"]
            opened.set_result([sid])
            await asyncio.to_thread(close.wait, 2 * WAIT_S)
            closed = await session.call_tool("close_session", {"session_id": sid})
            return [closed.structured_content]

    finished = in_background(session_then_close)
    with httpx.Client(base_url=url, timeout=30) as http:
        opened.result(timeout=WAIT_S)
        assert status(http)["running"] == 1, "an MCP session took a sandbox outside the line"
        queued = rest_ask(http, "Who is the CEO?")
        assert queued["state"] == "queued"
        close.set()
        assert finished.result(timeout=WAIT_S)[0]["closed"] is True
        assert rest_result(http, queued["id"])["answer"] == "Maria Lopez"


def test_a_conversation_continued_from_rest_and_mcp_keeps_every_exchange(
    server: tuple[str, Shesha],
) -> None:
    url, _ = server
    gate.set()
    with httpx.Client(base_url=url, timeout=30) as http:
        first = rest_ask(http, "First, over REST?", conversation="new")
        cid = first["conversation"]
        rest_result(http, first["id"])
        asked = in_background(
            lambda: mcp_call(
                url,
                [
                    (
                        "ask",
                        {"project": "acme", "question": "Second, MCP?", "conversation": cid},
                    )
                ],
            )
        ).result(timeout=WAIT_S)
        assert asked[0]["conversation"] == cid
        third = rest_ask(http, "Third, over REST?", conversation=cid)
        rest_result(http, third["id"])
        shown = http.get(f"/api/projects/acme/conversations/{cid}").json()
        assert [e["question"] for e in shown["exchanges"]] == [
            "First, over REST?",
            "Second, MCP?",
            "Third, over REST?",
        ]
        on_disk = Path(server[1].store.home)
        saved = [json.loads(p.read_text()) for p in on_disk.rglob(f"conversations/{cid}.json")]
        assert len(saved) == 1
        assert len(saved[0]["exchanges"]) == 3


def release(fifo: Path, text: str) -> None:
    """Write to a FIFO once its reader has it open (never block when there is none)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:  # ENXIO: no reader yet
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
    with os.fdopen(fd, "w") as writer:
        writer.write(text)


def test_an_sse_stream_keeps_flowing_while_a_slow_mcp_read_runs(
    server: tuple[str, Shesha], tmp_path: Path
) -> None:
    """Another project's document whose stored text is a FIFO: reading it blocks until
    someone writes."""
    url, sh = server
    gate.set()
    (tmp_path / "slow").mkdir()
    (tmp_path / "slow" / "slow.txt").write_text("to be replaced")
    sh.project("slow").add([tmp_path / "slow"])
    stored = sh.get_project("slow").stored
    text_file = stored.docs_dir / stored.document("slow.txt").text_file
    text_file.unlink()
    os.mkfifo(text_file)
    read = in_background(
        lambda: mcp_call(url, [("read_document", {"project": "slow", "name": "slow.txt"})])
    )
    try:
        time.sleep(0.5)  # the read is under way, blocked in open()
        with httpx.Client(base_url=url, timeout=5) as http:
            started = rest_ask(http, "Who is the CEO?")
            with http.stream("GET", f"/api/queries/{started['id']}/events", timeout=5) as r:
                kinds = [
                    json.loads(line[6:])["type"]
                    for line in r.iter_lines()
                    if line.startswith("data: ")
                ]
        assert kinds[-1] == "done"
        assert not read.done()
    finally:
        release(text_file, "A slow read.")  # lets the read end, whatever happened
    assert read.result(timeout=WAIT_S)[0]["text"] == "A slow read."
