"""The Python API: ``Shesha().project("x").query("...")``, and its async twin."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import ValidationError

from shesha import llm
from shesha.config import Settings, load_settings
from shesha.errors import ConfigError
from shesha.local.registry import (
    DEFAULT_LOCAL_MODEL,
    ModelRegistry,
    RegisteredModel,
    default_models_dir,
)
from shesha.local.server import LocalModelServer, server_installed
from shesha.rlm import EngineConfig, QueryLimits, QueryResult, RLMEngine
from shesha.rlm.trace import EventCallback
from shesha.sandbox import Corpus, SandboxLimits, SandboxPool
from shesha.storage import AddReport, ProjectStore, StoredDocument
from shesha.storage import Project as StoredProject
from shesha.storage.store import ProgressCallback

QUERY_OVERRIDES = frozenset(
    {
        "model",
        "sub_model",
        "api_base",
        "api_key",
        "llm_timeout_s",
        "num_retries",
        "temperature",
        "prompts_dir",
        "exec_timeout_s",
        "max_iterations",
        "max_subcalls",
        "max_tokens",
        "max_cost_usd",
        "max_wall_s",
    }
)
NO_MODEL_HINT = (
    "Use the local CPU model, with no API key and no internet: --model local, once it is "
    "installed (pip install 'shesha[local]' and `shesha models fetch`, or `make local-model` "
    "in a checkout). Or a hosted model: --model openai/gpt-4o-mini or any LiteLLM model "
    'string, as model= here, SHESHA_MODEL, or model = "..." in shesha.toml.'
)


def _with_overrides(settings: Settings, overrides: dict[str, Any]) -> Settings:
    unknown = set(overrides) - QUERY_OVERRIDES
    if unknown:
        raise ConfigError(
            f"Unknown query option(s): {', '.join(sorted(unknown))}.",
            hint=f"A query takes: {', '.join(sorted(QUERY_OVERRIDES))}.",
        )
    values = {k: v for k, v in overrides.items() if v is not None}
    if not values:
        return settings
    try:
        return Settings.model_validate({**settings.model_dump(), **values})
    except ValidationError as e:
        first = e.errors()[0]
        key = str(first["loc"][0]) if first["loc"] else "?"
        raise ConfigError(
            f"Invalid query option {key} = {values.get(key)!r}: {first['msg']}."
        ) from e


LOCAL_PROFILE: dict[str, Any] = {
    # A small model with an 8K window: short prompts, short outputs, greedy decoding.
    "prompt_style": "compact",
    "max_output_chars": 3000,
    "old_output_chars": 400,
    "keep_full_outputs": 1,
    "subcall_chars": 12_000,
    "max_subcall_chars": 16_000,
}


# Small models write made-up "REPL output: ..." after their code. It is never used (the
# engine drops it), and on a CPU those tokens cost seconds, so generation stops there.
LOCAL_STOP = ["\nREPL output"]


def is_local(model: str | None) -> bool:
    return model is not None and (model == "local" or model.startswith("local/"))


@dataclass(frozen=True)
class Endpoint:
    model: str
    api_base: str | None
    prices: dict[str, llm.Price]
    local: bool


class Project:
    """A named set of documents, ready for questions. Get one from ``Shesha.project``."""

    def __init__(self, shesha: Shesha, stored: StoredProject) -> None:
        self._shesha = shesha
        self.stored = stored

    @property
    def name(self) -> str:
        return self.stored.name

    def __repr__(self) -> str:
        return f"Project({self.name!r})"

    def add(
        self,
        paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        password: str | None = None,
        on_progress: ProgressCallback | None = None,
        keep_originals: bool = False,
    ) -> AddReport:
        """Add files, directories and globs; see ``AddReport`` for what was stored."""
        return self.stored.add(
            paths, password=password, on_progress=on_progress, keep_originals=keep_originals
        )

    def documents(self) -> list[StoredDocument]:
        return self.stored.documents_meta()

    def text(self, name: str) -> str:
        """A document's parsed text, exactly as the model sees it in ``context``."""
        return self.stored.text(name)

    def remove(self, name: str) -> None:
        self.stored.remove(name)

    def query(
        self, question: str, *, on_event: EventCallback | None = None, **overrides: Any
    ) -> QueryResult:
        """Ask a question. Overrides: model, sub_model, api_base, api_key, and every limit
        (max_iterations, max_subcalls, max_tokens, max_cost_usd, max_wall_s, ...)."""
        return asyncio.run(self.aquery(question, on_event=on_event, **overrides))

    async def aquery(
        self, question: str, *, on_event: EventCallback | None = None, **overrides: Any
    ) -> QueryResult:
        return await self._shesha.aquery_corpus(
            question,
            self.stored,
            trace_dir=self.stored.traces_dir,
            project=self.name,
            on_event=on_event,
            **overrides,
        )


class Shesha:
    """Projects, and the sandbox pool they share. Settings: defaults < shesha.toml <
    SHESHA_* environment < the keyword arguments given here."""

    def __init__(
        self, *, config_file: str | os.PathLike[str] | None = None, **settings: Any
    ) -> None:
        self.settings = load_settings(settings, config_file=config_file)
        self.store = ProjectStore(self.settings.home)
        self._pool: SandboxPool | None = None
        self._pool_lock = threading.Lock()
        self._local: dict[str, LocalModelServer] = {}
        self._closed = False

    # -- models -----------------------------------------------------------------------

    def models(self) -> ModelRegistry:
        """Local models: the built-in ones and any registered with ``add``."""
        s = self.settings
        models_dir = Path(s.models_dir).expanduser() if s.models_dir else None
        return ModelRegistry(models_dir or default_models_dir(self.store.home))

    def local_fallback(self, python: str = sys.executable) -> RegisteredModel | None:
        """The default local model, when its file is in place and the server is installed:
        what ``shesha ask`` uses when no model is configured. (The server checks the
        file's sha256 when it starts.)"""
        entry = self.models().resolve(DEFAULT_LOCAL_MODEL)
        if Path(entry.path).is_file() and server_installed(python):
            return entry
        return None

    def endpoint(self, spec: str, settings: Settings | None = None) -> Endpoint:
        """Where a model string is served. ``local`` / ``local/<name or path>`` start (or
        reuse) a llama.cpp server on loopback; its calls cost nothing, and that is known."""
        s = settings or self.settings
        if not is_local(spec):
            return Endpoint(spec, s.api_base, {}, local=False)
        entry = self.models().resolve(spec)
        with self._pool_lock:
            if self._closed:
                raise ConfigError("This Shesha has been closed.")
            server = self._local.get(entry.path)
            if server is None:
                server = LocalModelServer(
                    entry,
                    log_dir=self.store.home / "logs",
                    n_ctx=s.local_ctx,
                    threads=s.local_threads,
                )
                self._local[entry.path] = server
        api_base = server.ensure()
        model = f"openai/{server.alias}"
        return Endpoint(
            model, api_base, {model: llm.Price(input_per_mtok=0, output_per_mtok=0)}, True
        )

    def client(self, endpoint: Endpoint, settings: Settings | None = None) -> llm.ChatModel:
        s = settings or self.settings
        client: llm.ChatModel = llm.LLMClient(
            llm.LLMSettings(
                api_base=endpoint.api_base,
                api_key=None if endpoint.local else s.api_key,
                timeout_s=max(s.llm_timeout_s, 300.0) if endpoint.local else s.llm_timeout_s,
                num_retries=min(s.num_retries, 1) if endpoint.local else s.num_retries,
                temperature=0.0 if endpoint.local and s.temperature is None else s.temperature,
                prices=endpoint.prices,
                extra={"stop": LOCAL_STOP} if endpoint.local else {},
            )
        )
        return client

    def project(self, name: str) -> Project:
        """The project called ``name``, made if it does not exist yet."""
        return Project(self, self.store.get_or_create(name))

    def get_project(self, name: str) -> Project:
        """The project called ``name``; a StorageError if there is none."""
        return Project(self, self.store.get(name))

    def projects(self) -> list[str]:
        return self.store.list()

    def delete_project(self, name: str) -> None:
        self.store.delete(name)

    @property
    def pool_started(self) -> bool:
        """Whether the sandbox pool is running (it starts on the first query)."""
        return self._pool is not None

    async def aquery_corpus(
        self,
        question: str,
        corpus: Corpus,
        *,
        trace_dir: str | Path | None = None,
        project: str | None = None,
        on_event: EventCallback | None = None,
        **overrides: Any,
    ) -> QueryResult:
        """Ask any corpus (a stored project, or documents in memory)."""
        settings = _with_overrides(self.settings, overrides)
        if not settings.model:
            raise ConfigError("No model is configured.", hint=NO_MODEL_HINT)
        root = await asyncio.to_thread(self.endpoint, settings.model, settings)
        sub = root
        if settings.sub_model and settings.sub_model != settings.model:
            sub = await asyncio.to_thread(self.endpoint, settings.sub_model, settings)
        client = self.client(root, settings)
        sub_client = client if sub.api_base == root.api_base else self.client(sub, settings)
        config = EngineConfig(
            model=root.model,
            sub_model=sub.model,
            **(LOCAL_PROFILE if root.local else {}),
            prompts_dir=settings.prompts_dir,
            limits=QueryLimits(**settings.model_dump(include=set(QueryLimits.model_fields))),
        )
        pool = await asyncio.to_thread(self.pool)
        engine = RLMEngine(client, pool, config, sub_llm=sub_client)
        return await engine.run(
            question, corpus, trace_dir=trace_dir, project=project, on_event=on_event
        )

    def pool(self) -> SandboxPool:
        """The shared sandbox pool, started on first use."""
        with self._pool_lock:
            if self._closed:
                raise ConfigError("This Shesha has been closed.")
            if self._pool is None:
                s = self.settings
                pool = SandboxPool(
                    s.pool_size,
                    image=s.image,
                    limits=SandboxLimits(
                        memory_mb=s.memory_mb, cpus=s.cpus, exec_timeout_s=s.exec_timeout_s
                    ),
                )
                pool.start()
                self._pool = pool
            return self._pool

    def close(self) -> None:
        """Stop the sandbox pool and any local model servers. Idempotent."""
        with self._pool_lock:
            self._closed = True
            pool, self._pool = self._pool, None
            servers, self._local = list(self._local.values()), {}
        if pool is not None:
            pool.close()
        for server in servers:
            server.stop()

    def __enter__(self) -> Shesha:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
