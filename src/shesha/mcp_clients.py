"""The MCP clients shesha installs itself into (`shesha mcp install CLIENT`): where each
keeps its configuration, and the entry it takes for a stdio server or an HTTP one.

A client's file is merged, never overwritten: only shesha's entry changes, and the rest
(other servers, settings, a TOML file's comments) stays as it was. Before a change the
file is copied beside itself (``<file>.shesha.bak``), and it is replaced atomically, so
a crash leaves the old file or the new. Installing what is there already writes
nothing. Uninstalling puts back the very file there was before, when nothing else in it
has changed since; else it removes shesha's entry alone.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from shesha.errors import ConfigError
from shesha.storage.atomic import atomic_write

BACKUP_SUFFIX = ".shesha.bak"
TOKEN_VARIABLE = "SHESHA_TOKEN"  # noqa: S105  the name of a variable, not a token
"""Where Codex reads the server's token from (its file may not hold a bearer token)."""


@dataclass(frozen=True)
class Stdio:
    """The client starts ``shesha mcp`` itself."""

    command: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Http:
    """The client reaches a running ``shesha serve`` at ``url`` (its ``/mcp/``)."""

    url: str
    token: str | None = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


Launch = Stdio | Http


def _config_home() -> Path:
    """Where Linux desktop programs keep their settings (Electron's rule)."""
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


def _app_data(app: str) -> Path:
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / app
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming") / app
    return _config_home() / app


def _stdio_typed(launch: Stdio) -> dict[str, Any]:
    return {"type": "stdio", "command": launch.command, "args": launch.args, "env": launch.env}


def _stdio_plain(launch: Stdio) -> dict[str, Any]:
    return {"command": launch.command, "args": launch.args, "env": launch.env}


def _http_typed(launch: Http) -> dict[str, Any]:
    return {"type": "http", "url": launch.url, "headers": launch.headers()}


@dataclass(frozen=True)
class Client:
    """One MCP client: its file, the key its servers sit under, and its entries."""

    name: str
    title: str
    path: Callable[[], Path]
    key: str
    stdio: Callable[[Stdio], dict[str, Any]]
    http: Callable[[Http], dict[str, Any]] | None
    """None: the client's file takes stdio servers only."""
    fmt: Literal["json", "toml"] = "json"

    def entry(self, launch: Launch) -> dict[str, Any]:
        if isinstance(launch, Stdio):
            return self.stdio(launch)
        return self.http_entry()(launch)

    def http_entry(self) -> Callable[[Http], dict[str, Any]]:
        """How an HTTP server is written; a ConfigError for a client that takes none."""
        if self.http is None:
            raise ConfigError(
                f"{self.title}'s configuration file takes stdio servers only.",
                hint=f"Install without --http: `shesha mcp install {self.name}`.",
            )
        return self.http


def _codex_http(launch: Http) -> dict[str, Any]:
    entry: dict[str, Any] = {"url": launch.url}
    if launch.token:
        entry["bearer_token_env_var"] = TOKEN_VARIABLE
    return entry


CLIENTS: dict[str, Client] = {
    c.name: c
    for c in (
        Client(
            "claude-code",
            "Claude Code",
            lambda: Path.home() / ".claude.json",
            "mcpServers",
            _stdio_typed,
            _http_typed,
        ),
        Client(
            "claude-desktop",
            "Claude Desktop",
            lambda: _app_data("Claude") / "claude_desktop_config.json",
            "mcpServers",
            _stdio_plain,
            None,
        ),
        Client(
            "cursor",
            "Cursor",
            lambda: Path.home() / ".cursor" / "mcp.json",
            "mcpServers",
            _stdio_plain,
            lambda h: {"url": h.url, "headers": h.headers()},
        ),
        Client(
            "vscode",
            "VS Code",
            lambda: _app_data("Code") / "User" / "mcp.json",
            "servers",
            _stdio_typed,
            _http_typed,
        ),
        Client(
            "windsurf",
            "Windsurf",
            lambda: Path.home() / ".codeium" / "windsurf" / "mcp_config.json",
            "mcpServers",
            _stdio_plain,
            lambda h: {"serverUrl": h.url, "headers": h.headers()},
        ),
        Client(
            "codex",
            "Codex CLI",
            lambda: Path(os.environ.get("CODEX_HOME") or Path.home() / ".codex") / "config.toml",
            "mcp_servers",
            _stdio_plain,
            _codex_http,
            fmt="toml",
        ),
    )
}


def client(name: str) -> Client:
    found = CLIENTS.get(name)
    if found is None:
        raise ConfigError(
            f"No MCP client named {name!r}.",
            hint=f"shesha installs into: {', '.join(CLIENTS)}.",
        )
    return found


def shesha_command() -> str:
    """The ``shesha`` program to start, by its full path: a client does not run in this
    shell, and may not have its virtual environment on PATH."""
    beside = Path(sys.executable).with_name("shesha")
    if beside.is_file():
        return str(beside)
    return shutil.which("shesha") or "shesha"


# -- reading and writing a client's file ------------------------------------------------


Action = Literal["created", "updated", "unchanged", "removed", "restored", "absent"]


@dataclass(frozen=True)
class Change:
    """What installing or uninstalling did (or, with ``dry_run``, would do)."""

    client: Client
    path: Path
    action: Action
    entry: dict[str, Any] | None = None
    backup: Path | None = None


class _Document:
    """A client's file, parsed: JSON, or TOML kept with its comments (tomlkit)."""

    def __init__(self, c: Client, path: Path) -> None:
        self.client, self.path = c, path
        self.existed = path.is_file()
        self.text = path.read_text(encoding="utf-8") if self.existed else ""
        self.data: Any = self._parse(self.text)

    def _parse(self, text: str) -> Any:
        try:
            if self.client.fmt == "toml":
                import tomlkit  # noqa: PLC0415  only `shesha mcp install codex` reads TOML

                return tomlkit.parse(text)
            data = json.loads(text) if text.strip() else {}
        except ValueError as e:  # tomlkit's ParseError and JSON's are ValueErrors
            raise ConfigError(
                f"{self.path} is not valid {self.client.fmt.upper()} ({e}); shesha leaves it "
                "as it is.",
                hint="Fix the file, or add shesha's entry by hand (`--print` shows it).",
            ) from e
        if not isinstance(data, dict):
            raise ConfigError(
                f"{self.path} does not hold a JSON object; shesha leaves it as it is.",
                hint="Fix the file, or add shesha's entry by hand (`--print` shows it).",
            )
        return data

    def servers(self, create: bool) -> Any:
        key = self.client.key
        found = self.data.get(key)
        if found is None and create:
            if self.client.fmt == "toml":
                import tomlkit  # noqa: PLC0415

                found = tomlkit.table(is_super_table=True)
            else:
                found = {}
            self.data[key] = found
        if found is not None and not isinstance(found, dict):
            raise ConfigError(
                f"{self.path}: {key!r} is not a table of servers; shesha leaves it as it is.",
                hint="Fix the file, or add shesha's entry by hand (`--print` shows it).",
            )
        return found

    def current(self, name: str) -> Any:
        servers = self.servers(create=False)
        value = None if servers is None else servers.get(name)
        unwrap = getattr(value, "unwrap", None)
        return unwrap() if unwrap is not None else value

    def dumps(self) -> str:
        if self.client.fmt == "toml":
            import tomlkit  # noqa: PLC0415

            return tomlkit.dumps(self.data)
        return json.dumps(self.data, indent=2, ensure_ascii=False) + "\n"

    @property
    def backup(self) -> Path:
        return self.path.with_name(self.path.name + BACKUP_SUFFIX)

    def write(self, *, keep_backup: bool = False, secret: bool = False) -> Path | None:
        """Replace the file with the document, the old one kept as the backup (unless
        ``keep_backup``: the backup there is older, and the one to keep). A backup is
        readable by its owner alone (it may hold tokens); so is the file, when ``secret``
        (it holds the server's token)."""
        backup = None
        if self.existed:
            backup = self.backup
            if not (keep_backup and backup.is_file()):
                shutil.copy2(self.path, backup)
                os.chmod(backup, 0o600)
            mode = self.path.stat().st_mode & 0o777
            if secret:
                mode &= 0o700
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            mode = 0o600  # it may hold a token
        atomic_write(self.path, self.dumps().encode())
        os.chmod(self.path, mode)
        return backup


def _target(c: Client) -> Path:
    """The client's file, followed through any link (a dotfiles manager's), so that the
    link stays a link."""
    return c.path().resolve()


def install(c: Client, launch: Launch, name: str = "shesha", *, dry_run: bool = False) -> Change:
    entry = c.entry(launch)
    doc = _Document(c, _target(c))
    if doc.current(name) == entry:
        return Change(c, doc.path, "unchanged", entry)
    action: Action = "updated" if doc.existed else "created"
    if dry_run:
        return Change(c, doc.path, action, entry)
    # replacing shesha's own older entry: the backup from before it is the one to keep
    ours_before = doc.current(name) is not None
    doc.servers(create=True)[name] = entry
    secret = isinstance(launch, Http) and bool(launch.headers()) and c.fmt == "json"
    return Change(c, doc.path, action, entry, doc.write(keep_backup=ours_before, secret=secret))


def uninstall(c: Client, name: str = "shesha", *, dry_run: bool = False) -> Change:
    doc = _Document(c, _target(c))
    if doc.current(name) is None:
        return Change(c, doc.path, "absent")
    servers = doc.servers(create=False)
    del servers[name]
    if not servers:
        del doc.data[c.key]
    before = _Document(c, doc.backup) if doc.backup.is_file() else None
    if before is not None and _same(before.data, doc.data):
        # nothing else changed since shesha was installed: the file as it was
        if not dry_run:
            os.replace(doc.backup, doc.path)
        return Change(c, doc.path, "restored")
    if dry_run:
        return Change(c, doc.path, "removed")
    if not doc.data and before is None:
        doc.path.unlink()  # shesha created it, and it holds nothing else
        return Change(c, doc.path, "removed")
    return Change(c, doc.path, "removed", backup=doc.write())


def _same(a: Any, b: Any) -> bool:
    unwrap_a, unwrap_b = getattr(a, "unwrap", None), getattr(b, "unwrap", None)
    return bool((unwrap_a() if unwrap_a else a) == (unwrap_b() if unwrap_b else b))


def status(c: Client, name: str = "shesha") -> str:
    """Whether shesha is in the client's file, in a word or two."""
    path = c.path()
    if not path.exists():
        return "no file"
    try:
        entry = _Document(c, _target(c)).current(name)
    except ConfigError:
        return "unreadable"
    return "installed" if entry is not None else "not installed"
