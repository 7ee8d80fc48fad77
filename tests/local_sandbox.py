"""A SandboxProvider for engine unit tests: the real runner as a local subprocess.

NOT a sandbox (no isolation): tests only, with code the tests script themselves.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from shesha.sandbox.container import _exec_result, _subcall_items
from shesha.sandbox.corpus import Corpus
from shesha.sandbox.execution import ExecResult, SubcallHandler
from shesha.sandbox.image import RUNNER_PATH
from shesha.sandbox.protocol import ChannelTimeout, FrameChannel


class LocalSession:
    def __init__(self, corpus: Corpus) -> None:
        host, child = socket.socketpair()
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(RUNNER_PATH)], stdin=child.fileno(), stdout=child.fileno()
        )
        child.close()
        self.chan = FrameChannel(host, docker_mux=False)
        docs = corpus.documents()
        blobs = [t.encode() for _, t in docs]
        self._id = 0
        self._call(
            {
                "kind": "load",
                "version": corpus.version,
                "names": [n for n, _ in docs],
                "lengths": [len(b) for b in blobs],
            },
            b"".join(blobs),
        )
        self.codes: list[str] = []
        self.closed = False

    def _call(self, header: dict[str, Any], payload: bytes = b"") -> dict[str, Any]:
        self._id += 1
        self.chan.send({**header, "id": self._id}, payload)
        return self.chan.recv(time.monotonic() + 30).header

    def execute(
        self,
        code: str,
        *,
        on_subcall: SubcallHandler | None = None,
        timeout: float | None = None,
        max_output_chars: int | None = None,
    ) -> ExecResult:
        self.codes.append(code)
        self._id += 1
        limit = max_output_chars or 20_000
        self.chan.send({"kind": "exec", "id": self._id, "code": code, "max_output": limit})
        deadline = time.monotonic() + (timeout or 30)
        subcalls = 0
        while True:
            try:
                frame = self.chan.recv(deadline)
            except ChannelTimeout:
                self.proc.kill()
                return ExecResult(status="timeout", error="TimeoutError: killed")
            if frame.header["kind"] != "subcall":
                return _exec_result(frame.header, subcalls, 20_000)
            items = _subcall_items(frame.header)
            subcalls += len(items)
            assert on_subcall is not None
            results = on_subcall(items)
            self.chan.send({"kind": "subcall_result", "id": frame.header["id"], "results": results})

    def close(self) -> None:
        self.closed = True
        self.chan.close()
        self.proc.wait(timeout=10)


class LocalSandboxes:
    def __init__(self) -> None:
        self.sessions: list[LocalSession] = []

    def acquire(self, corpus: Corpus | None = None, timeout: float | None = None) -> LocalSession:
        assert corpus is not None
        session = LocalSession(corpus)
        self.sessions.append(session)
        return session

    def all_code(self) -> Sequence[str]:
        return [c for s in self.sessions for c in s.codes]
