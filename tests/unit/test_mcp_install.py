"""`shesha mcp install|uninstall CLIENT`, in a temporary home: each client's file is
written in its documented format, merged with what is there, left alone when it is
damaged, and put back as it was by uninstall. The entries are then used for real: an MCP
client starts the stdio one and reaches the HTTP one."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from typer.testing import CliRunner, Result

from shesha import Shesha
from shesha.cli import app
from shesha.sandbox import SandboxPool
from shesha.server.state import ServerState, write_state
from shesha.testing import FunctionModel, RunningServer

CLIENT_FILES = {
    "claude-code": ".claude.json",
    "claude-desktop": ".config/Claude/claude_desktop_config.json",
    "cursor": ".cursor/mcp.json",
    "vscode": ".config/Code/User/mcp.json",
    "windsurf": ".codeium/windsurf/mcp_config.json",
    "codex": ".codex/config.toml",
}
SERVERS_KEY = {"vscode": "servers", "codex": "mcp_servers"}
STDIO_KEYS = {
    "claude-code": {"type", "command", "args", "env"},
    "vscode": {"type", "command", "args", "env"},
}
HTTP_KEYS = {
    "claude-code": {"type", "url", "headers"},
    "cursor": {"url", "headers"},
    "vscode": {"type", "url", "headers"},
    "windsurf": {"serverUrl", "headers"},
    "codex": {"url", "bearer_token_env_var"},
}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


@pytest.fixture
def shesha(home: Path) -> Callable[..., Result]:
    env = {
        "HOME": str(home),
        "SHESHA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": None,
        "CODEX_HOME": None,
        "SHESHA_MODEL": None,
    }

    def run(*args: str) -> Result:
        return CliRunner().invoke(app, list(args), env=env)

    return run


def read(client: str, path: Path) -> dict[str, Any]:
    text = path.read_text()
    return tomllib.loads(text) if client == "codex" else dict(json.loads(text))


def entry(client: str, data: dict[str, Any], name: str = "shesha") -> dict[str, Any]:
    return dict(data[SERVERS_KEY.get(client, "mcpServers")][name])


def assert_documented_stdio(client: str, found: dict[str, Any], home: Path) -> None:
    """The stdio entry in the shape the client's documentation gives."""
    assert set(found) == STDIO_KEYS.get(client, {"command", "args", "env"})
    if "type" in found:
        assert found["type"] == "stdio"
    assert Path(found["command"]).is_absolute()
    assert found["command"].endswith("shesha")
    assert found["args"][0] == "mcp"
    assert all(isinstance(a, str) for a in found["args"])
    assert found["env"] == {"SHESHA_HOME": str(home / "data")}


@pytest.mark.parametrize("client", list(CLIENT_FILES))
def test_install_writes_the_clients_format_once_and_uninstall_takes_it_away(
    client: str, home: Path, shesha: Callable[..., Result]
) -> None:
    path = home / CLIENT_FILES[client]
    first = shesha("mcp", "install", client)
    assert first.exit_code == 0, first.output
    assert f"created {path}" in first.stderr
    assert_documented_stdio(client, entry(client, read(client, path)), home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    written = path.read_bytes()
    again = shesha("mcp", "install", client)
    assert again.exit_code == 0
    assert "nothing changed" in again.stderr
    assert path.read_bytes() == written
    assert not path.with_name(path.name + ".shesha.bak").exists()
    listed = shesha("mcp", "clients").stdout.splitlines()
    assert any(ln.split()[:2] == [client, "installed"] for ln in listed)
    gone = shesha("mcp", "uninstall", client)
    assert gone.exit_code == 0, gone.output
    assert not path.exists()  # shesha made it, and it held nothing else
    assert "not in" in shesha("mcp", "uninstall", client).stderr


EXISTING_JSON = {
    "theme": "dark",
    "numStartups": 12,
    "SERVERS": {"other": {"command": "other-server", "args": ["--x"], "env": {"K": "v"}}},
}
EXISTING_TOML = """# my Codex settings
model = "o4-mini"  # the one I like

[mcp_servers.other]
command = "other-server"
args = ["--x"]
"""


def existing(client: str) -> str:
    if client == "codex":
        return EXISTING_TOML
    data = json.loads(
        json.dumps(EXISTING_JSON).replace("SERVERS", SERVERS_KEY.get(client, "mcpServers"))
    )
    return json.dumps(data, indent=4) + "\n"  # not the indent shesha writes


@pytest.mark.parametrize("client", list(CLIENT_FILES))
def test_a_file_with_other_settings_is_merged_and_restored_byte_for_byte(
    client: str, home: Path, shesha: Callable[..., Result]
) -> None:
    path = home / CLIENT_FILES[client]
    path.parent.mkdir(parents=True, exist_ok=True)
    original = existing(client)
    path.write_text(original)
    os.chmod(path, 0o640)
    done = shesha("mcp", "install", client, "--allow-path", str(home))
    assert done.exit_code == 0, done.output
    data = read(client, path)
    servers = data[SERVERS_KEY.get(client, "mcpServers")]
    assert servers["other"]["command"] == "other-server"  # untouched
    assert entry(client, data)["args"] == ["mcp", "--allow-path", str(home.resolve())]
    backup = path.with_name(path.name + ".shesha.bak")
    assert backup.read_text() == original
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # the file's own mode kept
    if client == "codex":
        assert path.read_text().startswith(original)  # comments and layout kept
    else:
        assert (data["theme"], data["numStartups"]) == ("dark", 12)
    # installed again with another option: updated, the first backup is still the original
    assert shesha("mcp", "install", client).exit_code == 0
    assert entry(client, read(client, path))["args"] == ["mcp"]
    assert backup.read_text() == original
    gone = shesha("mcp", "uninstall", client)
    assert "as it was before" in gone.stderr
    assert path.read_text() == original
    assert not backup.exists()


@pytest.mark.parametrize("client", ["claude-code", "codex"])
def test_uninstall_after_other_edits_removes_only_shesha(
    client: str, home: Path, shesha: Callable[..., Result]
) -> None:
    path = home / CLIENT_FILES[client]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(existing(client))
    shesha("mcp", "install", client)
    if client == "codex":
        path.write_text(path.read_text() + '\n[mcp_servers.later]\ncommand = "later"\n')
    else:
        data = json.loads(path.read_text())
        data["mcpServers"]["later"] = {"command": "later"}
        path.write_text(json.dumps(data))
    gone = shesha("mcp", "uninstall", client)
    assert gone.exit_code == 0
    servers = read(client, path)[SERVERS_KEY.get(client, "mcpServers")]
    assert set(servers) == {"other", "later"}


def test_print_shows_the_entry_and_writes_nothing(
    home: Path, shesha: Callable[..., Result]
) -> None:
    shown = shesha("mcp", "install", "codex", "--print")
    assert shown.exit_code == 0
    assert "would be created" in shown.stderr
    assert tomllib.loads(shown.stdout)["mcp_servers"]["shesha"]["args"] == ["mcp"]
    shown = shesha("mcp", "install", "cursor", "--print", "--name", "docs")
    assert json.loads(shown.stdout)["mcpServers"]["docs"]["args"] == ["mcp"]
    assert not (home / ".codex").exists()
    assert not (home / ".cursor").exists()
    shesha("mcp", "install", "cursor")
    before = (home / ".cursor/mcp.json").read_bytes()
    assert "would be removed" in shesha("mcp", "uninstall", "cursor", "--print").stderr
    assert (home / ".cursor/mcp.json").read_bytes() == before


@pytest.mark.parametrize(
    ("client", "content", "said"),
    [
        ("claude-code", '{"mcpServers": {', "is not valid JSON"),
        ("vscode", '{\n  // my servers\n  "servers": {}\n}\n', "is not valid JSON"),
        ("cursor", "[1, 2]", "does not hold a JSON object"),
        ("windsurf", '{"mcpServers": "none"}', "is not a table of servers"),
        ("codex", "model = \n", "is not valid TOML"),
    ],
)
def test_a_damaged_file_is_left_as_it_is_with_an_error_naming_it(
    client: str, content: str, said: str, home: Path, shesha: Callable[..., Result]
) -> None:
    path = home / CLIENT_FILES[client]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    for command in ("install", "uninstall"):
        r = shesha("mcp", command, client)
        assert r.exit_code == 1
        assert str(path) in r.stderr
        assert said in r.stderr
        assert "--print" in r.stderr  # how to add it by hand
        assert path.read_text() == content
        assert not path.with_name(path.name + ".shesha.bak").exists()


def test_bad_arguments_are_refused_before_anything_is_written(
    home: Path, shesha: Callable[..., Result]
) -> None:
    unknown = shesha("mcp", "install", "emacs")
    assert unknown.exit_code == 1
    assert "claude-code, claude-desktop, cursor, vscode, windsurf, codex" in unknown.stderr
    desktop = shesha("mcp", "install", "claude-desktop", "--http")
    assert "stdio servers only" in desktop.stderr
    no_server = shesha("mcp", "install", "cursor", "--http")
    assert "No shesha server is running" in no_server.stderr
    mixed = shesha("mcp", "install", "cursor", "--url", "http://127.0.0.1:1", "--model", "local")
    assert "--allow-path and --model are the stdio server's" in mixed.stderr
    assert list(home.iterdir()) == []


def test_a_linked_file_is_written_through_its_link(
    home: Path, shesha: Callable[..., Result]
) -> None:
    dotfiles = home / "dotfiles"
    dotfiles.mkdir()
    (dotfiles / "claude.json").write_text('{"theme": "light"}')
    (home / ".claude.json").symlink_to(dotfiles / "claude.json")
    assert shesha("mcp", "install", "claude-code").exit_code == 0
    assert (home / ".claude.json").is_symlink()
    assert "shesha" in json.loads((dotfiles / "claude.json").read_text())["mcpServers"]
    shesha("mcp", "uninstall", "claude-code")
    assert (home / ".claude.json").is_symlink()
    assert (dotfiles / "claude.json").read_text() == '{"theme": "light"}'


@pytest.mark.parametrize("client", list(HTTP_KEYS))
def test_http_entries_point_at_the_running_server_with_its_token(
    client: str, home: Path, shesha: Callable[..., Result]
) -> None:
    path = home / CLIENT_FILES[client]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(existing(client))
    os.chmod(path, 0o644)  # readable by everyone, before a token goes in
    data_dir = home / "data"
    data_dir.mkdir(exist_ok=True)
    write_state(
        data_dir, ServerState("http://127.0.0.1:7733", os.getpid(), str(data_dir), "x", "tok-1")
    )
    r = shesha("mcp", "install", client, "--http")
    assert r.exit_code == 0, r.output
    found = entry(client, read(client, home / CLIENT_FILES[client]))
    assert set(found) == HTTP_KEYS[client]
    assert found.get("url", found.get("serverUrl")) == "http://127.0.0.1:7733/mcp/"
    if client == "codex":  # Codex takes a token from a variable only
        assert found["bearer_token_env_var"] == "SHESHA_TOKEN"
        assert "export it" in r.stderr
        assert "tok-1" not in (home / CLIENT_FILES[client]).read_text()
    else:
        assert found["headers"] == {"Authorization": "Bearer tok-1"}
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the token now
    assert stat.S_IMODE(path.with_name(path.name + ".shesha.bak").stat().st_mode) == 0o600
    if "type" in found:
        assert found["type"] == "http"
    given = shesha("mcp", "install", client, "--url", "http://127.0.0.1:9/", "--token", "t2")
    assert given.exit_code == 0
    found = entry(client, read(client, home / CLIENT_FILES[client]))
    assert found.get("url", found.get("serverUrl")) == "http://127.0.0.1:9/mcp/"


async def _tools_over_stdio(found: dict[str, Any]) -> list[str]:
    params = StdioServerParameters(
        command=found["command"], args=found["args"], env={**os.environ, **found["env"]}
    )
    async with stdio_client(params) as (read_stream, write), ClientSession(read_stream, write) as s:
        await s.initialize()
        return [t.name for t in (await s.list_tools()).tools]


async def _tools_over_http(found: dict[str, Any]) -> list[str]:
    async with (
        httpx2.AsyncClient(timeout=60, headers=found["headers"]) as http,
        streamable_http_client(found["url"], http_client=http) as (read_stream, write),
        ClientSession(read_stream, write) as s,
    ):
        await s.initialize()
        return [t.name for t in (await s.list_tools()).tools]


def test_an_mcp_client_starts_the_installed_stdio_server(
    home: Path, shesha: Callable[..., Result]
) -> None:
    shesha("mcp", "install", "claude-code")
    found = entry("claude-code", read("claude-code", home / ".claude.json"))
    tools = asyncio.run(_tools_over_stdio(found))
    assert {"ask", "list_projects", "open_session"} <= set(tools)


def test_an_mcp_client_reaches_the_installed_http_server(
    home: Path, shesha: Callable[..., Result], sandboxes: SandboxPool
) -> None:
    sh = Shesha(
        home=str(home / "data"), llm=FunctionModel(lambda m, n: "FINAL(x)"), sandboxes=sandboxes
    )
    with RunningServer(sh, token="tok-real", announce=True):
        assert shesha("mcp", "install", "cursor", "--http").exit_code == 0
        found = entry("cursor", read("cursor", home / ".cursor/mcp.json"))
        tools = asyncio.run(_tools_over_http(found))
    sh.close()
    assert "ask" in tools
