"""The LLM client over LiteLLM."""
