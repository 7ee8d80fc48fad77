"""What the server checks before it does anything: who asks (a token), where it may
listen, which paths it may read, and how much it accepts."""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shesha.config import Settings
from shesha.endpoints import is_local
from shesha.errors import ConfigError, Forbidden

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


ENDPOINT_OVERRIDES = frozenset({"api_base", "api_key"})
"""Where a query's model calls go, and with what key: the operator's, unless allowed."""
OPERATOR_ONLY = frozenset({"prompts_dir"})
"""Settings that name the server's own files: never taken from a request."""
NO_KEY = "none"
"""The key sent to an endpoint a request named without a key of its own: a placeholder,
so that neither the server's key nor a provider's variable in its environment is sent."""


def _provider(model: str) -> str | None:
    """A LiteLLM model string's provider (``openai/gpt-4o`` -> ``openai``); None when the
    string names none (LiteLLM then guesses it from the name)."""
    return model.split("/", 1)[0] if "/" in model else None


def request_overrides(overrides: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """What a request may change of its query's settings. It never names a file of the
    server (prompts, a local model's path). Unless the operator allows endpoint
    overrides, it never chooses where the model calls go: not ``api_base`` or
    ``api_key``, and, when the operator set no ``api_base``, no model of another provider
    than the configured one (LiteLLM would send the server's key to that provider's
    endpoint, which for some is a local port). When a request does choose, the server's
    key does not go with it."""
    if taken := sorted(OPERATOR_ONLY & overrides.keys()):
        raise Forbidden(
            f"A request may not set {', '.join(taken)}: it names the server's own files.",
            hint="Set it in the server's shesha.toml.",
        )
    models = [v for k in ("model", "sub_model") if isinstance(v := overrides.get(k), str)]
    for value in models:
        named_file = "/" in value[6:] or value.endswith(".gguf")
        if named_file and is_local(value):
            raise Forbidden(
                f"A request may name a registered local model ('local' or 'local/<name>'), "
                f"not a file: {value!r}.",
                hint="Register the file on the server with `shesha models add PATH`.",
            )
    configured = [m for m in (settings.model, settings.sub_model) if m]
    providers = {_provider(m) for m in configured if not is_local(m)}
    elsewhere = [
        m for m in models
        if not is_local(m) and m not in configured and (
            _provider(m) is None or _provider(m) not in providers
        )
    ]  # fmt: skip
    given = sorted(ENDPOINT_OVERRIDES & overrides.keys())
    if not settings.allow_endpoint_overrides:
        if given:
            raise Forbidden(
                f"This server does not let a request choose where its model calls go "
                f"({', '.join(given)}).",
                hint="Ask in this process instead (--server off), or the operator may allow it: "
                "shesha serve --allow-endpoint-overrides (allow_endpoint_overrides = true). A "
                "named endpoint never gets the server's key.",
            )
        if elsewhere and not settings.api_base:
            raise Forbidden(
                f"This server's models are {', '.join(configured) or 'its default'}; a "
                f"request may choose another of the same provider, not {elsewhere[0]!r} "
                "(the server's key would go to that provider's endpoint).",
                hint="Ask in this process instead (--server off), or the operator may allow "
                "it: shesha serve --allow-endpoint-overrides.",
            )
    chosen = dict(overrides)
    if not chosen.get("api_key") and (
        "api_base" in chosen or (elsewhere and not settings.api_base)
    ):
        # an endpoint the request chose: never the server's key, nor a provider variable
        # from its environment, unless it is that endpoint's own provider's
        chosen["api_key"] = NO_KEY if "api_base" in chosen else None
    return chosen


def allowed_path(raw: str, roots: Sequence[Path]) -> Path:
    """The path, resolved, if it lies under one of ``roots``; a Forbidden error if not."""
    if any(c in raw for c in "*?["):
        raise Forbidden(
            f"{raw}: patterns are not accepted when adding by path.",
            hint="Give files and directories; the server adds directories recursively.",
        )
    try:
        path = Path(raw).expanduser().resolve()
    except (OSError, ValueError, RuntimeError) as e:  # a NUL byte, a lone surrogate, a loop
        raise ConfigError(
            f"{raw!r} is not a path this server can read ({e}).",
            hint="Give the absolute path of a file or folder under --allow-path.",
        ) from e
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
        if wants_page and not scope.get("path", "").startswith("/api/"):
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
            await _reply(send, 421, _refusal(f"This server does not answer for {host}."))
            return
        if scope.get("method") in UNSAFE_METHODS:
            origin = _header(scope, b"origin").decode("latin-1")
            site = _header(scope, b"sec-fetch-site").decode("latin-1")
            if site == "cross-site" or (origin and origin.split("://", 1)[-1] != host):
                await _reply(send, 403, _refusal("A request from another site was refused."))
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
