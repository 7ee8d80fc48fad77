"""`shesha serve` (one warm process for the CLI, other programs and MCP clients),
`shesha serve stop`, and `shesha view`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import typer

from shesha.cli.common import CONFIG_OPTION_HELP, err_console, open_shesha
from shesha.client import answers
from shesha.config import load_settings
from shesha.errors import ConfigError
from shesha.exits import EXIT_ERROR
from shesha.locations import default_home
from shesha.server.state import clear_state, pid_alive, read_state
from shesha.storage.atomic import private_dir, private_file

serve_app = typer.Typer(
    help="Run shesha as a local service: HTTP API, Server-Sent Events and MCP at /mcp.",
    no_args_is_help=False,
    invoke_without_command=True,
)
ConfigOpt = typer.Option(None, "--config", help=CONFIG_OPTION_HELP)
AllowOpt = typer.Option(
    None,
    "--allow-path",
    help="A directory whose files clients may add by path (repeat it; default: the current "
    "directory and your home directory).",
)
START_TIMEOUT_S = 90.0


def _home(config: Path | None) -> Path:
    s = load_settings(config_file=config)
    return Path(s.home).expanduser() if s.home else default_home()


def _allowed(allow_path: list[Path] | None) -> list[Path]:
    return list(allow_path) if allow_path else [Path.cwd(), Path.home()]


def _model_settings(ctx: typer.Context, config: Path | None, model: str | None) -> dict[str, Any]:
    """The model to serve with: --model, else the configuration, else the local model
    when it is installed (said on stderr)."""
    if model:
        return {"model": model}
    with open_shesha(ctx, config_file=config) as probe:
        note = probe.fallback_note()
    if note is None:
        return {}
    err_console.print(note, markup=False)
    return {"model": "local"}


@serve_app.callback()
def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
    port: int = typer.Option(7733, help="Port (0: any free port)."),
    token: str | None = typer.Option(
        None, help="Require this bearer token (needed beyond loopback; or SHESHA_TOKEN)."
    ),
    model: str | None = typer.Option(None, help="Root model for queries (default: configured)."),
    allow_path: list[Path] | None = AllowOpt,
    max_upload_mb: int = typer.Option(100, help="Largest upload accepted, in MB."),
    allow_endpoint_overrides: bool = typer.Option(
        False,
        "--allow-endpoint-overrides",
        help="Let a request choose api_base / api_key (a named endpoint never gets the "
        "server's own key).",
    ),
    background: bool = typer.Option(False, "--background", help="Start it and return."),
    config: Path | None = ConfigOpt,
) -> None:
    """Serve until interrupted (Ctrl-C), or with --background until `shesha serve stop`."""
    if ctx.invoked_subcommand is not None:
        return
    from shesha.server.run import serve as run_server  # noqa: PLC0415  FastAPI loads only here

    settings = load_settings(config_file=config)
    token = token or (settings.token.get_secret_value() if settings.token else None)
    home = _home(config)
    running = read_state(home)
    if running is not None:
        raise ConfigError(
            f"A shesha server already serves {home}: {running.url} (pid {running.pid}).",
            hint="Use it, or stop it first with `shesha serve stop`.",
        )
    if background:
        _start_background(home, config)
        return
    chosen = _model_settings(ctx, config, model)
    if allow_endpoint_overrides:
        chosen["allow_endpoint_overrides"] = True
    with open_shesha(ctx, config_file=config, **chosen) as sh:
        run_server(
            sh,
            host=host,
            port=port,
            token=token,
            allow_paths=_allowed(allow_path),
            max_upload_mb=max_upload_mb,
            on_ready=lambda url: err_console.print(
                f"shesha {url} · data {sh.store.home} · MCP {url}/mcp · OpenAI {url}/v1 · "
                f"{'token required' if token else 'no token (loopback only)'} · Ctrl-C stops",
                markup=False,
            ),
        )


def _start_background(home: Path, config: Path | None) -> None:
    """Run this same command again, detached, and wait until it answers."""
    argv = [a for a in sys.argv[1:] if a != "--background"]
    log_dir = home / "logs"
    private_dir(log_dir)
    log = log_dir / "server.log"
    with private_file(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shesha.cli", *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        state = read_state(home)
        if state is not None and state.pid == proc.pid and answers(state.url, state.token):
            err_console.print(
                f"shesha server {state.url} (pid {state.pid}) · log {log} · "
                "stop it with `shesha serve stop`",
                markup=False,
            )
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
    if proc.poll() is None:
        proc.terminate()
    raise ConfigError(
        "The background server did not start:\n" + "\n".join(tail),
        hint=f"Run `shesha serve` in the foreground to see why (log: {log}).",
    )


@serve_app.command("stop")
def stop(config: Path | None = ConfigOpt) -> None:
    """Stop the local background server (the one recorded in the data directory)."""
    home = _home(config)
    state = read_state(home)
    if state is None:
        err_console.print(f"No shesha server is running for {home}.", markup=False)
        return
    os.kill(state.pid, signal.SIGTERM)
    for _ in range(100):
        if not pid_alive(state.pid):
            break
        time.sleep(0.1)
    else:
        os.kill(state.pid, signal.SIGKILL)
    clear_state(home, state.pid)
    err_console.print(f"Stopped the shesha server at {state.url} (pid {state.pid}).", markup=False)


@serve_app.command("status")
def status(config: Path | None = ConfigOpt) -> None:
    """Whether a local server runs, where, and for which data directory."""
    home = _home(config)
    state = read_state(home)
    if state is None or answers(state.url, state.token) is None:
        err_console.print(f"No shesha server is running for {home}.", markup=False)
        raise typer.Exit(EXIT_ERROR)
    typer.echo(f"{state.url} (pid {state.pid}, shesha {state.version}) serving {state.home}")


def view(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="A trace file (.jsonl)."),
    port: int = typer.Option(0, help="Port on 127.0.0.1 (0: any free port)."),
) -> None:
    """Show one trace in the browser: its steps, charts and answer (Ctrl-C stops)."""
    import uvicorn  # noqa: PLC0415  the web stack loads only for the commands that serve

    from shesha.server.run import bind, url_of  # noqa: PLC0415
    from shesha.server.security import SecurityHeaders  # noqa: PLC0415
    from shesha.server.web import viewer_app  # noqa: PLC0415

    sock = bind("127.0.0.1", port)
    app = SecurityHeaders(viewer_app(path.resolve()))
    err_console.print(f"Showing {path} at {url_of(sock)}/ · Ctrl-C stops", markup=False)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
