"""The LLM client over LiteLLM.

``LLMClient`` is loaded on first use: importing LiteLLM takes seconds, and commands
that never call a model (``shesha projects``, ``shesha docs``) should not pay for it.
"""

from importlib import import_module
from typing import Any

from shesha.llm.types import (
    ChatModel,
    Choices,
    Completion,
    Grammar,
    JsonSchema,
    LLMSettings,
    Message,
    OutputConstraint,
    Price,
)

__all__ = [
    "ChatModel",
    "Choices",
    "Completion",
    "Grammar",
    "JsonSchema",
    "LLMClient",
    "LLMSettings",
    "Message",
    "OutputConstraint",
    "Price",
]


def __getattr__(name: str) -> Any:
    if name in ("LLMClient", "missing_credentials"):
        return getattr(import_module("shesha.llm.client"), name)
    raise AttributeError(f"module 'shesha.llm' has no attribute {name!r}")
