"""The server's credentials stay put: no request sends them to an endpoint the operator
did not configure, and a request reads nothing of the server's own files.

The server is configured with an endpoint and a key (a scripted OpenAI-compatible server
on loopback, reached through LiteLLM as a provider would be), and a provider key sits in
the environment. A second scripted server plays the attacker's endpoint: every request it
receives is recorded with its headers.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client

from shesha import Shesha
from shesha.sandbox import SandboxPool
from shesha.server.mcp_tools import McpHub
from shesha.service import Service
from shesha.testing import RunningServer, ScriptedLLMServer

SERVER_KEY = "sk-the-servers-own-key"
ENV_KEY = "sk-a-provider-key-in-the-environment"
ANSWER = ["FINAL(the answer)"]


@pytest.fixture
def endpoints() -> Iterator[tuple[ScriptedLLMServer, ScriptedLLMServer]]:
    with ScriptedLLMServer(ANSWER) as configured, ScriptedLLMServer(ANSWER) as attacker:
        yield configured, attacker


@pytest.fixture
def provider_key_in_env() -> Iterator[None]:
    os.environ["OPENAI_API_KEY"] = ENV_KEY
    try:
        yield
    finally:
        del os.environ["OPENAI_API_KEY"]


def server(
    tmp_path: Path, sandboxes: SandboxPool, configured: ScriptedLLMServer, **settings: Any
) -> Shesha:
    sh = Shesha(
        home=str(tmp_path / "home"),
        model="openai/scripted",
        api_base=configured.api_base,
        api_key=SERVER_KEY,
        sandboxes=sandboxes,
        **settings,
    )
    sh.project("p").add([_doc(tmp_path)])
    return sh


def _doc(tmp_path: Path) -> Path:
    doc = tmp_path / "doc.txt"
    doc.write_text("A document.")
    return doc


def keys_seen(endpoint: ScriptedLLMServer) -> set[str]:
    return {r.headers.get("authorization", "") for r in endpoint.requests}


def ask(url: str, **body: Any) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=60) as http:
        r = http.post("/api/projects/p/queries", json={"question": "What?", **body})
        if r.status_code == 202:
            with http.stream("GET", r.json()["events_url"]) as events:
                for _ in events.iter_lines():
                    pass
        return r


@pytest.mark.parametrize(
    "override",
    [
        {"api_base": "ATTACKER"},
        {"api_base": "ATTACKER", "model": "openai/other"},
        {"api_base": "ATTACKER", "sub_model": "openai/other"},
        {"api_key": "sk-mine"},
    ],
    ids=["api_base", "api_base+model", "api_base+sub_model", "api_key"],
)
def test_a_request_may_not_choose_the_endpoint_or_key_by_default(
    tmp_path: Path,
    sandboxes: SandboxPool,
    endpoints: tuple[ScriptedLLMServer, ScriptedLLMServer],
    provider_key_in_env: None,
    override: dict[str, str],
) -> None:
    configured, attacker = endpoints
    body = {k: attacker.api_base if v == "ATTACKER" else v for k, v in override.items()}
    with server(tmp_path, sandboxes, configured) as sh, RunningServer(sh) as url:
        r = ask(url, **body)
        assert r.status_code == 403, r.text
        assert "--allow-endpoint-overrides" in r.json()["hint"]
    assert attacker.requests == []
    assert configured.requests == []  # refused before any model call


def test_when_the_operator_allows_it_a_named_endpoint_never_gets_a_stored_key(
    tmp_path: Path,
    sandboxes: SandboxPool,
    endpoints: tuple[ScriptedLLMServer, ScriptedLLMServer],
    provider_key_in_env: None,
) -> None:
    configured, attacker = endpoints
    with (
        server(tmp_path, sandboxes, configured, allow_endpoint_overrides=True) as sh,
        RunningServer(sh) as url,
    ):
        r = ask(url, api_base=attacker.api_base)
        assert r.status_code == 202, r.text
        own = ask(url, api_base=attacker.api_base, api_key="sk-the-callers-own")
        assert own.status_code == 202, own.text
        plain = ask(url)  # the configured endpoint still gets the configured key
        assert plain.status_code == 202, plain.text
    seen = keys_seen(attacker)
    assert seen, "the named endpoint was called"
    assert not any(SERVER_KEY in k or ENV_KEY in k for k in seen), seen
    assert "Bearer sk-the-callers-own" in seen
    assert keys_seen(configured) == {f"Bearer {SERVER_KEY}"}


@pytest.mark.parametrize(
    "model", ["llamafile/x", "ollama/llama3", "lm_studio/x", "anthropic/claude", "gpt-4o"]
)
def test_with_no_configured_endpoint_a_request_keeps_to_the_configured_provider(
    tmp_path: Path, sandboxes: SandboxPool, model: str
) -> None:
    """The operator set a key and a model but no api_base: a model of another provider
    would take the key to that provider's endpoint (a local port, for some)."""
    with (
        Shesha(
            home=str(tmp_path / "home"), model="openai/gpt-4o-mini", api_key=SERVER_KEY,
            sandboxes=sandboxes,
        ) as sh,
        RunningServer(sh) as url,
    ):  # fmt: skip
        sh.project("p").add([_doc(tmp_path)])
        r = ask(url, model=model)
        assert r.status_code == 403, r.text
        assert "same provider" in r.json()["error"]
        assert ask(url, sub_model=model).status_code == 403
        web = httpx.post(f"{url}/p/p/ask", data={"question": "What?", "model": model})
        assert web.status_code == 403, web.text  # the web page's form has a model field


def test_a_model_of_the_configured_provider_goes_to_the_configured_endpoint(
    tmp_path: Path,
    sandboxes: SandboxPool,
    endpoints: tuple[ScriptedLLMServer, ScriptedLLMServer],
) -> None:
    configured, _ = endpoints
    with server(tmp_path, sandboxes, configured) as sh, RunningServer(sh) as url:
        r = ask(url, model="openai/another-model")
        assert r.status_code == 202, r.text
    assert {q.model for q in configured.requests} == {"another-model"}
    assert keys_seen(configured) == {f"Bearer {SERVER_KEY}"}


@pytest.mark.parametrize(
    "override",
    [
        {"prompts_dir": "/etc"},
        {"model": "local/etc/passwd.gguf"},
        {"model": "local//root/x.gguf"},
        {"sub_model": "local/../../x.gguf"},
    ],
    ids=["prompts_dir", "model-path", "model-abs-path", "sub_model-path"],
)
def test_a_request_names_no_file_of_the_server(
    tmp_path: Path,
    sandboxes: SandboxPool,
    endpoints: tuple[ScriptedLLMServer, ScriptedLLMServer],
    override: dict[str, str],
) -> None:
    configured, _ = endpoints
    with (
        server(tmp_path, sandboxes, configured, allow_endpoint_overrides=True) as sh,
        RunningServer(sh) as url,
    ):
        r = ask(url, **override)
        assert r.status_code == 403, r.text
        if "model" in override:  # the web page's form has a model field too
            web = httpx.post(f"{url}/p/p/ask", data={"question": "What?", **override})
            assert web.status_code == 403, web.text
        hub = McpHub(Service(sh))

        async def via_mcp() -> bool:
            async with Client(hub.server) as client:
                asked = {"project": "p", "question": "What?", "model": override.get("model")}
                if asked["model"] is None:
                    return True  # MCP's ask takes no prompts_dir
                result = await client.call_tool("ask", asked)
                return bool(result.is_error)

        assert asyncio.run(via_mcp())
    assert configured.requests == []
