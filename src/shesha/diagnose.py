"""The checks behind `shesha doctor`: each thing shesha needs, and how to fix what fails."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from docker.errors import DockerException, ImageNotFound
from requests import RequestException

import docker
from shesha import llm
from shesha.api import Shesha, docker_hosts_of
from shesha.client import answers
from shesha.config import NO_MODEL_HINT, Settings, home_dir, load_settings
from shesha.endpoints import is_local
from shesha.errors import SandboxUnavailableError, SheshaError
from shesha.local.fetch import is_verified
from shesha.local.server import (
    INSTALL_HINT,
    cpu_features,
    default_slots,
    default_threads,
    pick_runtime,
    runtime_version,
)
from shesha.locations import config_file_path
from shesha.remote_ask import OFF
from shesha.sandbox import connect, default_image, runner_hash
from shesha.sandbox.bwrap import isolation as bwrap_isolation
from shesha.sandbox.choice import choose
from shesha.sandbox.container import DOCKER_ISOLATION
from shesha.sandbox.docker_client import DOCKER_HINT, daemon_address
from shesha.sandbox.hosts import connect_host
from shesha.sandbox.image import REBUILD_HINT, RUNNER_LABEL
from shesha.server.state import read_state
from shesha.storage import ProjectStore

MIN_FREE_GB = 1.0
DOCKER_HOST_HINT = (
    "Start that daemon or fix its address in docker_hosts (ssh:// needs a working `ssh`; "
    "tcp:// needs docker_tls_*); shesha tries a failed host again after a backoff."
)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _docker() -> tuple[Check, docker.DockerClient | None]:
    try:
        client = connect(timeout=10)
    except SheshaError as e:
        return Check("docker daemon", False, str(e).split("\n")[0], DOCKER_HINT), None
    version = client.version().get("Version", "?")
    return Check("docker daemon", True, f"Docker {version} at {daemon_address()}"), client


def _sandbox(settings: Settings) -> tuple[Check, str | None]:
    """Which sandbox queries will use, and what it enforces here."""
    try:
        kind = choose(settings.sandbox)
    except SheshaError as e:
        message, _, hint = str(e).partition("\nHint: ")
        return Check("sandbox", False, message, hint), None
    if kind == "bwrap":
        return Check("sandbox", True, f"{bwrap_isolation()} (sandbox = {settings.sandbox})"), kind
    return Check("sandbox", True, f"{DOCKER_ISOLATION} (sandbox = {settings.sandbox})"), kind


def _image(client: docker.DockerClient | None, settings: Settings) -> Check:
    tag = settings.image or default_image()
    if client is None:
        return Check("sandbox image", False, f"{tag}: not checked (no Docker daemon)")
    try:
        image = client.images.get(tag)
    except ImageNotFound:
        return Check("sandbox image", False, f"{tag} is not built", REBUILD_HINT)
    except DockerException as e:
        return Check("sandbox image", False, f"{tag}: {e}")
    labelled = (image.labels or {}).get(RUNNER_LABEL, "")
    if labelled and labelled != runner_hash():
        return Check(
            "sandbox image",
            False,
            f"{tag} carries runner {labelled[:12]}, this shesha needs {runner_hash()[:12]}",
            REBUILD_HINT,
        )
    return Check("sandbox image", True, f"{tag} (runner {runner_hash()[:12]})")


def _docker_hosts(settings: Settings) -> list[Check]:
    """One check per daemon in docker_hosts: does it answer, and has it the image (one
    that lacks it gets a copy at its first container, so that is not a failure)."""
    specs, tls = docker_hosts_of(settings)
    tag = settings.image or default_image()
    checks = []
    for spec in specs:
        name = f"docker host {spec.url}"
        try:
            client = connect_host(spec, tls)
        except SandboxUnavailableError as e:
            checks.append(Check(name, False, str(e).split("\n")[0], DOCKER_HOST_HINT))
            continue
        try:
            info = client.info()
            said = f"Docker {info.get('ServerVersion', '?')}, {info.get('NCPU', '?')} CPUs"
            try:
                labelled = (client.images.get(tag).labels or {}).get(RUNNER_LABEL, "")
            except ImageNotFound:
                checks.append(Check(name, True, f"{said}; {tag} is copied here at first use"))
                continue
            if labelled != runner_hash():
                detail = f"{said}; {tag} carries another runner ({labelled[:12] or '?'})"
                checks.append(Check(name, False, detail, REBUILD_HINT))
            else:
                checks.append(Check(name, True, f"{said}; {tag} (runner {runner_hash()[:12]})"))
        except (DockerException, RequestException) as e:
            checks.append(Check(name, False, str(e).split("\n")[0], DOCKER_HOST_HINT))
        finally:
            client.close()
    return checks


def _no_model(settings: Settings) -> Check:
    """No model configured: `shesha ask` falls back to the local one when it is there."""
    fallback = Shesha(**{**settings.model_dump(), "api_key": None}).fallback_model()
    if fallback is None:
        return Check("model", False, "no model configured", NO_MODEL_HINT)
    local = _local_model(settings.model_copy(update={"model": "local"}))
    said = f"no model configured, so shesha ask uses the local model {fallback.name}"
    if local.ok:
        return Check("model", True, f"{said} (verified)")
    return Check("model", False, f"{said}, but: {local.detail}", local.fix)


def _model(settings: Settings) -> Check:
    if not settings.model:
        return _no_model(settings)
    if is_local(settings.model):
        return _local_model(settings)
    if settings.api_key is not None:
        return Check("model", True, f"{settings.model} (api_key set in shesha's settings)")
    if settings.api_base:
        return Check("model", True, f"{settings.model} at {settings.api_base}")
    missing = llm.missing_credentials(settings.model)
    if missing:
        return Check(
            "model",
            False,
            f"{settings.model}: missing {', '.join(missing)}",
            f"export {missing[0]}=... (or set api_key / api_base in shesha.toml)",
        )
    return Check("model", True, f"{settings.model} (credentials found in the environment)")


def _local_model(settings: Settings) -> Check:
    assert settings.model is not None
    sh = Shesha(**{**settings.model_dump(), "api_key": None})
    try:
        entry = sh.models().resolve(settings.model)
    except SheshaError as e:
        return Check("model", False, str(e).split("\n")[0], "`shesha models list`")
    path = Path(entry.path)
    if not path.is_file():
        return Check("model", False, f"{settings.model}: {path} is missing", "shesha models fetch")
    if entry.sha256 and not is_verified(path, entry.sha256):
        return Check(
            "model", False, f"{path} does not match its sha256", "delete it and fetch again"
        )
    runtime = pick_runtime(settings.local_runtime)
    if not runtime.installed():
        return Check(
            "model", False, f"the local model server ({runtime.name}) is not installed",
            INSTALL_HINT,
        )  # fmt: skip
    slots = (settings.local_slots or default_slots()) if runtime.parallel else 1
    threads = settings.local_threads or default_threads()
    features = ", ".join(cpu_features()) or "none listed"
    version = runtime_version(runtime) or "version unknown"
    return Check(
        "model",
        True,
        f"{settings.model}: {path.name} (local, verified); {runtime.name} {version}, "
        f"{slots} slot(s) of {settings.local_ctx:,} tokens, {threads} threads; "
        f"CPU: {features}",
    )


def _cost_map() -> Check:
    value = os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    ok = value.lower() == "true"
    return Check(
        "litellm cost map",
        ok,
        "local (nothing is fetched at import)" if ok else f"LITELLM_LOCAL_MODEL_COST_MAP={value}",
        "" if ok else "unset it, or set LITELLM_LOCAL_MODEL_COST_MAP=True",
    )


def _data_dir(settings: Settings) -> tuple[Check, Check]:
    home = ProjectStore(home_dir(settings)).home
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=home):
            pass
        writable = Check("data directory", True, f"{home} (writable)")
    except OSError as e:
        writable = Check(
            "data directory",
            False,
            f"{home}: {e.strerror or e}",
            "Set SHESHA_HOME (or home in shesha.toml) to a writable directory.",
        )
    probe = home if home.exists() else Path(home.anchor or "/")
    free_gb = shutil.disk_usage(probe).free / 2**30
    disk = Check(
        "free disk",
        free_gb >= MIN_FREE_GB,
        f"{free_gb:.1f} GB free at {probe}",
        "" if free_gb >= MIN_FREE_GB else "Free some space, or move SHESHA_HOME.",
    )
    return writable, disk


def _server(settings: Settings) -> Check:
    """A running `shesha serve` is optional; say whether one answers, and where."""
    home = ProjectStore(home_dir(settings)).home
    token = settings.token.get_secret_value() if settings.token else None
    if settings.server and settings.server != OFF:
        status = answers(settings.server, token)
        if status is None:
            return Check(
                "server",
                False,
                f"SHESHA_SERVER={settings.server}, but no shesha server answers there",
                "Start it, fix the URL or token, or unset SHESHA_SERVER.",
            )
        return Check("server", True, f"{settings.server} (shesha {status.get('version')})")
    state = read_state(home)
    if state is None or answers(state.url, state.token) is None:
        return Check(
            "server",
            True,
            "none running (optional: `shesha serve --background` keeps one warm)",
        )
    return Check("server", True, f"{state.url} (pid {state.pid}, shesha {state.version})")


def run_checks(config: Path | None) -> list[Check]:
    """Every check, in the order `shesha doctor` prints them."""
    checks: list[Check] = []
    try:
        settings = load_settings(config_file=config)
        source = config_file_path(config)
        checks.append(Check("configuration", True, str(source or "defaults + environment")))
    except SheshaError as e:
        message, _, hint = str(e).partition("\nHint: ")
        checks.append(Check("configuration", False, message, hint))
        settings = Settings()
    sandbox_check, kind = _sandbox(settings)
    checks.append(sandbox_check)
    client = None
    if kind != "bwrap" and settings.docker_hosts:
        checks += _docker_hosts(settings)
    elif kind != "bwrap":
        docker_check, client = _docker()
        checks += [docker_check, _image(client, settings)]
    checks += [_model(settings), _cost_map()]
    checks += [*_data_dir(settings), _server(settings)]
    if client is not None:
        client.close()
    return checks
