"""The OpenAI chat API's shape of an error, for every refusal under ``/v1/``: what its
clients (the ``openai`` SDK, LiteLLM, chat front-ends) parse and show."""

from __future__ import annotations

from typing import Any

PREFIX = "/v1/"
"""Where the OpenAI-compatible API lives: every refusal under it takes its shape."""

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    421: "permission_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def is_openai_path(path: str) -> bool:
    return path.startswith(PREFIX)


def openai_error(status: int, error: str, hint: str | None, kind: str) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}``: shesha's message and hint as
    the message, its kind as the code."""
    message = f"{error} {hint}" if hint else error
    kind_of = _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind_of, "param": None, "code": kind}}


def reshaped(status: int, body: dict[str, Any]) -> dict[str, Any]:
    """A shesha error body (``{"error", "hint", "kind"}``) in the OpenAI shape."""
    return openai_error(status, str(body.get("error", "")), body.get("hint"), str(body["kind"]))
