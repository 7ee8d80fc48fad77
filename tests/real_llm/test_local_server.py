"""The llama.cpp server's lifecycle, with the small SmolLM2-135M model."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shesha.llm import LLMClient, LLMSettings
from shesha.local.registry import ModelRegistry
from shesha.local.server import LocalModelServer, free_port

pytestmark = pytest.mark.real_llm


@pytest.fixture
def server(local_models: ModelRegistry, tmp_path: Path) -> Iterator[LocalModelServer]:
    s = LocalModelServer(
        local_models.resolve("local/smollm2-135m"), log_dir=tmp_path, n_ctx=2048, threads=2
    )
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
