"""The LLM client over LiteLLM.

``LLMClient`` is loaded on first use: importing LiteLLM takes seconds, and commands
that never call a model (``shesha projects``, ``shesha docs``) should not pay for it.
``OpenAICompatibleClient`` (httpx, no LiteLLM) serves the local model.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from shesha.llm.types import (
    ChatModel,
    Choices,
    Completion,
    Grammar,
    JsonSchema,
    LLMSettings,
    Message,
    NotedChoice,
    OutputConstraint,
    Price,
)

if TYPE_CHECKING:  # the real classes for the type checker; loaded lazily at run time
    from shesha.llm.client import LLMClient, missing_credentials
    from shesha.llm.openai_compatible import OpenAICompatibleClient

__all__ = [
    "ChatModel",
    "Choices",
    "Completion",
    "Grammar",
    "JsonSchema",
    "LLMClient",
    "LLMSettings",
    "Message",
    "NotedChoice",
    "OpenAICompatibleClient",
    "OutputConstraint",
    "Price",
    "missing_credentials",
]


def __getattr__(name: str) -> Any:
    if name in ("LLMClient", "missing_credentials"):
        return getattr(import_module("shesha.llm.client"), name)
    if name == "OpenAICompatibleClient":
        return getattr(import_module("shesha.llm.openai_compatible"), name)
    raise AttributeError(f"module 'shesha.llm' has no attribute {name!r}")
