"""What a request may ask of the service, whatever door it comes through: which of its
query's settings it may change, and which paths it may have read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shesha.config import Settings
from shesha.endpoints import is_local
from shesha.errors import ConfigError, Forbidden

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
