"""Where a model string is served, and the client that reaches it.

Any LiteLLM model string is served where LiteLLM says. ``local`` and
``local/<name or path>`` are shesha's own CPU models: a llama.cpp server on loopback,
started on first use, reused, and stopped on ``close``. A small local model gets a
profile of its own: short prompts and outputs, greedy decoding, and a stop sequence.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shesha import llm
from shesha.config import Settings
from shesha.errors import ConfigError
from shesha.local.registry import DEFAULT_LOCAL_MODEL, ModelRegistry, RegisteredModel
from shesha.local.server import (
    LocalModelServer,
    RuntimeChoice,
    pick_runtime,
    server_installed,
)

LOCAL_PROFILE: dict[str, Any] = {
    # A small model with an 8K window: short prompts, short outputs, greedy decoding.
    "prompt_style": "compact",
    "max_output_chars": 3000,
    "old_output_chars": 400,
    "keep_full_outputs": 1,
    "subcall_chars": 12_000,
    "max_subcall_chars": 16_000,
    "refuse_unseen": True,
    # Past the window, first the best 4,000 characters of passages: a 1.5B model reads a
    # short window as well as a full one, in a fifth of the time, and says NOT FOUND
    # more often where the answer is not in it (docs/results/leval-nq-qwen2.5-coder-1.5b).
    "first_passages_chars": 4_000,
}
"""Engine settings for a local model (see ``EngineConfig``); see also ``local_profile``."""

READ_WHOLE_SHARE = 0.8
"""Documents estimated to fill at most this share of a local model's window are read
whole; when the model's tokenizer counts more than estimated and they do not fit, the
engine falls back to code."""
CHARS_PER_TOKEN = 3.5


def local_profile(context_tokens: int) -> dict[str, Any]:
    """The local profile for a server with this window: documents short enough to fill
    most of it are read whole (22,937 characters in the default 8,192-token window)."""
    return {
        **LOCAL_PROFILE,
        "show_whole_chars": int(context_tokens * CHARS_PER_TOKEN * READ_WHOLE_SHARE),
    }


LOCAL_FALLBACK_NOTE = (
    "No model is configured: using the local model {name} (--model local). "
    "Choose another with --model or SHESHA_MODEL."
)
"""Said on stderr by every entry point when the local model steps in."""
LOCAL_TIMEOUT_S = 900.0
"""A local call's patience: a full window read on two cores takes minutes, and the
server's slots share the cores, so a call waits while others are read (a 300 s limit
timed out in `make demo` on a busy machine)."""

LOCAL_STOP = ["\nREPL output"]
"""Small models write made-up "REPL output: ..." after their code. It is never used (the
engine drops it), and on a CPU those tokens cost seconds, so generation stops there."""


def is_local(model: str | None) -> bool:
    return model is not None and (model == "local" or model.startswith("local/"))


@dataclass(frozen=True)
class Endpoint:
    """A model as LiteLLM will be asked for it: its string, base URL and known prices."""

    model: str
    api_base: str | None
    prices: dict[str, llm.Price]
    local: bool


class Endpoints:
    """Resolves model strings, and owns the local model servers it starts."""

    def __init__(self, models_dir: Path, log_dir: Path) -> None:
        self.registry = ModelRegistry(models_dir)
        self._log_dir = log_dir
        self._servers: dict[str, LocalModelServer] = {}
        self._lock = threading.Lock()
        self._closed = False

    def local_fallback(
        self, python: str = sys.executable, runtime: RuntimeChoice = "auto"
    ) -> RegisteredModel | None:
        """The default local model, when its file is in place and the server is installed.
        (The server checks the file's sha256 when it starts.)"""
        entry = self.registry.resolve(DEFAULT_LOCAL_MODEL)
        if Path(entry.path).is_file() and server_installed(python, runtime):
            return entry
        return None

    def resolve(self, spec: str, settings: Settings) -> Endpoint:
        """Where ``spec`` is served. A local model's server is started here if it is not
        running yet (this blocks until it answers)."""
        if not is_local(spec):
            return Endpoint(spec, settings.api_base, {}, local=False)
        entry = self.registry.resolve(spec)
        with self._lock:
            if self._closed:
                raise ConfigError("This Shesha has been closed.")
            server = self._servers.get(entry.path)
            if server is None:
                server = LocalModelServer(
                    entry,
                    log_dir=self._log_dir,
                    n_ctx=settings.local_ctx,
                    threads=settings.local_threads,
                    runtime=pick_runtime(settings.local_runtime),
                    slots=settings.local_slots,
                )
                self._servers[entry.path] = server
        api_base = server.ensure()
        model = f"openai/{server.alias}"
        return Endpoint(
            model, api_base, {model: llm.Price(input_per_mtok=0, output_per_mtok=0)}, True
        )

    @staticmethod
    def client(endpoint: Endpoint, settings: Settings) -> llm.ChatModel:
        """The client for the endpoint: for a local one, patient and greedy, over the thin
        OpenAI-compatible client (no LiteLLM import); else LiteLLM's."""
        local = endpoint.local
        options = llm.LLMSettings(
            api_base=endpoint.api_base,
            api_key=None if local else settings.api_key,
            timeout_s=(
                max(settings.llm_timeout_s, LOCAL_TIMEOUT_S) if local else settings.llm_timeout_s
            ),
            num_retries=min(settings.num_retries, 1) if local else settings.num_retries,
            temperature=0.0 if local and settings.temperature is None else settings.temperature,
            prices=endpoint.prices,
            extra={"stop": LOCAL_STOP} if local else {},
            constraints="llama.cpp" if local else "response_format",
        )
        client: llm.ChatModel = (
            llm.OpenAICompatibleClient(options) if local else llm.LLMClient(options)
        )
        return client

    def close(self) -> None:
        """Stop every local model server started here. Idempotent."""
        with self._lock:
            self._closed = True
            servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            server.stop()
