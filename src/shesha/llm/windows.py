"""The numbers in a provider's "prompt too long" error, in the wordings servers use."""

from __future__ import annotations

import re

_WINDOW_NUMBERS = (
    re.compile(
        r"maximum context length is (?P<limit>\d+) tokens.*?requested (?P<requested>\d+) tokens",
        re.S,
    ),
    re.compile(
        r"request \((?P<requested>\d+) tokens\) exceeds the available context size "
        r"\((?P<limit>\d+) tokens\)"
    ),
)
"""The OpenAI wording, which vLLM and llama-cpp-python copy; llama.cpp's server's own."""


def window_numbers(text: str) -> tuple[int, int] | None:
    """(the window, the tokens asked for) in a provider's context-window error."""
    for pattern in _WINDOW_NUMBERS:
        found = pattern.search(text)
        if found:
            return int(found["limit"]), int(found["requested"])
    return None
