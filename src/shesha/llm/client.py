"""The LLM client: LiteLLM's async completion, with retries, timeouts, usage and cost."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import openai

from shesha.errors import (
    LLMAuthenticationError,
    LLMConnectionError,
    LLMContextWindowError,
    LLMError,
    LLMRateLimitError,
)
from shesha.llm._litellm import litellm
from shesha.llm.constraints import conform, request_fields
from shesha.llm.types import (
    Completion,
    JsonSchema,
    LLMSettings,
    Message,
    OutputConstraint,
    SyncCalls,
)
from shesha.llm.windows import window_numbers

_errors = litellm.exceptions


_PERMANENT_HINT = "Check the model name (any LiteLLM model string, e.g. openai/gpt-4o-mini)."


def missing_credentials(model: str) -> list[str]:
    """The environment variables a provider needs that are not set (LiteLLM's check)."""
    env = litellm.validate_environment(model)
    return [str(k) for k in env.get("missing_keys") or []]


def _translate(error: Exception, model: str, api_base: str | None) -> LLMError:
    where = f" at {api_base}" if api_base else ""
    text = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
    if isinstance(error, _errors.AuthenticationError | _errors.PermissionDeniedError):
        return LLMAuthenticationError(
            f"The provider refused the credentials for {model}{where}: {text}",
            hint="Set the provider's API key (e.g. OPENAI_API_KEY) or pass api_key.",
        )
    if isinstance(error, _errors.RateLimitError):
        return LLMRateLimitError(
            f"{model} kept rate-limiting after every retry: {text}",
            hint="Wait and try again, lower concurrency, or raise num_retries.",
        )
    if isinstance(
        error,
        _errors.APIConnectionError
        | _errors.Timeout
        | _errors.InternalServerError
        | _errors.ServiceUnavailableError
        | _errors.BadGatewayError,
    ):
        return LLMConnectionError(
            f"Could not get an answer from {model}{where}: {text}",
            hint="Check that the endpoint is up and reachable (api_base), or try again.",
        )
    if isinstance(error, _errors.ContextWindowExceededError):
        numbers = window_numbers(str(error))
        return LLMContextWindowError(
            f"The prompt is too long for {model}{where}: {text}",
            hint="Ask about fewer or shorter documents, or use a model with a longer window.",
            limit=numbers[0] if numbers else None,
            requested=numbers[1] if numbers else None,
        )
    if isinstance(error, _errors.NotFoundError | _errors.BadRequestError):
        return LLMError(f"{model}{where} refused the request: {text}", hint=_PERMANENT_HINT)
    return LLMError(f"The call to {model}{where} failed: {type(error).__name__}: {text}")


class LLMClient(SyncCalls):
    """Any LiteLLM model string; ``api_base`` / ``api_key`` for custom endpoints.

    Retries (with LiteLLM's backoff) cover rate limits and transient errors; permanent
    errors (bad key, unknown model) fail at once. Every call reports tokens and its cost
    from LiteLLM's cost data, or from ``settings.prices``, or None when unknown.
    """

    def __init__(self, settings: LLMSettings | None = None) -> None:
        self.settings = settings or LLMSettings()

    def _cost(self, model: str, response: Any, prompt: int, completion: int) -> float | None:
        price = self.settings.prices.get(model)
        if price is not None:
            return (prompt * price.input_per_mtok + completion * price.output_per_mtok) / 1e6
        try:
            return float(litellm.completion_cost(completion_response=response, model=model))
        except (
            _errors.ModelNotMappedError,
            openai.OpenAIError,
            ValueError,
            KeyError,
            TypeError,
        ):
            return None  # no price known for this model: unknown, not zero

    def _supports_schema(self, model: str) -> bool:
        try:
            return bool(litellm.supports_response_schema(model=model))
        except (ValueError, KeyError, TypeError, _errors.ModelNotMappedError):
            return False  # a model LiteLLM does not know: ask plainly

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        model: str,
        constraint: OutputConstraint | None = None,
    ) -> Completion:
        s = self.settings
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": list(messages),
            "timeout": s.timeout_s,
            "num_retries": s.num_retries,
            **s.extra,
        }
        if s.api_base:
            kwargs["api_base"] = s.api_base
        if s.api_key is not None:
            kwargs["api_key"] = s.api_key.get_secret_value()
        elif s.api_base and model.startswith("openai/") and not os.environ.get("OPENAI_API_KEY"):
            # A local OpenAI-compatible server (vLLM, llama.cpp) needs no key, but the
            # OpenAI client insists on one.
            kwargs["api_key"] = "not-needed"
        if s.temperature is not None:
            kwargs["temperature"] = s.temperature
        if s.max_output_tokens is not None:
            kwargs["max_tokens"] = s.max_output_tokens
        schema = isinstance(constraint, JsonSchema) and s.constraints == "response_format"
        fields = request_fields(
            constraint, s.constraints, supports_schema=schema and self._supports_schema(model)
        )
        if "extra_body" in fields:
            fields["extra_body"] = {**kwargs.get("extra_body", {}), **fields["extra_body"]}
        kwargs.update(fields)
        started = time.perf_counter()
        try:
            response = await litellm.acompletion(**kwargs)
        except openai.OpenAIError as e:  # every LiteLLM provider error derives from it
            raise _translate(e, model, s.api_base) from e
        duration = time.perf_counter() - started
        choice = response.choices[0]
        text = conform(choice.message.content or "", constraint)
        usage = getattr(response, "usage", None)
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        details = getattr(usage, "prompt_tokens_details", None)
        cached = int(getattr(details, "cached_tokens", 0) or 0)
        return Completion(
            text=text,
            model=model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=self._cost(model, response, prompt, completion),
            duration_s=duration,
            cached_prompt_tokens=min(cached, prompt),
        )
