"""Settings: defaults < shesha.toml < SHESHA_* environment < arguments."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from shesha.config import (
    QUERY_OVERRIDES,
    Settings,
    load_settings,
    models_dir,
)
from shesha.errors import ConfigError
from shesha.locations import environment_setting
from shesha.rlm import QueryLimits
from shesha.sandbox import SandboxLimits


@pytest.fixture
def toml(tmp_path: Path) -> Path:
    path = tmp_path / "shesha.toml"
    path.write_text(
        'model = "from-file"\nsub_model = "file-sub"\npool_size = 2\nmax_iterations = 7\n'
    )
    return path


def test_defaults() -> None:
    s = load_settings(env={})
    assert (s.model, s.pool_size, s.max_iterations, s.max_cost_usd) == (None, 3, 20, None)


def test_each_layer_overrides_the_one_below(toml: Path) -> None:
    s = load_settings(
        {"model": "from-args"},
        config_file=toml,
        env={"SHESHA_MODEL": "from-env", "SHESHA_SUB_MODEL": "env-sub", "SHESHA_POOL_SIZE": "5"},
    )
    assert s.model == "from-args"
    assert s.sub_model == "env-sub"
    assert s.pool_size == 5
    assert s.max_iterations == 7


def test_none_arguments_do_not_override(toml: Path) -> None:
    assert load_settings({"model": None}, config_file=toml, env={}).model == "from-file"


def test_the_config_file_is_found_in_the_current_directory(
    toml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(toml.parent)
    assert load_settings(env={}).model == "from-file"


def test_a_shesha_table_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[shesha]\nmodel = "tabled"\n')
    assert load_settings(config_file=path, env={}).model == "tabled"


def test_an_invalid_value_names_the_setting_its_source_and_what_is_allowed(toml: Path) -> None:
    toml.write_text("pool_size = 0\n")
    with pytest.raises(ConfigError) as err:
        load_settings(config_file=toml, env={})
    text = str(err.value)
    assert "pool_size = 0" in text
    assert str(toml) in text
    assert "ge 1" in text


def test_an_invalid_environment_value_names_the_environment() -> None:
    with pytest.raises(ConfigError, match="max_cost_usd = 'lots' \\(from the environment\\)"):
        load_settings(env={"SHESHA_MAX_COST_USD": "lots"})


def test_an_unknown_key_in_the_file_is_refused(toml: Path) -> None:
    toml.write_text('modle = "typo"\n')
    with pytest.raises(ConfigError, match="Unknown setting 'modle'"):
        load_settings(config_file=toml, env={})


def test_a_broken_toml_file_is_a_clear_error(toml: Path) -> None:
    toml.write_text("model = \n")
    with pytest.raises(ConfigError, match="Cannot read the config file"):
        load_settings(config_file=toml, env={})


def test_a_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_file=tmp_path / "nope.toml", env={})


def test_the_api_key_is_secret() -> None:
    s = load_settings({"api_key": "sk-very-secret"}, env={})
    assert "sk-very-secret" not in repr(s)
    assert s.api_key is not None
    assert s.api_key.get_secret_value() == "sk-very-secret"


def test_every_query_limit_is_a_setting_and_a_query_override() -> None:
    assert set(QueryLimits.model_fields) <= set(Settings.model_fields)
    assert set(QueryLimits.model_fields) <= QUERY_OVERRIDES
    assert {"model", "sub_model", "temperature"} <= QUERY_OVERRIDES
    assert not {"home", "pool_size", "memory_mb"} & QUERY_OVERRIDES  # not per query
    s = load_settings(env={"SHESHA_SUBCALL_CONCURRENCY": "4"})
    assert s.subcall_concurrency == 4
    assert (
        QueryLimits(**s.model_dump(include=set(QueryLimits.model_fields))).subcall_concurrency == 4
    )


def test_a_shared_bound_is_the_same_everywhere_and_named_in_the_error() -> None:
    with pytest.raises(ConfigError, match=r"exec_timeout_s takes float or None \(gt 0\)"):
        load_settings(env={"SHESHA_EXEC_TIMEOUT_S": "0"})
    for model in (QueryLimits, SandboxLimits):
        with pytest.raises(ValidationError):
            model(exec_timeout_s=0)


def test_the_data_and_models_directories_come_from_the_settings(tmp_path: Path) -> None:
    env = {"SHESHA_HOME": str(tmp_path / "h")}
    assert models_dir(load_settings(env=env)) == tmp_path / "h" / "models"
    env["SHESHA_MODELS_DIR"] = str(tmp_path / "m")
    assert models_dir(load_settings(env=env)) == tmp_path / "m"
    assert environment_setting("home", {"SHESHA_HOME": ""}) is None


def test_docker_hosts_come_from_the_file_or_a_comma_list_in_the_environment(
    toml: Path,
) -> None:
    toml.write_text(
        'docker_hosts = ["unix:///var/run/docker.sock", {url = "ssh://b@h2", weight = 2}]\n'
    )
    hosts = load_settings(config_file=toml, env={}).docker_hosts
    assert hosts[0] == "unix:///var/run/docker.sock"
    assert (hosts[1].url, hosts[1].weight) == ("ssh://b@h2", 2)  # type: ignore[union-attr]
    env = {"SHESHA_DOCKER_HOSTS": "unix:///a.sock, tcp://h3:2376,"}
    assert load_settings(env=env).docker_hosts == ["unix:///a.sock", "tcp://h3:2376"]


def test_a_bad_docker_host_entry_names_the_entry_and_its_field(toml: Path) -> None:
    toml.write_text('docker_hosts = [{url = "tcp://h:2376", weight = -1}]\n')
    with pytest.raises(ConfigError) as err:
        load_settings(config_file=toml, env={})
    text = str(err.value)
    assert "[0].weight: Input should be greater than 0" in text
    assert "docker_hosts takes a list" in text
