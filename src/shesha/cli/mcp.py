"""`shesha mcp` (MCP over stdio), and `shesha mcp install|uninstall|clients`: shesha's
entry in an MCP client's configuration (``shesha.mcp_clients``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from shesha.cli.common import CONFIG_OPTION_HELP, err_console, open_shesha
from shesha.cli.serve import AllowOpt, ConfigOpt, _allowed, _home, _model_settings
from shesha.errors import ConfigError
from shesha.mcp_clients import (
    CLIENTS,
    TOKEN_VARIABLE,
    Change,
    Http,
    Launch,
    Stdio,
    client,
    install,
    shesha_command,
    status,
    uninstall,
)
from shesha.server.state import read_state

mcp_app = typer.Typer(
    help="Serve MCP over stdio (no command), or install shesha into an MCP client.",
    invoke_without_command=True,
)
ClientArg = typer.Argument(..., help=f"The client: {', '.join(CLIENTS)}.", show_default=False)
NameOpt = typer.Option("shesha", "--name", help="The server's name in the client's file.")
PrintOpt = typer.Option(False, "--print", help="Show what would change; write nothing.")


@mcp_app.callback()
def mcp(
    ctx: typer.Context,
    model: str | None = typer.Option(None, help="Root model for `ask` (default: configured)."),
    allow_path: list[Path] | None = AllowOpt,
    config: Path | None = ConfigOpt,
) -> None:
    """Serve MCP over stdin/stdout, for Claude Code, Cursor and other MCP clients."""
    if ctx.invoked_subcommand is not None:
        return
    from shesha.server.mcp_tools import McpHub  # noqa: PLC0415  the MCP SDK loads only here
    from shesha.service import Service  # noqa: PLC0415  with it

    chosen = _model_settings(ctx, config, model)
    with open_shesha(ctx, config_file=config, **chosen) as sh:
        McpHub(Service(sh, roots=_allowed(allow_path))).run_stdio()


def _launch(
    http: bool,
    url: str | None,
    token: str | None,
    model: str | None,
    allow_path: list[Path] | None,
    config: Path | None,
) -> Launch:
    home = _home(config)
    if not http and url is None:
        args = ["mcp"]
        for folder in allow_path or []:
            args += ["--allow-path", str(folder.expanduser().resolve())]
        if model:
            args += ["--model", model]
        if config is not None:
            args += ["--config", str(config.expanduser().resolve())]
        return Stdio(shesha_command(), args, {"SHESHA_HOME": str(home)})
    if allow_path or model:
        raise ConfigError(
            "--allow-path and --model are the stdio server's; a running server has its own.",
            hint="Leave them out with --http, or install the stdio server.",
        )
    if url is None:
        running = read_state(home)
        if running is None:
            raise ConfigError(
                f"No shesha server is running for {home}.",
                hint="Start one (`shesha serve --background`), or give its address: --url URL.",
            )
        url, token = running.url, token or running.token
    return Http(url.rstrip("/") + "/mcp/", token)


def _said(change: Change) -> str:
    where, title = change.path, change.client.title
    return {
        "created": f"Installed shesha in {title}: created {where}.",
        "updated": f"Installed shesha in {title}: {where} (the old file is at {change.backup}).",
        "unchanged": f"shesha is installed in {title} already ({where}): nothing changed.",
        "removed": f"Removed shesha from {title}: {where}.",
        "restored": f"Removed shesha from {title}: {where} is as it was before.",
        "absent": f"shesha is not in {title}'s {where}: nothing changed.",
    }[change.action]


def _shown(entry: dict[str, Any] | None, fmt: str, key: str, name: str) -> str:
    if entry is None:
        return ""
    if fmt == "toml":
        import tomlkit  # noqa: PLC0415  TOML only for Codex

        return tomlkit.dumps({key: {name: entry}})
    return json.dumps({key: {name: entry}}, indent=2)


@mcp_app.command("install")
def install_command(
    name_of_client: str = ClientArg,
    http: bool = typer.Option(
        False, "--http", help="Reach the running `shesha serve` (its /mcp/) instead of stdio."
    ),
    url: str | None = typer.Option(
        None, "--url", help="The server's address (implies --http; default: the running one)."
    ),
    token: str | None = typer.Option(
        None, "--token", help="The server's token (default: the running server's)."
    ),
    model: str | None = typer.Option(None, help="Root model the stdio server's `ask` uses."),
    allow_path: list[Path] | None = AllowOpt,
    name: str = NameOpt,
    show: bool = PrintOpt,
    config: Path | None = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
) -> None:
    """Add shesha to a client's MCP configuration (merged; a second run changes nothing)."""
    c = client(name_of_client)
    if http or url is not None:
        c.http_entry()  # a client that takes stdio servers only says so first
    launch = _launch(http, url, token, model, allow_path, config)
    change = install(c, launch, name, dry_run=show)
    if show:
        verb = "would stay" if change.action == "unchanged" else f"would be {change.action}"
        err_console.print(f"{change.path} {verb}; shesha's entry:", markup=False)
        typer.echo(_shown(change.entry, c.fmt, c.key, name), nl=False)
        return
    err_console.print(_said(change), markup=False)
    if isinstance(launch, Http) and launch.token and c.fmt == "toml":
        err_console.print(
            f"{c.title} reads the token from {TOKEN_VARIABLE}: export it where it runs.",
            markup=False,
        )
    if change.action != "unchanged":
        err_console.print(f"Restart {c.title} to load it.", markup=False)


@mcp_app.command("uninstall")
def uninstall_command(
    name_of_client: str = ClientArg, name: str = NameOpt, show: bool = PrintOpt
) -> None:
    """Take shesha out of a client's MCP configuration (the file as it was, when nothing
    else in it changed since)."""
    c = client(name_of_client)
    change = uninstall(c, name, dry_run=show)
    if show:
        err_console.print(f"{change.path} would be {change.action}.", markup=False)
        return
    err_console.print(_said(change), markup=False)


@mcp_app.command("clients")
def clients_command(name: str = NameOpt) -> None:
    """Each client shesha installs into, its file, and whether shesha is in it."""
    for c in CLIENTS.values():
        typer.echo(f"{c.name:15} {status(c, name):14} {c.path()}")
