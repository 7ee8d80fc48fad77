"""Where shesha's settings come from, with the standard library and platformdirs only:
the ``SHESHA_*`` environment, the config file (``./shesha.toml``, else the user's config
dir) and the data directory. ``shesha.config`` validates what these read; the light
remote ``shesha ask`` (``shesha.remote_ask``) reads them without pydantic."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import platformdirs

from shesha.errors import ConfigError

CONFIG_FILE = "shesha.toml"
ENV_PREFIX = "SHESHA_"


def environment_setting(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """The value of ``SHESHA_<NAME>``; unset or empty is None. The one place shesha
    reads its settings from the environment."""
    value = (os.environ if env is None else env).get(ENV_PREFIX + name.upper())
    return value or None


def default_home() -> Path:
    """The data directory when no ``home`` is set: SHESHA_HOME, else the per-user one."""
    home = environment_setting("home")
    return Path(home).expanduser() if home else Path(platformdirs.user_data_dir("shesha"))


def config_file_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file in use: explicit, else ./shesha.toml, else the user's config dir."""
    if explicit is not None:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise ConfigError(f"The config file {p} does not exist.")
        return p
    for candidate in (
        Path.cwd() / CONFIG_FILE,
        Path(platformdirs.user_config_dir("shesha")) / CONFIG_FILE,
    ):
        if candidate.is_file():
            return candidate
    return None


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings a config file sets, unvalidated (a ``[shesha]`` table is accepted)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"Cannot read the config file {path}: {e}") from e
    if isinstance(data.get("shesha"), dict):
        data = data["shesha"]
    return data
