"""What the server checks before it does anything: who asks (a token), where it may
listen, which paths it may read, and how much it accepts."""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shesha.errors import ConfigError
from shesha.server.openai_shape import is_openai_path, reshaped

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
COOKIE = b"shesha_token"
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
"""The page's Content-Security-Policy: its own script and styles only, so text from a
document can never run, even if it were to reach the page unescaped."""


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


async def _reply(
    scope: Scope,
    send: Send,
    status: int,
    body: dict[str, object],
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """A refusal as JSON: shesha's error shape, or the OpenAI one under ``/v1/``."""
    shaped = reshaped(status, body) if is_openai_path(scope.get("path", "")) else body
    data = json.dumps(shaped).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": data})


def _header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope.get("headers", []):
        if key == name:
            found: bytes = value
            return found
    return b""


_COOKIE_ESCAPE = re.compile(rb"\\(?:([0-3][0-7][0-7])|(.))", re.DOTALL)


def _unquoted(value: bytes) -> bytes:
    """A cookie value as it was set: a quoted one (set so, for characters a cookie may
    not carry bare) unquoted, octal and backslash escapes undone."""
    if len(value) < 2 or not (value.startswith(b'"') and value.endswith(b'"')):
        return value
    return _COOKIE_ESCAPE.sub(lambda m: bytes([int(m[1], 8)]) if m[1] else m[2], value[1:-1])


class TokenGuard:
    """With a token, every HTTP request but ``open_paths`` (a trailing "/" opens a whole
    folder) must carry it: ``Authorization: Bearer <token>``, the page's cookie, or
    ``?token=`` for clients that can set neither. Compared in constant time. A browser
    asking for a page without it is sent to /login. Without a token, everything passes."""

    def __init__(self, app: ASGIApp, token: str | None, open_paths: Sequence[str] = ()) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.open_paths = tuple(open_paths)

    def _open(self, path: str) -> bool:
        return any(path == p or (p.endswith("/") and path.startswith(p)) for p in self.open_paths)

    def _presented(self, scope: Scope) -> bytes:
        auth = _header(scope, b"authorization")
        if auth.lower().startswith(b"bearer "):
            return auth[7:].strip()
        for part in _header(scope, b"cookie").split(b";"):
            name, _, value = part.strip().partition(b"=")
            if name == COOKIE:  # other sites' cookies, however odd, are not parsed
                return _unquoted(value)
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
            or self._open(scope.get("path", ""))
            or hmac.compare_digest(self._presented(scope), self.token)
        ):
            await self.app(scope, receive, send)
            return
        wants_page = b"text/html" in _header(scope, b"accept")
        path = scope.get("path", "")
        if wants_page and not (path.startswith("/api/") or is_openai_path(path)):
            await send(
                {
                    "type": "http.response.start",
                    "status": 303,
                    "headers": [(b"location", b"/login")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await _reply(
            scope,
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
            await self._too_large(scope, send)
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
                await self._too_large(scope, send)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        await _reply(
            scope,
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


class SameOrigin:
    """Refuses requests a web page on another site makes a browser send (cross-site
    request forgery): a change (POST, PUT, PATCH, DELETE) whose ``Origin`` is not this
    server, or that the browser marks cross-site. Also refuses a ``Host`` that is not
    this server's when it listens on loopback, which stops DNS rebinding."""

    def __init__(self, app: ASGIApp, loopback_only: bool = True) -> None:
        self.app = app
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host").decode("latin-1")
        if self.loopback_only and host and not is_loopback(_hostname(host)):
            await _reply(scope, send, 421, _refusal(f"This server does not answer for {host}."))
            return
        if scope.get("method") in UNSAFE_METHODS:
            origin = _header(scope, b"origin").decode("latin-1")
            site = _header(scope, b"sec-fetch-site").decode("latin-1")
            if site == "cross-site" or (origin and origin.split("://", 1)[-1] != host):
                await _reply(scope, send, 403, _refusal("A request from another site was refused."))
                return
        await self.app(scope, receive, send)


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host[1 : host.find("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _refusal(message: str) -> dict[str, object]:
    return {"error": message, "hint": "Use the server from its own address.", "kind": "Forbidden"}


class SecurityHeaders:
    """Adds the Content-Security-Policy and no-sniffing to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    *message.get("headers", []),
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
