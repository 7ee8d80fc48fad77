"""A llama.cpp server on a free loopback port, for one local model.

Two runtimes can serve it (``Runtime``):

- **llama-server**: llama.cpp's own C++ server, from the prebuilt ``xllamacpp`` wheel
  (nothing to compile). It has parallel slots with continuous batching, per-slot prompt
  reuse and a host-memory prompt cache, and grammars. The default when it is installed.
- **llama-cpp-python**: its Python server, built from source by
  ``scripts/install-local-server.sh``; one request at a time. The fallback for a CPU the
  wheel cannot serve, and what a machine has that installed it before.

Either way the server is started on first use, reused while it runs, restarted if it
crashed, and stopped on close; it ends when the process that started it ends, even by
SIGKILL. Its log goes to ``<data dir>/logs/``. LiteLLM reaches it as ``openai/<alias>``.
"""

from __future__ import annotations

import atexit
import importlib.metadata
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
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shesha.errors import ConfigError, LLMConnectionError
from shesha.local.fetch import is_verified
from shesha.local.registry import BUILTIN, RegisteredModel
from shesha.storage.atomic import private_dir, private_file

INSTALL_HINT = (
    "Install the local extra: pip install 'shesha[local]' (a prebuilt llama.cpp server, "
    "nothing to compile), or run `make local-model` in a shesha checkout."
)
LOG_TAIL = 3000
PROMPT_CACHE_MIB = 1024
"""Host memory for llama-server's prompt cache: prefixes of finished requests, restored
when a later request starts with them (about 36,000 tokens of the 1.5B model)."""

RuntimeName = Literal["llama-server", "llama-cpp-python"]
RuntimeChoice = Literal["auto", "llama-server", "llama-cpp-python"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _importable(module: str, python: str) -> bool:
    if python == sys.executable:
        return importlib.util.find_spec(module.partition(".")[0]) is not None
    probe = subprocess.run(
        [python, "-c", f"import {module}"], capture_output=True, check=False, timeout=60
    )
    return probe.returncode == 0


def default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


SLOT_MEMORY_BYTES = 1 << 30
"""What one slot is allowed of the machine's memory when choosing how many: a window of
KV cache is about 230 MB for the 1.5B model at 8,192 tokens, more for larger models."""


def default_slots(cores: int | None = None, memory_bytes: int | None = None) -> int:
    """Parallel slots for llama-server, so that the root model and sub-calls run at once:
    two per core, from 2 to 8, and no more than a gigabyte of memory each allows."""
    cores = cores or os.cpu_count() or 1
    if memory_bytes is None:
        memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    by_memory = max(1, memory_bytes // SLOT_MEMORY_BYTES)
    return int(max(1, min(2 * cores, 8, by_memory)))


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

# llama.cpp's server from the xllamacpp wheel, in a child process of its own (a crash in
# native code must not take the host with it), ended the same way.
_RUN_LLAMA_SERVER = """\
import json, os, sys, time
owner, cfg = int(sys.argv[1]), json.loads(sys.argv[2])
import xllamacpp as x
p = x.CommonParams()
p.model.path = cfg["model"]
p.model_alias = {cfg["alias"]}
p.hostnames = ["127.0.0.1"]
p.port = cfg["port"]
p.n_parallel = cfg["slots"]
p.n_ctx = cfg["n_ctx"] * cfg["slots"]
p.cpuparams.n_threads = cfg["threads"]
p.cpuparams_batch.n_threads = cfg["threads"]
p.cache_ram_mib = cfg["cache_mib"]
p.endpoint_metrics = True
server = x.Server(p)
print("listening on", server.listening_address, flush=True)
while os.getppid() == owner:
    time.sleep(0.5)
os._exit(0)
"""


@dataclass(frozen=True)
class Runtime:
    """How a server process for one model is started."""

    name: RuntimeName
    module: str
    """What must import for it to run."""
    parallel: bool
    """Whether it serves several requests at once (slots)."""

    def installed(self, python: str = sys.executable) -> bool:
        return _importable(self.module, python)

    def command(
        self, python: str, path: Path, *, port: int, alias: str, n_ctx: int, threads: int,
        slots: int,
    ) -> list[str]:  # fmt: skip
        owner = str(os.getpid())
        if self.name == "llama-server":
            cfg = {"model": str(path), "alias": alias, "port": port, "n_ctx": n_ctx,
                   "slots": slots, "threads": threads, "cache_mib": PROMPT_CACHE_MIB}  # fmt: skip
            return [python, "-c", _RUN_LLAMA_SERVER, owner, json.dumps(cfg)]
        return [
            python, "-c", _RUN_WHILE_OWNER_LIVES, owner, "--model", str(path),
            "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
            "--n_threads", str(threads), "--model_alias", alias,
        ]  # fmt: skip


LLAMA_SERVER = Runtime("llama-server", "xllamacpp", parallel=True)
LLAMA_CPP_PYTHON = Runtime("llama-cpp-python", "llama_cpp.server", parallel=False)
RUNTIMES: dict[RuntimeName, Runtime] = {r.name: r for r in (LLAMA_SERVER, LLAMA_CPP_PYTHON)}


SIMD = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8")
"""The CPU features that decide llama.cpp's speed on x86, as /proc/cpuinfo names them."""


def cpu_features() -> list[str]:
    """Which of ``SIMD`` this CPU has (empty where /proc/cpuinfo says nothing)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next(
                (line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []
            )
    except OSError:
        return []
    return [name for name in SIMD if name in flags]


def runtime_version(runtime: Runtime) -> str | None:
    """The installed version of the runtime's package, or None."""
    package = {"llama-server": "xllamacpp", "llama-cpp-python": "llama_cpp_python"}[runtime.name]
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def pick_runtime(choice: RuntimeChoice = "auto", python: str = sys.executable) -> Runtime:
    """The runtime asked for; with ``auto``, llama-server when it is installed, else
    llama-cpp-python (a machine that built it before keeps working)."""
    if choice != "auto":
        return RUNTIMES[choice]
    if LLAMA_SERVER.installed(python) or not LLAMA_CPP_PYTHON.installed(python):
        return LLAMA_SERVER
    return LLAMA_CPP_PYTHON


def server_installed(python: str = sys.executable, choice: RuntimeChoice = "auto") -> bool:
    """Whether ``python`` can run a local model server (the ``local`` extra)."""
    return pick_runtime(choice, python).installed(python)


_live: weakref.WeakSet[LocalModelServer] = weakref.WeakSet()


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
        runtime: Runtime | None = None,
        slots: int | None = None,
    ) -> None:
        self.model = model
        self.alias = model.name
        self.log_path = log_dir / f"llama-{model.name}.log"
        self.n_ctx = n_ctx
        """The window of each request (each slot's)."""
        self.threads = threads or default_threads()
        self.runtime = runtime or pick_runtime("auto", python)
        self.slots = (slots or default_slots()) if self.runtime.parallel else 1
        """How many requests it serves at once."""
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
            if not self.runtime.installed(self._python):
                raise ConfigError(
                    f"The local model server ({self.runtime.name}, from the Python package "
                    f"{self.runtime.module.partition('.')[0]}) is not installed.",
                    hint=INSTALL_HINT,
                )
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
        assert self.port is not None
        cmd = self.runtime.command(
            self._python, path, port=self.port, alias=self.alias, n_ctx=self.n_ctx,
            threads=self.threads, slots=self.slots,
        )  # fmt: skip
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
