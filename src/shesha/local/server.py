"""A llama.cpp server (llama-cpp-python) on a free loopback port, for one local model.

Started on first use, reused while it runs, restarted if it crashed, stopped on close.
Its log goes to ``<data dir>/logs/``. LiteLLM reaches it as ``openai/<alias>``.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable
from pathlib import Path

from shesha.errors import ConfigError, LLMConnectionError
from shesha.local.fetch import is_verified
from shesha.local.registry import BUILTIN, RegisteredModel
from shesha.storage.atomic import private_dir, private_file

INSTALL_HINT = (
    "Install the local extra: pip install 'shesha[local]' (it builds llama.cpp: 5-7 minutes), "
    "or run `make local-model` in a shesha checkout."
)
LOG_TAIL = 3000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_installed(python: str = sys.executable) -> bool:
    """Whether ``python`` can run the llama.cpp server (the ``local`` extra)."""
    if python == sys.executable:
        return importlib.util.find_spec("llama_cpp") is not None
    probe = subprocess.run(
        [python, "-c", "import llama_cpp.server"], capture_output=True, check=False, timeout=60
    )
    return probe.returncode == 0


def default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


_live: weakref.WeakSet[LocalModelServer] = weakref.WeakSet()


# Runs llama_cpp.server, and ends it when the process that started it is gone, even by
# SIGKILL, where no atexit hook runs: a server left behind would hold the CPU.
_RUN_WHILE_OWNER_LIVES = """\
import os, runpy, sys, threading, time
owner = int(sys.argv.pop(1))
def watch():
    while os.getppid() == owner:
        time.sleep(0.5)
    os._exit(0)
threading.Thread(target=watch, name="owner-watch", daemon=True).start()
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


def _stop_all() -> None:
    for server in list(_live):
        server.stop()


atexit.register(_stop_all)


class LocalModelServer:
    """One server process for one model file."""

    def __init__(
        self,
        model: RegisteredModel,
        *,
        log_dir: Path,
        n_ctx: int = 8192,
        threads: int | None = None,
        ready_timeout: float = 300.0,
        port_picker: Callable[[], int] = free_port,
        python: str = sys.executable,
    ) -> None:
        self.model = model
        self.alias = model.name
        self.log_path = log_dir / f"llama-{model.name}.log"
        self.n_ctx = n_ctx
        self.threads = threads or default_threads()
        self.ready_timeout = ready_timeout
        self._pick_port = port_picker
        self._python = python
        self._proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.starts = 0
        self._lock = threading.Lock()
        _live.add(self)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _check_model(self) -> Path:
        path = Path(self.model.path)
        if not path.is_file():
            fetch = (
                f"`python -m shesha.local.fetch {self.model.name}` (or `make local-model`)"
                if self.model.name in BUILTIN
                else "`shesha models add PATH` with the right file"
            )
            raise ConfigError(
                f"The local model {self.model.name!r} is missing: {path} does not exist.",
                hint=f"Fetch it with {fetch}.",
            )
        if self.model.sha256 and not is_verified(path, self.model.sha256):
            raise ConfigError(
                f"The local model file {path} does not match its sha256 "
                f"({self.model.sha256[:12]}...): it is damaged or not the expected file.",
                hint="Delete it and fetch it again.",
            )
        return path

    def _answers(self) -> bool:
        if self.port is None:
            return False
        try:
            with urllib.request.urlopen(f"{self.api_base}/models", timeout=2) as r:  # noqa: S310
                ids = [m.get("id") for m in json.load(r).get("data", [])]
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return self.alias in ids

    def ensure(self) -> str:
        """Start the server, or reuse the running one; return its api_base."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None and self._answers():
                return self.api_base
            if self._proc is not None:  # it crashed, or hangs: replace it
                self._proc.kill()
                self._proc.wait()
                self._proc = None
            path = self._check_model()
            if not server_installed(self._python):
                raise ConfigError("The local model server (llama-cpp-python) is not installed.",
                                  hint=INSTALL_HINT)  # fmt: skip
            last_error = ""
            for _ in range(3):  # a port taken between picking it and binding it: try another
                self.port = self._pick_port()
                error = self._start(path)
                if error is None:
                    self.starts += 1
                    return self.api_base
                last_error = error
            raise LLMConnectionError(
                f"The local model server did not start: {last_error}",
                hint=f"See its log: {self.log_path}",
            )

    def _start(self, path: Path) -> str | None:
        private_dir(self.log_path.parent)
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}  # else generation slows to a crawl
        cmd = [
            self._python, "-c", _RUN_WHILE_OWNER_LIVES, str(os.getpid()), "--model", str(path),
            "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.threads), "--model_alias", self.alias,
        ]  # fmt: skip
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with private_file(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                return f"it exited with code {code}: {self._log_since(offset)[-LOG_TAIL:]}"
            if self._answers():
                return None
            time.sleep(0.1)
        self.stop()
        return f"it did not answer within {self.ready_timeout:g} s"

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def stop(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None
