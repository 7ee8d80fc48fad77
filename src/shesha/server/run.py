"""Running the server: bound to its socket before anything is announced, recorded in the
data directory while it runs, warm (sandbox pool and LiteLLM) from the start."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import uvicorn

from shesha import __version__
from shesha.api import Shesha
from shesha.errors import ConfigError
from shesha.server.app import create_app
from shesha.server.mcp_tools import McpHub
from shesha.server.security import check_bind
from shesha.server.state import ServerState, clear_state, write_state
from shesha.service import Service

DEFAULT_PORT = 7733


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the server is announced (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"Cannot listen on {host}:{port}: {e.strerror or e}.",
            hint="Another server may be using the port: choose one with --port (0: any free).",
        ) from e
    sock.listen(128)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def build(
    sh: Shesha,
    *,
    token: str | None,
    allow_paths: Sequence[Path],
    max_upload_mb: int,
    warm: bool,
) -> uvicorn.Config:
    """The ASGI app with MCP mounted, both over one service, as a uvicorn config (no
    socket yet)."""
    svc = Service(sh, roots=allow_paths)
    hub = McpHub(svc)

    @contextlib.asynccontextmanager
    async def running() -> AsyncIterator[None]:
        if warm:
            asyncio.get_running_loop().create_task(_warm(sh))
        async with hub.running():
            yield
        await hub.close()

    app = create_app(
        svc,
        token=token,
        max_upload_mb=max_upload_mb,
        mcp_app=hub.http_app(),
        mcp_lifespan=running,
    )
    return uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)


async def _warm(sh: Shesha) -> None:
    """Start the sandbox pool and import LiteLLM now, not at the first query."""
    with contextlib.suppress(ImportError):  # the first query reports a broken install
        await asyncio.to_thread(__import__, "shesha.llm.client")
    with contextlib.suppress(Exception):
        await asyncio.to_thread(sh.sandboxes)


def serve(
    sh: Shesha,
    *,
    host: str,
    port: int,
    token: str | None,
    allow_paths: Sequence[Path],
    max_upload_mb: int = 100,
    announce: bool = True,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until interrupted; the data directory records the server meanwhile."""
    check_bind(host, token)
    sock = bind(host, port)
    url = url_of(sock)
    config = build(sh, token=token, allow_paths=allow_paths, max_upload_mb=max_upload_mb, warm=True)
    server = uvicorn.Server(config)
    home = sh.store.home
    if announce:
        write_state(home, ServerState(url, os.getpid(), str(home), __version__, token))
    try:
        if on_ready is not None:
            on_ready(url)
        server.run(sockets=[sock])
    finally:
        if announce:
            clear_state(home, os.getpid())
        sock.close()


class RunningServer:
    """A server on a thread of this process, on a free loopback port: for tests and
    benchmarks. ``with RunningServer(sh) as url: ...``"""

    def __init__(
        self,
        sh: Shesha,
        *,
        token: str | None = None,
        allow_paths: Sequence[Path] = (),
        max_upload_mb: int = 100,
        announce: bool = False,
        warm: bool = False,
    ) -> None:
        self.sh = sh
        self.token = token
        self.announce = announce
        self._sock = bind("127.0.0.1", 0)
        self.url = url_of(self._sock)
        config = build(
            sh, token=token, allow_paths=allow_paths, max_upload_mb=max_upload_mb, warm=warm
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self) -> str:
        if self.announce:
            home = self.sh.store.home
            write_state(
                home, ServerState(self.url, os.getpid(), str(home), __version__, self.token)
            )
        self._thread.start()
        for _ in range(500):
            if self._server.started:
                return self.url
            if not self._thread.is_alive():
                break
            threading.Event().wait(0.01)
        raise ConfigError(f"The test server at {self.url} did not start.")

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()
        if self.announce:
            clear_state(self.sh.store.home, os.getpid())
