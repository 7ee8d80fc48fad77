"""The LLM client over LiteLLM."""

from shesha.llm.client import ChatModel, Completion, LLMClient, LLMSettings, Message, Price

__all__ = ["ChatModel", "Completion", "LLMClient", "LLMSettings", "Message", "Price"]
