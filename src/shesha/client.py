"""A client for a running `shesha serve`, and how the CLI finds one.

The CLI uses a server when one answers: ``--server URL``, else ``SHESHA_SERVER``, else the
local server recorded in the data directory (``<home>/server.json``, written by
``shesha serve``). ``--server off`` always runs in-process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from shesha import errors
from shesha.errors import ConfigError, SheshaError
from shesha.remote_ask import OFF, STATUS_TIMEOUT_S
from shesha.server.state import read_state


class ServerError(SheshaError):
    """The server refused a request, for a reason of its own."""


def _error_from(response: httpx.Response) -> SheshaError:
    """The server's JSON error as the SheshaError it was (same message and hint)."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    message = str(body.get("error") or f"The server answered {response.status_code}.")
    hint = body.get("hint")
    kind = getattr(errors, str(body.get("kind")), None)
    cls = kind if isinstance(kind, type) and issubclass(kind, SheshaError) else ServerError
    return cls(message, hint=hint)


class ServerClient:
    """Blocking calls to one server's HTTP API."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise ConfigError(
                f"The shesha server at {self.url} did not answer: {e}",
                hint="Start it with `shesha serve --background`, or run with --server off.",
            ) from e
        if response.status_code >= 400:
            raise _error_from(response)
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=body, **kwargs)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def events(self, path: str) -> Iterator[dict[str, Any]]:
        """A Server-Sent Events stream, one JSON record per event, until it ends."""
        try:
            with self._http.stream("GET", path, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error_from(response)
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        yield json.loads(line[6:])
        except httpx.HTTPError as e:
            raise ConfigError(f"The shesha server at {self.url} stopped answering: {e}") from e


def answers(
    url: str, token: str | None, timeout: float = STATUS_TIMEOUT_S
) -> dict[str, Any] | None:
    """The server's status if a shesha server answers at ``url``, else None."""
    try:
        with httpx.Client(timeout=timeout) as http:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = http.get(url.rstrip("/") + "/api/status", headers=headers)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        status: dict[str, Any] = response.json()
    except ValueError:
        return None
    return status if status.get("service") == "shesha" else None


def find_server(
    explicit: str | None, configured: str | None, token: str | None, home: Path
) -> ServerClient | None:
    """The server the CLI should use, or None to run in-process.

    An explicit or configured URL must answer (else a clear error); the local server
    recorded in ``home`` is used only when it answers and serves that same data
    directory."""
    url = explicit or configured
    if url == OFF:
        return None
    if url:
        if answers(url, token) is None:
            raise ConfigError(
                f"No shesha server answers at {url}.",
                hint="Start one (`shesha serve`), check the URL and token, or use --server off.",
            )
        return ServerClient(url, token)
    state = read_state(home)
    if state is None:
        return None
    key = token or state.token
    status = answers(state.url, key)
    if status is None or Path(str(status.get("home"))).resolve() != home.resolve():
        return None
    return ServerClient(state.url, key)
