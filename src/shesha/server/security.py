"""What the server checks before it does anything: who asks (a token), where it may
listen, which paths it may read, and how much it accepts."""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Sequence
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shesha.errors import ConfigError, Forbidden

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost: it may resolve anywhere


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token (checked before binding)."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"Refusing to listen on {host} without a token: anyone who can reach it could "
            "read your documents and spend your model budget.",
            hint="Set --token (or SHESHA_TOKEN), or listen on 127.0.0.1 (the default).",
        )


def allowed_path(raw: str, roots: Sequence[Path]) -> Path:
    """The path, resolved, if it lies under one of ``roots``; a Forbidden error if not."""
    if any(c in raw for c in "*?["):
        raise Forbidden(
            f"{raw}: patterns are not accepted when adding by path.",
            hint="Give files and directories; the server adds directories recursively.",
        )
    path = Path(raw).expanduser().resolve()
    if not any(path == root or root in path.parents for root in roots):
        where = ", ".join(str(r) for r in roots) or "nowhere (no --allow-path was given)"
        raise Forbidden(
            f"{raw}: this server may only read files under {where}.",
            hint="Start the server with --allow-path DIR, or upload the files instead.",
        )
    return path


async def _reply(
    send: Send, status: int, body: dict[str, object], headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": data})


class TokenGuard:
    """With a token, every HTTP request but ``open_paths`` must carry it:
    ``Authorization: Bearer <token>`` (or ``?token=`` for clients that cannot set
    headers). Compared in constant time. Without a token, everything passes."""

    def __init__(self, app: ASGIApp, token: str | None, open_paths: Sequence[str] = ()) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.open_paths = set(open_paths)

    def _presented(self, scope: Scope) -> bytes:
        for key, value in scope.get("headers", []):
            if key == b"authorization" and value.lower().startswith(b"bearer "):
                token: bytes = value[7:].strip()
                return token
        query: bytes = scope.get("query_string", b"")
        for part in query.split(b"&"):
            name, _, given = part.partition(b"=")
            if name == b"token":
                return given
        return b""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.token is None
            or scope["type"] not in ("http", "websocket")
            or scope.get("path") in self.open_paths
            or hmac.compare_digest(self._presented(scope), self.token)
        ):
            await self.app(scope, receive, send)
            return
        await _reply(
            send,
            401,
            {
                "error": "This server needs a token.",
                "hint": "Send Authorization: Bearer <token> (shesha: --token or SHESHA_TOKEN).",
                "kind": "Unauthorized",
            },
            [(b"www-authenticate", b"Bearer")],
        )


class UploadLimit:
    """Refuses a request body over ``limit`` bytes: at once when its Content-Length says
    so, else as soon as that many bytes have arrived."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._too_large(send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if not started:
                await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        await _reply(
            send,
            413,
            {
                "error": "The request is larger than this server accepts "
                f"({self.limit // 2**20} MB).",
                "hint": "Add large files by path (--allow-path), or raise --max-upload-mb.",
                "kind": "PayloadTooLarge",
            },
        )


class _TooLarge(Exception):
    """A body passed the upload limit while it was being read."""
