"""A thin client for an OpenAI-compatible chat endpoint (the local llama.cpp server), over
httpx: no LiteLLM import, which costs seconds at every cold start.

It keeps LLMClient's contract: the same errors (with the window and the tokens asked for
when a prompt is too long), retries on rate limits and transient failures with backoff,
tokens, the tokens the server reused, and the cost from the user's prices (else unknown).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import httpx

from shesha.errors import (
    LLMAuthenticationError,
    LLMConnectionError,
    LLMContextWindowError,
    LLMError,
    LLMRateLimitError,
)
from shesha.llm.constraints import conform, request_fields
from shesha.llm.types import Completion, LLMSettings, Message, OutputConstraint, SyncCalls
from shesha.llm.windows import window_numbers

RETRIED = frozenset({408, 409, 429, 500, 502, 503, 504})
BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0


class OpenAICompatibleClient(SyncCalls):
    """``POST {api_base}/chat/completions``. A model string ``openai/<name>`` is sent as
    ``<name>``, as LiteLLM sends it."""

    def __init__(self, settings: LLMSettings) -> None:
        if not settings.api_base:
            raise ValueError("OpenAICompatibleClient needs an api_base")
        self.settings = settings

    def _body(
        self, messages: Sequence[Message], model: str, constraint: OutputConstraint | None
    ) -> dict[str, Any]:
        s = self.settings
        body: dict[str, Any] = {"model": model.removeprefix("openai/"), "messages": list(messages)}
        if s.temperature is not None:
            body["temperature"] = s.temperature
        if s.max_output_tokens is not None:
            body["max_tokens"] = s.max_output_tokens
        fields = {**s.extra, **request_fields(constraint, s.constraints, supports_schema=False)}
        body.update(fields.pop("extra_body", {}))
        body.update(fields)
        return body

    def _headers(self) -> dict[str, str]:
        key = self.settings.api_key
        return {"Authorization": f"Bearer {key.get_secret_value()}"} if key is not None else {}

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        model: str,
        constraint: OutputConstraint | None = None,
    ) -> Completion:
        s = self.settings
        url = f"{str(s.api_base).rstrip('/')}/chat/completions"
        body = self._body(messages, model, constraint)
        started = time.perf_counter()
        timeout = httpx.Timeout(s.timeout_s, connect=min(10.0, s.timeout_s))
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
            for attempt in range(s.num_retries + 1):
                last = attempt == s.num_retries
                try:
                    response = await http.post(url, json=body, headers=self._headers())
                except (httpx.ConnectError, httpx.RemoteProtocolError) as e:
                    if last:
                        raise self._unreachable(model, e) from e
                except httpx.TimeoutException as e:
                    raise self._unreachable(model, e) from e
                else:
                    if response.status_code == 200:
                        return self._completion(response, model, constraint, started)
                    if response.status_code not in RETRIED or last:
                        raise self._refused(response, model)
                await asyncio.sleep(min(BACKOFF_S * 2**attempt, MAX_BACKOFF_S))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _where(self, model: str) -> str:
        return f"{model} at {self.settings.api_base}"

    def _unreachable(self, model: str, error: Exception) -> LLMConnectionError:
        return LLMConnectionError(
            f"Could not get an answer from {self._where(model)}: "
            f"{type(error).__name__}: {str(error)[:300]}",
            hint="Check that the endpoint is up and reachable (api_base), or try again.",
        )

    def _refused(self, response: httpx.Response, model: str) -> LLMError:
        status = response.status_code
        try:
            error = response.json().get("error") or {}
            text = str(error.get("message") if isinstance(error, dict) else error)
        except ValueError:
            text = response.text
        text = (text.splitlines()[0] if text else f"HTTP {status}")[:300]
        where = self._where(model)
        numbers = window_numbers(text)
        if numbers is not None or (status == 400 and "context" in text.lower()):
            return LLMContextWindowError(
                f"The prompt is too long for {where}: {text}",
                hint="Ask about fewer or shorter documents, or use a model with a longer window.",
                limit=numbers[0] if numbers else None,
                requested=numbers[1] if numbers else None,
            )
        if status in (401, 403):
            return LLMAuthenticationError(
                f"The endpoint refused the credentials for {where}: {text}",
                hint="Set the endpoint's key (api_key), or none for a server that needs none.",
            )
        if status == 429:
            return LLMRateLimitError(
                f"{model} kept rate-limiting after every retry: {text}",
                hint="Wait and try again, lower concurrency, or raise num_retries.",
            )
        if status >= 500:
            return LLMConnectionError(
                f"Could not get an answer from {where}: HTTP {status}: {text}",
                hint="Check the server's log, or try again.",
            )
        return LLMError(
            f"{where} refused the request: HTTP {status}: {text}",
            hint="Check the model name and the endpoint (api_base).",
        )

    def _completion(
        self,
        response: httpx.Response,
        model: str,
        constraint: OutputConstraint | None,
        started: float,
    ) -> Completion:
        try:
            payload = response.json()
            message = payload["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise LLMError(
                f"{self._where(model)} sent a reply that is not a chat completion: "
                f"{response.text[:200]!r}",
                hint="Check that api_base is an OpenAI-compatible endpoint (…/v1).",
            ) from e
        usage = payload.get("usage") or {}
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        details = usage.get("prompt_tokens_details") or {}
        cached = int(
            details.get("cached_tokens") or (payload.get("timings") or {}).get("cache_n") or 0
        )
        price = self.settings.prices.get(model)
        cost = (
            (prompt * price.input_per_mtok + completion * price.output_per_mtok) / 1e6
            if price is not None
            else None
        )
        return Completion(
            text=conform(str(message.get("content") or ""), constraint),
            model=model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=cost,
            duration_s=time.perf_counter() - started,
            cached_prompt_tokens=min(cached, prompt),
        )
