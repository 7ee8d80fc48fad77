"""Settings, layered: defaults < shesha.toml < SHESHA_* environment < arguments.

An invalid setting is reported with its name, the source it came from, and what is
allowed. Provider variables (OPENAI_API_KEY and the rest) are read by LiteLLM as usual.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo

from shesha.bounds import (
    AtLeastOne,
    ContextTokens,
    Cores,
    Count,
    MemoryMB,
    PerMinute,
    PoolSize,
    Seconds,
    SlotCount,
    Temperature,
)
from shesha.errors import ConfigError
from shesha.llm.types import DEFAULT_LLM_TIMEOUT_S, DEFAULT_RETRIES
from shesha.locations import (
    ENV_PREFIX,
    config_file_path,
    default_home,
    environment_setting,
    read_config_file,
)
from shesha.rlm.strategy import StrategyChoice
from shesha.rlm.usage import QueryLimits
from shesha.sandbox.limits import DEFAULT_CPUS, DEFAULT_MEMORY_MB

SandboxKind = Literal["auto", "docker", "bwrap"]

NO_MODEL_HINT = (
    "Use the local CPU model, with no API key and no internet: --model local, once it is "
    "installed (pip install 'shesha[local]' and `shesha models fetch`, or `make local-model` "
    "in a checkout). Or a hosted model: --model openai/gpt-4o-mini or any LiteLLM model "
    'string, as model= here, SHESHA_MODEL, or model = "..." in shesha.toml.'
)


class ModelSettings(BaseModel):
    """Which models a query uses and how they are called. Each is also a per-query
    override, like the fields of ``QueryLimits``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(None, description="the root model: any LiteLLM model string")
    sub_model: str | None = Field(None, description="the model for llm_query (default: model)")
    api_base: str | None = Field(None, description="a custom endpoint (Ollama, vLLM, a proxy)")
    api_key: SecretStr | None = Field(None, description="else the provider's own variable")
    llm_timeout_s: Seconds = Field(DEFAULT_LLM_TIMEOUT_S, description="per LLM call")
    num_retries: Count = Field(DEFAULT_RETRIES, description="on rate limits and transient errors")
    temperature: Temperature | None = None
    prompts_dir: str | None = Field(None, description="a directory of prompt overrides")
    verify_citations: bool = Field(
        False, description="ask the sub-model whether each found quote supports the answer"
    )
    strategy: StrategyChoice = Field(
        "auto",
        description="how a question is answered: read (the documents whole), retrieve (the "
        "best passages), count (code counts the phrase the question names), map (each record "
        "labelled, code counts the labels), code (the RLM loop), or auto: the engine chooses",
    )
    cache: bool = Field(
        True,
        description="reuse the project's sub-call answers (only at temperature 0, or with "
        "the local model, whose decoding is greedy)",
    )


class DockerHostEntry(BaseModel):
    """One Docker daemon, with its share of the sandboxes (default: its CPU count)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str
    weight: float | None = Field(None, gt=0)


class Settings(ModelSettings, QueryLimits):
    """Everything shesha can be told. Every field is a key in shesha.toml and a
    ``SHESHA_<NAME>`` environment variable. The model settings and the query limits are
    declared where they are used (``ModelSettings``, ``QueryLimits``); the rest here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("docker_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        """SHESHA_DOCKER_HOSTS: addresses separated by commas."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    # model calls, over every query of this process (a Ray evaluation's: of the cluster)
    calls_per_minute: PerMinute | None = Field(
        None,
        description="each model's calls a minute, at most, evenly spaced (a provider's rate limit)",
    )
    # storage
    home: str | None = Field(None, description="the data directory (default: per-user)")
    # documents
    ocr: bool = Field(True, description="read scanned pages and images with Tesseract")
    ocr_lang: str = Field(
        "eng",
        pattern=r"^[A-Za-z_]+(\+[A-Za-z_]+)*$",
        description="Tesseract's languages, joined by + (eng, deu+eng)",
    )
    max_inflated_mb: AtLeastOne = Field(
        512, description="what one file may inflate to (zip parts, PDF streams), in MB"
    )
    max_file_chars: AtLeastOne = Field(100_000_000, description="text one file may give")
    max_add_chars: AtLeastOne = Field(1_000_000_000, description="text one add may give")
    parse_memory_mb: MemoryMB = Field(3072, description="memory of each parsing process")
    parse_timeout_s: Seconds = Field(600.0, description="time to parse one file, OCR included")
    # a running server (shesha serve)
    server: str | None = Field(
        None, description="the server the CLI uses (default: the local one, if it runs); off"
    )
    token: SecretStr | None = Field(None, description="the server's token")
    allow_endpoint_overrides: bool = Field(
        False,
        description="let a request to the server choose api_base / api_key (a named endpoint "
        "never gets the server's own key)",
    )
    # OpenTelemetry export (the `otel` extra)
    otel_endpoint: str | None = Field(
        None,
        description="an OTLP/HTTP receiver each query's spans go to (default: "
        "OTEL_EXPORTER_OTLP_ENDPOINT, if set)",
    )
    otel_content: bool = Field(
        False, description="export document text, prompts, code and outputs with the spans"
    )
    # local models (--model local)
    models_dir: str | None = Field(None, description="GGUF models (default: <home>/models)")
    local_ctx: ContextTokens = Field(8192, description="context window of the local server")
    local_threads: AtLeastOne | None = Field(None, description="CPU threads for the local server")
    local_runtime: Literal["auto", "llama-server", "llama-cpp-python"] = Field(
        "auto",
        description="the local server: llama-server (prebuilt, parallel slots), "
        "llama-cpp-python (built from source), or auto (the first installed)",
    )
    local_slots: SlotCount | None = Field(
        None, description="requests the local server runs at once (default: 2 per core, 2-8)"
    )
    # sandbox
    sandbox: SandboxKind = Field(
        "auto", description="auto (Docker when it answers, else bubblewrap), docker or bwrap"
    )
    pool_size: PoolSize = Field(3, description="warm sandboxes")
    docker_hosts: list[str | DockerHostEntry] = Field(
        default_factory=list,
        description="Docker daemons to spread sandboxes over (unix://, ssh://, tcp://); "
        'an entry may be {url = "...", weight = 2}; empty: the local daemon',
    )
    docker_tls_ca: str | None = Field(None, description="CA certificate for tcp:// hosts")
    docker_tls_cert: str | None = Field(None, description="client certificate for tcp:// hosts")
    docker_tls_key: str | None = Field(None, description="client key for tcp:// hosts")
    docker_tls_verify: bool = Field(True, description="verify tcp:// hosts' certificates")
    image: str | None = Field(None, description="the sandbox image (default: the matching one)")
    memory_mb: MemoryMB = Field(DEFAULT_MEMORY_MB, description="per sandbox")
    cpus: Cores = Field(DEFAULT_CPUS, description="per sandbox")


QUERY_OVERRIDES = frozenset(ModelSettings.model_fields) | frozenset(QueryLimits.model_fields)
"""What a single query may override: the model settings and the query limits."""


def home_dir(settings: Settings) -> Path:
    return Path(settings.home).expanduser() if settings.home else default_home()


def models_dir(settings: Settings) -> Path:
    """Where local GGUF models live: ``models_dir``, else ``<home>/models``."""
    if settings.models_dir:
        return Path(settings.models_dir).expanduser()
    return home_dir(settings) / "models"


def _bounds(metadata: Iterable[Any]) -> list[str]:
    found = []
    for m in metadata:
        if isinstance(m, FieldInfo):  # a shared bound's Field(...) inside Annotated
            found += _bounds(m.metadata)
        found += [f"{k} {getattr(m, k)}" for k in ("gt", "ge", "lt", "le") if hasattr(m, k)]
    return found


def _describe(field: str) -> str:
    """What a setting takes, e.g. "float or None (gt 0)"."""
    info = Settings.model_fields[field]
    if get_origin(info.annotation) is list:
        return f"a list: {info.description}"
    bounds = _bounds(info.metadata)
    names = []
    for arg in get_args(info.annotation) or (info.annotation,):
        kind = arg
        if get_origin(arg) is Annotated:  # an optional shared bound: X | None
            kind, *metadata = get_args(arg)
            bounds += _bounds(metadata)
        names.append("None" if kind is type(None) else getattr(kind, "__name__", str(kind)))
    return " or ".join(names) + (f" ({', '.join(bounds)})" if bounds else "")


def _env_layer(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in env:
        if key.startswith(ENV_PREFIX):
            name = key[len(ENV_PREFIX) :].lower()
            if name in Settings.model_fields:
                values[name] = environment_setting(name, env)
    return values


def _inner_path(loc: tuple[int | str, ...]) -> str:
    """Where inside a value an error is, as ``[0].weight: `` (type names of union
    branches, which pydantic puts in the path, left out)."""
    parts = [f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc if not _is_type_name(p)]
    return f"{''.join(parts).lstrip('.')}: " if parts else ""


def _is_type_name(part: int | str) -> bool:
    return isinstance(part, str) and (part[:1].isupper() or part in ("str", "int", "float"))


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    config_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Merge the layers, remembering where each value came from, and validate."""
    path = config_file_path(config_file)
    layers: list[tuple[str, dict[str, Any]]] = []
    if path is not None:
        layers.append((f"the config file {path}", read_config_file(path)))
    layers.append(("the environment", _env_layer(os.environ if env is None else env)))
    layers.append(("the arguments", {k: v for k, v in (overrides or {}).items() if v is not None}))
    merged: dict[str, Any] = {}
    source: dict[str, str] = {}
    for name, values in layers:
        for key, value in values.items():
            if key not in Settings.model_fields:
                known = ", ".join(sorted(Settings.model_fields))
                raise ConfigError(
                    f"Unknown setting {key!r} in {name}.", hint=f"Known settings: {known}."
                )
            merged[key] = value
            source[key] = name
    try:
        return Settings.model_validate(merged)
    except ValidationError as e:
        errors = e.errors()
        key = str(errors[0]["loc"][0]) if errors[0]["loc"] else "?"
        # Of the errors for that key, the most specific: for a union such as
        # ``str | DockerHostEntry`` given a table, the entry's field, not "not a string".
        first = max((x for x in errors if x["loc"][:1] == (key,)), key=lambda x: len(x["loc"]))
        inner = _inner_path(first["loc"][1:])
        where = source.get(key, "the defaults")
        env_name = ENV_PREFIX + key.upper()
        raise ConfigError(
            f"Invalid setting {key} = {merged.get(key)!r} (from {where}): {inner}{first['msg']}.",
            hint=f"{key} takes {_describe(key)}; set it in shesha.toml, {env_name}, or an argument."
            if key in Settings.model_fields
            else None,
        ) from e


INIT_TEMPLATE = """\
# shesha.toml: shesha's settings. Precedence: defaults < this file < SHESHA_* environment
# variables < command-line / constructor arguments. Delete what you do not need.

# The root model writes code; any LiteLLM model string.
# model = "openai/gpt-4o-mini"          # needs OPENAI_API_KEY
# model = "anthropic/claude-3-5-haiku-latest"   # needs ANTHROPIC_API_KEY
# model = "ollama/qwen2.5-coder:7b"     # a local Ollama
# model = "local"                       # shesha's own CPU model (make local-model)
# The model for llm_query() sub-calls (default: the same as model). A cheaper one is fine.
# sub_model = "openai/gpt-4o-mini"
# An OpenAI-compatible endpoint (vLLM, llama.cpp, a proxy), with model = "openai/<name>".
# api_base = "http://127.0.0.1:8000/v1"
# api_key = "..."                       # better: the provider's own environment variable

# Where projects and traces live (default: the per-user data directory).
# home = "~/.local/share/shesha"

# Scanned pages and images are read by Tesseract (make ocr); its languages, joined by +.
# ocr = true
# ocr_lang = "eng"

# The sandbox: auto (Docker when it answers, else bubblewrap), docker or bwrap;
# warm sandboxes, and limits for each.
# sandbox = "auto"
# pool_size = 3
# Several Docker daemons (TLS for tcp:// with docker_tls_ca, _cert, _key):
# docker_hosts = ["unix:///var/run/docker.sock", "ssh://build@host2",
#                 {url = "tcp://host3:2376", weight = 2}]
# memory_mb = 1024
# cpus = 1.0
# exec_timeout_s = 60

# Per-query limits.
# max_iterations = 20
# max_subcalls = 1000
# max_tokens = 2000000
# max_cost_usd = 1.00
# max_wall_s = 600
"""
