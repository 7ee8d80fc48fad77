"""The Python API: ``Shesha().project("x").query("...")``, and its async twin."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypedDict

from pydantic import ValidationError

from shesha import llm
from shesha.config import (
    NO_MODEL_HINT,
    QUERY_OVERRIDES,
    Settings,
    home_dir,
    load_settings,
    models_dir,
)
from shesha.conversation import Conversation
from shesha.endpoints import LOCAL_FALLBACK_NOTE, Endpoints, local_profile
from shesha.errors import ConfigError
from shesha.llm.pace import CallRate, Pace, PacedModel
from shesha.local.registry import ModelRegistry, RegisteredModel
from shesha.parser.bounds import ParseBounds
from shesha.parser.ocr import OcrSettings
from shesha.rlm import EngineConfig, QueryLimits, QueryResult, RLMEngine, SandboxProvider
from shesha.rlm.cache import DiskCache, SubcallCache
from shesha.rlm.engine import LeasedSandbox
from shesha.rlm.events import TraceEvent
from shesha.rlm.output import Output, output_checker
from shesha.rlm.prompting import PromptSet
from shesha.rlm.tools import HostTools
from shesha.rlm.trace import EventCallback
from shesha.sandbox import Corpus, SandboxLimits, SandboxPool
from shesha.sandbox.bwrap import BwrapSandbox
from shesha.sandbox.bwrap import isolation as bwrap_isolation
from shesha.sandbox.choice import choose
from shesha.sandbox.container import DOCKER_ISOLATION, docker_pool
from shesha.sandbox.hosts import DockerHosts, HostSpec, TLSSettings
from shesha.sandbox.image import default_image
from shesha.storage import AddReport, ProjectStore, StoredDocument, StoredProject, conversations
from shesha.storage.parsing import ParseLimits
from shesha.storage.store import ProgressCallback, ProjectSnapshot
from shesha.sync import run_sync
from shesha.telemetry import OtelTelemetry, QueryFacts, QueryTelemetry

log = logging.getLogger(__name__)


def _file_name(path: str | None) -> str | None:
    return Path(path).name if path else None


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


class ReadingOptions(TypedDict):
    """How files are parsed: the bounds on what one may cost, the parsing workers' limits."""

    bounds: ParseBounds
    limits: ParseLimits


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
        roots: Sequence[Path] | None = None,
    ) -> AddReport:
        """Add files, directories and globs; see ``AddReport`` for what was stored.
        Scanned pages and images are read by OCR unless the settings say ``ocr = false``
        (``ocr_lang`` picks Tesseract's languages). ``roots``: the only folders files
        may be read from, through any link (a server's allowed paths)."""
        return self.stored.add(
            paths,
            password=password,
            on_progress=on_progress,
            keep_originals=keep_originals,
            ocr=self._ocr(),
            roots=roots,
            **self._reading(),
        )

    def _ocr(self) -> OcrSettings:
        settings = self._shesha.settings
        return OcrSettings(enabled=settings.ocr, languages=settings.ocr_lang)

    def _reading(self) -> ReadingOptions:
        """The settings' bounds on what a file may cost to parse, and on its workers."""
        s = self._shesha.settings
        return {
            "bounds": ParseBounds(
                inflated_mb=s.max_inflated_mb, chars=s.max_file_chars, add_chars=s.max_add_chars
            ),
            "limits": ParseLimits(memory_mb=s.parse_memory_mb, timeout_s=s.parse_timeout_s),
        }

    def add_repository(
        self,
        location: str | os.PathLike[str],
        *,
        ref: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> AddReport:
        """Add a git repository's committed files (a local clone's directory or a URL) at
        ``ref`` (default HEAD), named by their paths; vendored, generated and binary files
        are left out (``report.skipped`` says why). The commit is recorded for ``update``."""
        return self.stored.add_repository(
            str(location), ref=ref, on_progress=on_progress, ocr=self._ocr(), **self._reading()
        )

    def update(self, *, on_progress: ProgressCallback | None = None) -> list[AddReport]:
        """Read again what changed in each added repository since its recorded commit, and
        remove what it deleted: one report per repository."""
        return self.stored.update_repositories(
            on_progress=on_progress, ocr=self._ocr(), **self._reading()
        )

    def documents(self) -> list[StoredDocument]:
        return self.stored.documents_meta()

    def text(self, name: str) -> str:
        """A document's parsed text, exactly as the model sees it in ``context``."""
        return self.stored.text(name)

    def remove(self, name: str) -> None:
        self.stored.remove(name)

    def query(
        self,
        question: str,
        *,
        on_event: EventCallback | None = None,
        output: Output | None = None,
        tools: Sequence[Callable[..., Any]] = (),
        **overrides: Any,
    ) -> QueryResult:
        """Ask a question. Overrides: model, sub_model, api_base, api_key, and every limit
        (max_iterations, max_subcalls, max_tokens, max_cost_usd, max_wall_s, ...).
        ``output``: a pydantic model class (or a JSON schema) the answer must match;
        ``result.output`` holds it. ``tools``: host functions the code may call, besides
        the Shesha's own.

        Inside a running event loop (Jupyter, an async web handler) this works too: the
        query runs on a helper thread with its own loop, and this call blocks until it
        ends. In async code, ``await aquery(...)`` instead, which does not block."""
        return run_sync(
            self.aquery(question, on_event=on_event, output=output, tools=tools, **overrides)
        )

    async def aquery(
        self,
        question: str,
        *,
        on_event: EventCallback | None = None,
        output: Output | None = None,
        tools: Sequence[Callable[..., Any]] = (),
        lease: LeasedSandbox | None = None,
        earlier: Sequence[tuple[str, str | None]] = (),
        **overrides: Any,
    ) -> QueryResult:
        return await self._shesha.aquery_corpus(
            question,
            self.stored,
            trace_dir=self.stored.traces_dir,
            project=self.name,
            on_event=on_event,
            output=output,
            tools=tools,
            lease=lease,
            earlier=earlier,
            **overrides,
        )

    @property
    def shesha(self) -> Shesha:
        return self._shesha

    def chat(self, conversation_id: str | None = None) -> Conversation:
        """A conversation: follow-ups see the earlier questions and answers and run in
        the same sandbox namespace. ``conversation_id`` takes up a recorded one again
        (its namespace is rebuilt by replaying its code); None starts a new one."""
        if conversation_id is None:
            record = conversations.new_record(self.name)
        else:
            record = conversations.load(self.stored.path, conversation_id)
        return Conversation(self, record)

    def conversations(self) -> list[conversations.Record]:
        return conversations.listed(self.stored.path)

    def prompts(self) -> PromptSet:
        """The prompts this project's queries run with (the ``prompts_dir`` setting, over
        the packaged ones)."""
        return self._shesha.prompts()

    def lease_sandbox(self) -> LeasedSandbox:
        """A lease on a sandbox with this project's documents loaded (``close()`` gives it
        back): what a conversation runs its questions in."""
        return self._shesha.sandboxes().acquire(self.stored)


def docker_hosts_of(s: Settings) -> tuple[list[HostSpec], TLSSettings]:
    """The daemons in ``docker_hosts``, and the TLS settings for the tcp:// ones."""
    specs = [
        HostSpec(h) if isinstance(h, str) else HostSpec(h.url, h.weight) for h in s.docker_hosts
    ]
    tls = TLSSettings(s.docker_tls_ca, s.docker_tls_cert, s.docker_tls_key, s.docker_tls_verify)
    return specs, tls


def sandbox_pool(s: Settings, limits: SandboxLimits) -> SandboxPool:
    """A pool of the sandbox the settings ask for, not yet started: over several Docker
    hosts when ``docker_hosts`` names them, else the one ``sandbox`` chooses."""
    size, image = s.pool_size, s.image
    if s.docker_hosts and s.sandbox != "bwrap":
        specs, tls = docker_hosts_of(s)
        hosts = DockerHosts(specs, image or default_image(), limits, tls)
        return SandboxPool(
            size,
            factory=hosts,
            kind="docker",
            isolation=f"{DOCKER_ISOLATION}; on {len(specs)} hosts",
            on_close=hosts.close,
        )
    if choose(s.sandbox) == "bwrap":
        return SandboxPool(
            size,
            factory=BwrapSandbox.factory(limits),
            kind="bwrap",
            isolation=bwrap_isolation(),
        )
    return docker_pool(size, image=image, limits=limits)


def effective_temperature(settings: Settings, local: bool) -> float | None:
    """The temperature calls run at: the local model's is greedy (0) unless set."""
    return 0.0 if local and settings.temperature is None else settings.temperature


def subcall_cache(settings: Settings, corpus: Corpus, local: bool) -> SubcallCache | None:
    """A stored project's sub-call cache, when asked for and the answers are
    deterministic (temperature 0); None otherwise (a corpus in memory has no folder)."""
    if not settings.cache or effective_temperature(settings, local) != 0:
        return None
    if not isinstance(corpus, StoredProject | ProjectSnapshot):
        return None
    return DiskCache(corpus.path / "cache" / "subcalls")


@dataclass(frozen=True)
class Models:
    """The models a query uses: the root model and the sub-model, each with its client."""

    root: llm.ChatModel
    model: str
    sub: llm.ChatModel
    sub_model: str
    local: bool
    """The root model is shesha's own CPU model (compact prompts, small outputs)."""


class Shesha:
    """Projects, and the sandbox pool they share. Settings: defaults < shesha.toml <
    SHESHA_* environment < the keyword arguments given here.

    Two seams replace what a query talks to: ``llm`` answers every model call in place of
    LiteLLM (``shesha.testing.FunctionModel``, or your own ``ChatModel``), and
    ``sandboxes`` hands out sandboxes in place of the Docker pool. What you pass in is
    yours: ``close()`` does not close it. ``tools``: host functions that code in the
    sandbox may call by name (the only door out of the sandbox, opened by you). ``pace``:
    when each model call may go, in place of the ``calls_per_minute`` setting's schedule
    for this process (the Ray executor passes one kept for a whole cluster).
    """

    def __init__(
        self,
        *,
        config_file: str | os.PathLike[str] | None = None,
        llm: llm.ChatModel | None = None,
        sandboxes: SandboxProvider | None = None,
        tools: Sequence[Callable[..., Any]] = (),
        telemetry: QueryTelemetry | None = None,
        pace: Pace | None = None,
        **settings: Any,
    ) -> None:
        self.settings = load_settings(settings, config_file=config_file)
        rate = self.settings.calls_per_minute
        self._given_pace = pace
        self._pace = pace if pace is not None else CallRate(rate) if rate is not None else None
        HostTools(tools)  # a bad tool fails here, not at the first query
        self._tools = list(tools)
        self.store = ProjectStore(home_dir(self.settings))
        self._llm = llm
        self._sandboxes = sandboxes
        self._pool: SandboxPool | None = None
        self._pool_lock = threading.Lock()
        self._endpoints = Endpoints(
            models_dir(self.settings.model_copy(update={"home": str(self.store.home)})),
            self.store.home / "logs",
        )
        self._closed = False
        self._telemetry = telemetry
        self._own_telemetry = telemetry is None
        self._telemetry_lock = threading.Lock()
        self._telemetry_checked = telemetry is not None

    # -- models -----------------------------------------------------------------------

    def models(self) -> ModelRegistry:
        """Local models: the built-in ones and any registered with ``add``."""
        return self._endpoints.registry

    def local_fallback(self, python: str = sys.executable) -> RegisteredModel | None:
        """The default local model, when its file is in place and the server is installed:
        what ``shesha ask`` uses when no model is configured."""
        return self._endpoints.local_fallback(python, self.settings.local_runtime)

    def prompts(self) -> PromptSet:
        """The prompts queries run with: the ``prompts_dir`` setting over the packaged
        ones. A sub-call's prompt (``subcall_system``) is the same in every style."""
        return PromptSet.load(self.settings.prompts_dir)

    def fallback_model(self) -> RegisteredModel | None:
        """The local model a query uses when none is configured (installed and in place);
        None when a model is configured, or the local one is missing."""
        return None if self.has_model else self.local_fallback()

    def fallback_note(self) -> str | None:
        """What every entry point says when the local model steps in, or None."""
        fallback = self.fallback_model()
        return None if fallback is None else LOCAL_FALLBACK_NOTE.format(name=fallback.name)

    @property
    def has_model(self) -> bool:
        """Whether a query has a model to ask: one configured, or an ``llm`` passed in."""
        return self._llm is not None or bool(self.settings.model)

    @property
    def model_name(self) -> str | None:
        """The root model as configured: its model string, or the name of the ``llm``
        passed in; None when there is neither."""
        if self.settings.model:
            return self.settings.model
        return str(getattr(self._llm, "name", "custom")) if self._llm is not None else None

    def resolve_models(self, settings: Settings | None = None) -> Models:
        """The root and sub-model clients for these settings, each behind this Shesha's
        pace (``calls_per_minute``) when it has one. A local model's server is started
        here when it is not running yet, so this may block for a while."""
        models = self._clients(settings or self.settings)
        if self._pace is None:
            return models
        root = PacedModel(models.root, self._pace)
        sub = root if models.sub is models.root else PacedModel(models.sub, self._pace)
        return dataclasses.replace(models, root=root, sub=sub)

    def _clients(self, s: Settings) -> Models:
        if self._closed:
            raise ConfigError("This Shesha has been closed.")
        if self._llm is not None:
            model = s.model or str(getattr(self._llm, "name", "custom"))
            return Models(self._llm, model, self._llm, s.sub_model or model, local=False)
        if not s.model:
            raise ConfigError("No model is configured.", hint=NO_MODEL_HINT)
        root = self._endpoints.resolve(s.model, s)
        sub = root
        if s.sub_model and s.sub_model != s.model:
            sub = self._endpoints.resolve(s.sub_model, s)
        client = self._endpoints.client(root, s)
        sub_client = client if sub.api_base == root.api_base else self._endpoints.client(sub, s)
        return Models(client, root.model, sub_client, sub.model, root.local)

    # -- projects ---------------------------------------------------------------------

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

    # -- queries ----------------------------------------------------------------------

    def query_settings(self, **overrides: Any) -> Settings:
        """The settings one query would run with: these, with its overrides. A
        ConfigError names an unknown or invalid option."""
        return _with_overrides(self.settings, overrides)

    async def aquery_corpus(
        self,
        question: str,
        corpus: Corpus,
        *,
        trace_dir: str | Path | None = None,
        project: str | None = None,
        on_event: EventCallback | None = None,
        output: Output | None = None,
        tools: Sequence[Callable[..., Any]] = (),
        lease: LeasedSandbox | None = None,
        earlier: Sequence[tuple[str, str | None]] = (),
        **overrides: Any,
    ) -> QueryResult:
        """Ask any corpus (a stored project, or documents in memory)."""
        if isinstance(corpus, StoredProject):
            corpus = corpus.snapshot()  # its records are read once for the whole query
        settings = _with_overrides(self.settings, overrides)
        schema, check = output_checker(output) if output is not None else (None, None)
        host_tools = HostTools([*self._tools, *tools]) if (self._tools or tools) else None
        models = await asyncio.to_thread(self.resolve_models, settings)
        config = EngineConfig(
            model=models.model,
            sub_model=models.sub_model,
            **(local_profile(settings.local_ctx) if models.local else {}),
            prompts_dir=settings.prompts_dir,
            limits=QueryLimits(**settings.model_dump(include=set(QueryLimits.model_fields))),
            cache_salt=f"temperature={effective_temperature(settings, models.local)}",
            output_schema=schema,
            verify_citations=settings.verify_citations,
            strategy=settings.strategy,
        )
        sandboxes = await asyncio.to_thread(self.sandboxes)
        cache = subcall_cache(settings, corpus, models.local)
        engine = RLMEngine(
            models.root,
            sandboxes,
            config,
            sub_llm=models.sub,
            cache=cache,
            tools=host_tools,
            check_output=check,
        )
        stored = corpus if isinstance(corpus, ProjectSnapshot) else None
        ocr_pages = {d.name: d.meta.ocr_pages for d in stored.documents_meta()} if stored else None
        exported = self.telemetry()
        seen: list[TraceEvent] = []

        def collect(event: TraceEvent) -> None:
            seen.append(event)
            if on_event is not None:
                on_event(event)

        started = time.time()
        result = await engine.run(
            question,
            corpus,
            trace_dir=trace_dir,
            project=project,
            on_event=collect if exported is not None else on_event,
            lease=lease,
            earlier=earlier,
            ocr_pages=ocr_pages,
            passages=stored.passage_index if stored else None,
        )
        if exported is not None:
            facts = QueryFacts(question, project, _file_name(result.trace_path), started)
            try:
                exported.export(facts, seen)
            except Exception:  # an export never fails a query; the trace file has it all
                log.warning("Exporting the query's spans failed.", exc_info=True)
        return result

    def telemetry(self) -> QueryTelemetry | None:
        """Where each query's spans go: the ``telemetry`` passed in, else an OTLP
        exporter to ``otel_endpoint`` (or ``OTEL_EXPORTER_OTLP_ENDPOINT``), else None.
        ``otel_endpoint`` without the ``otel`` extra is a ConfigError; the standard
        variable without it is a warning, once."""
        with self._telemetry_lock:
            if self._telemetry_checked:
                return self._telemetry
            chosen = self.settings.otel_endpoint
            endpoint = chosen or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            if endpoint:
                try:
                    content = self.settings.otel_content
                    self._telemetry = OtelTelemetry.to_endpoint(endpoint, content=content)
                except ConfigError as e:
                    if chosen:
                        raise
                    log.warning("%s %s Queries run without exporting spans.", e.message, e.hint)
            self._telemetry_checked = True
            return self._telemetry

    # -- sandboxes --------------------------------------------------------------------

    @property
    def pool_started(self) -> bool:
        """Whether the Docker sandbox pool is running (it starts on the first query)."""
        return self._pool is not None

    def pool_stats(self) -> dict[str, int] | None:
        """The sandbox pool's counters (containers, document bytes sent...), once it
        runs; None before."""
        provider = self._sandboxes if self._sandboxes is not None else self._pool
        stats = getattr(provider, "stats", None)
        return dataclasses.asdict(stats()) if callable(stats) else None

    def sandboxes(self) -> SandboxProvider:
        """What queries run code in: the ``sandboxes`` passed in, else the shared Docker
        pool, started on first use."""
        if self._sandboxes is not None:
            return self._sandboxes
        return self.pool()

    def pool(self) -> SandboxPool:
        """The shared sandbox pool (Docker or bubblewrap, as ``sandbox`` chooses),
        started on first use."""
        with self._pool_lock:
            if self._closed:
                raise ConfigError("This Shesha has been closed.")
            if self._pool is None:
                s = self.settings
                limits = {"memory_mb": s.memory_mb, "cpus": s.cpus}
                if s.exec_timeout_s is not None:
                    limits["exec_timeout_s"] = s.exec_timeout_s
                pool = sandbox_pool(s, SandboxLimits(**limits))
                pool.start()
                self._pool = pool
            return self._pool

    def injected_parts(self) -> list[str]:
        """What was passed in as objects rather than settings (``llm``, ``sandboxes``,
        ``tools``, ``pace``): what another process cannot rebuild from the settings."""
        given = {
            "llm": self._llm,
            "sandboxes": self._sandboxes,
            "tools": self._tools or None,
            "pace": self._given_pace,
        }
        return [name for name, value in given.items() if value is not None]

    def close(self) -> None:
        """Stop the sandbox pool and any local model servers (not what was passed in).
        Idempotent."""
        with self._pool_lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        self._endpoints.close()
        with self._telemetry_lock:
            exported, self._telemetry = self._telemetry, None
            self._telemetry_checked = True
        if exported is not None and self._own_telemetry:
            exported.close()

    def __enter__(self) -> Shesha:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
