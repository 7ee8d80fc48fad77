"""The local model server (llama-server, from the prebuilt wheel): its lifecycle, slots
and output constraints, with the small SmolLM2-135M model."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shesha.llm import Choices, Grammar, JsonSchema, LLMClient, LLMSettings, OpenAICompatibleClient
from shesha.local.registry import ModelRegistry
from shesha.local.server import LLAMA_SERVER, LocalModelServer, free_port

pytestmark = pytest.mark.real_llm


@pytest.fixture
def server(local_models: ModelRegistry, tmp_path: Path) -> Iterator[LocalModelServer]:
    s = LocalModelServer(
        local_models.resolve("local/smollm2-135m"), log_dir=tmp_path, n_ctx=2048, threads=2,
        slots=3,
    )  # fmt: skip
    yield s
    s.stop()


def ask(api_base: str) -> str:
    llm = LLMClient(LLMSettings(api_base=api_base, temperature=0, max_output_tokens=8))
    reply = llm.complete_sync([{"role": "user", "content": "Say hi."}], model="openai/smollm2-135m")
    return str(reply.text)


def test_start_answer_and_reuse(server: LocalModelServer) -> None:
    base = server.ensure()
    assert base.startswith("http://127.0.0.1:")
    assert ask(base)
    pid = server.pid
    assert server.ensure() == base
    assert server.pid == pid
    assert server.starts == 1
    assert server.log_path.read_text()  # its log went to the data directory


def test_the_default_runtime_is_llama_server_with_its_slots(server: LocalModelServer) -> None:
    assert server.runtime is LLAMA_SERVER
    base = server.ensure()
    with urllib.request.urlopen(base.removesuffix("/v1") + "/slots", timeout=10) as r:
        slots = json.load(r)
    assert len(slots) == 3
    assert {s["n_ctx"] for s in slots} == {2048}  # each slot has the whole window
    with ThreadPoolExecutor(3) as pool:  # requests at once are all answered
        replies = list(pool.map(lambda _: ask(base), range(3)))
    assert all(replies)


@pytest.mark.parametrize("client", [LLMClient, OpenAICompatibleClient])
def test_a_choice_a_grammar_and_a_schema_hold_whatever_the_model_would_say(
    server: LocalModelServer, client: type[LLMClient] | type[OpenAICompatibleClient]
) -> None:
    llm = client(
        LLMSettings(api_base=server.ensure(), temperature=0, max_output_tokens=60,
                    constraints="llama.cpp")
    )  # fmt: skip
    question = [{"role": "user", "content": "Write a poem about the sea."}]
    picked = llm.complete_sync(
        question, model="openai/smollm2-135m", constraint=Choices(("alpha", "beta gamma"))
    )
    assert picked.text in ("alpha", "beta gamma")
    answered = llm.complete_sync(
        question, model="openai/smollm2-135m", constraint=Grammar('root ::= "yes" | "no"')
    )
    assert answered.text in ("yes", "no")
    schema = {
        "type": "object",
        "properties": {"count": {"type": "integer"}},
        "required": ["count"],
        "additionalProperties": False,
    }
    shaped = llm.complete_sync(question, model="openai/smollm2-135m", constraint=JsonSchema(schema))
    value = json.loads(shaped.text)
    assert set(value) == {"count"}
    assert isinstance(value["count"], int)


def test_a_crashed_server_is_started_again(server: LocalModelServer) -> None:
    server.ensure()
    assert server.pid is not None
    os.kill(server.pid, signal.SIGKILL)
    base = server.ensure()
    assert server.starts == 2
    assert ask(base)


def test_a_port_in_use_is_skipped(local_models: ModelRegistry, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        ports = iter([taken, free_port(), free_port()])
        s = LocalModelServer(
            local_models.resolve("local/smollm2-135m"),
            log_dir=tmp_path,
            n_ctx=2048,
            port_picker=lambda: next(ports),
        )
        try:
            s.ensure()
            assert s.port != taken
            assert s.starts == 1
        finally:
            s.stop()


def test_stop_ends_the_process(server: LocalModelServer) -> None:
    server.ensure()
    pid = server.pid
    assert pid is not None
    server.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


OWNER = """
import sys, time
from pathlib import Path
from shesha.local.registry import ModelRegistry
from shesha.local.server import LocalModelServer
s = LocalModelServer(ModelRegistry(Path(sys.argv[1])).resolve("local/smollm2-135m"),
                     log_dir=Path(sys.argv[2]), n_ctx=2048, threads=1)
s.ensure()
print(s.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_the_server_ends_when_its_owner_is_killed(
    local_models: ModelRegistry, tmp_path: Path, sig: signal.Signals
) -> None:
    # A killed `shesha eval run` must not leave a model server holding the CPU.
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(local_models.dir), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None
    server_pid = int(owner.stdout.readline())
    os.kill(server_pid, 0)  # it runs
    owner.send_signal(sig)
    owner.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(server_pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(server_pid, signal.SIGKILL)
    pytest.fail("the model server outlived its owner")


def test_doctor_names_the_runtime_its_slots_and_window(
    local_models: ModelRegistry, tmp_path: Path
) -> None:
    env = {
        **os.environ, "SHESHA_HOME": str(tmp_path), "SHESHA_MODELS_DIR": str(local_models.dir),
        "SHESHA_MODEL": "local", "SHESHA_LOCAL_SLOTS": "3", "SHESHA_LOCAL_CTX": "4096",
    }  # fmt: skip
    shesha = str(Path(sys.executable).with_name("shesha"))
    done = subprocess.run(
        [shesha, "doctor", "--json"], env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    model = {c["name"]: c for c in json.loads(done.stdout)["checks"]}["model"]
    assert model["ok"] is True, model
    assert "llama-server 2026." in model["detail"]
    assert "3 slot(s) of 4,096 tokens" in model["detail"]
