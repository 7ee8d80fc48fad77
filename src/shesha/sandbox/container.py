"""One hardened sandbox container, driven over its attach socket."""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import LogConfig, Ulimit

import docker
from shesha.errors import (
    SandboxError,
    SandboxImageError,
    SandboxProtocolError,
    SandboxUnavailableError,
)
from shesha.sandbox.corpus import Corpus
from shesha.sandbox.execution import ExecResult, SubcallHandler, SubcallItem
from shesha.sandbox.image import REBUILD_HINT, runner_hash
from shesha.sandbox.limits import SandboxLimits
from shesha.sandbox.protocol import (
    ChannelClosed,
    ChannelTimeout,
    Frame,
    FrameChannel,
    socket_from_attach,
)

SANDBOX_USER = "65532:65532"
LABEL_SANDBOX = "io.shesha.sandbox"
LABEL_OWNER = "io.shesha.owner"
LABEL_RUNNER = "io.shesha.runner"
MAX_SUBCALL_ITEMS = 10_000
NO_SUBCALLS = "[llm_query is not available in this sandbox session]"


def host_config(client: docker.DockerClient, limits: SandboxLimits) -> dict[str, Any]:
    """The hardening every sandbox container runs with."""
    mem = f"{limits.memory_mb}m"
    return dict(
        client.api.create_host_config(
            network_mode="none",
            read_only=True,
            tmpfs={"/tmp": f"rw,noexec,nosuid,nodev,size={limits.tmpfs_mb}m,mode=1777"},  # noqa: S108
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            pids_limit=limits.pids,
            mem_limit=mem,
            memswap_limit=mem,
            nano_cpus=int(limits.cpus * 1e9),
            ulimits=[
                Ulimit(name="nofile", soft=limits.open_files, hard=limits.open_files),
                Ulimit(
                    name="fsize",
                    soft=limits.file_size_mb * 1024 * 1024,
                    hard=limits.file_size_mb * 1024 * 1024,
                ),
            ],
            init=True,  # an init as PID 1 passes signals on and reaps children
            ipc_mode="none",  # no /dev/shm: nothing writable outside /tmp
            log_config=LogConfig(type=LogConfig.types.NONE),
        )
    )


class DockerSandbox:
    """A running container with the runner in it, ready for frames."""

    def __init__(
        self,
        client: docker.DockerClient,
        container_id: str,
        attached: Any,
        channel: FrameChannel,
        limits: SandboxLimits,
    ) -> None:
        self._client = client
        self.container_id = container_id
        self._attached = attached  # keeps the HTTP response behind the socket alive
        self._channel = channel
        self.limits = limits
        self._ids = itertools.count(1)
        self.loaded_version: str | None = None
        self.alive = True
        self.executions = 0

    # -- lifecycle ----------------------------------------------------------------------

    @classmethod
    def launch(
        cls,
        client: docker.DockerClient,
        image: str,
        limits: SandboxLimits,
        *,
        labels: dict[str, str] | None = None,
        ready_timeout: float = 30.0,
        expected_runner: str | None = None,
    ) -> DockerSandbox:
        """Create, attach, start, and wait until the runner answers a ping."""
        try:
            created = client.api.create_container(
                image=image,
                stdin_open=True,
                tty=False,
                user=SANDBOX_USER,
                working_dir="/tmp",  # noqa: S108 (the container's private tmpfs)
                environment={},
                labels={LABEL_SANDBOX: "1", **(labels or {})},
                host_config=host_config(client, limits),
            )
        except ImageNotFound as e:
            raise SandboxImageError(
                f"The sandbox image {image} is not present on the Docker daemon.",
                hint=REBUILD_HINT,
            ) from e
        except DockerException as e:
            raise SandboxUnavailableError(f"Could not create a sandbox container: {e}") from e
        cid: str = created["Id"]
        try:
            attached = client.api.attach_socket(
                cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
            sock = socket_from_attach(attached)
            client.api.start(cid)
        except DockerException as e:
            _remove_quietly(client, cid)
            raise SandboxUnavailableError(f"Could not start a sandbox container: {e}") from e
        channel = FrameChannel(sock, max_frame=limits.max_frame_mb * 1024 * 1024)
        sandbox = cls(client, cid, attached, channel, limits)
        try:
            pong = sandbox.ping(timeout=ready_timeout)
        except SandboxError:
            sandbox.kill()
            raise
        want = expected_runner or runner_hash()
        if pong.get("runner") != want:
            sandbox.kill()
            got = str(pong.get("runner"))[:12]
            raise SandboxImageError(
                f"The sandbox image {image} carries runner {got}, but this shesha needs "
                f"runner {want[:12]}.",
                hint=REBUILD_HINT,
            )
        return sandbox

    def kill(self) -> None:
        """Kill and remove the container at once. Idempotent."""
        self.alive = False
        self._channel.close()
        _remove_quietly(self._client, self.container_id)

    @property
    def bytes_sent(self) -> int:
        return self._channel.bytes_sent

    # -- requests -----------------------------------------------------------------------

    def _request(
        self, header: dict[str, Any], payload: bytes = b"", timeout: float = 10.0
    ) -> Frame:
        if not self.alive:
            raise SandboxError("this sandbox container has been discarded")
        rid = next(self._ids)
        header["id"] = rid
        deadline = time.monotonic() + timeout
        try:
            self._channel.send(header, payload, timeout=timeout)
            frame = self._channel.recv(deadline)
        except ChannelTimeout as e:
            self.kill()
            raise SandboxError(
                f"The sandbox did not answer {header['kind']!r} within {timeout:g} s; "
                "it has been discarded."
            ) from e
        except ChannelClosed as e:
            self.alive = False
            raise SandboxError(f"The sandbox container exited: {self._describe_exit()}") from e
        except SandboxProtocolError:
            self.kill()
            raise
        self._check_reply(frame, rid)
        return frame

    def _check_reply(self, frame: Frame, rid: int) -> None:
        kind = frame.header["kind"]
        if kind == "error":
            self.kill()
            raise SandboxProtocolError(f"The sandbox runner refused a message: {frame.header}")
        if frame.header.get("id") != rid:
            self.kill()
            raise SandboxProtocolError(
                f"The sandbox answered request {frame.header.get('id')!r}, expected {rid}"
            )

    def ping(self, timeout: float = 5.0) -> dict[str, Any]:
        frame = self._request({"kind": "ping"}, timeout=timeout)
        if frame.header["kind"] != "pong":
            self.kill()
            raise SandboxProtocolError(f"expected pong, got {frame.header['kind']!r}")
        return frame.header

    def reset(self, timeout: float = 5.0) -> None:
        """A fresh namespace; the loaded documents stay."""
        frame = self._request({"kind": "reset"}, timeout=timeout)
        if frame.header["kind"] != "reset_ok":
            self.kill()
            raise SandboxProtocolError(f"expected reset_ok, got {frame.header['kind']!r}")

    def load(self, corpus: Corpus, timeout: float = 300.0) -> int:
        """Send the corpus once; return the bytes sent. A fresh namespace follows."""
        docs = corpus.documents()
        blobs = [text.encode("utf-8", "surrogatepass") for _, text in docs]
        payload = b"".join(blobs)
        header = {
            "kind": "load",
            "version": corpus.version,
            "names": [name for name, _ in docs],
            "lengths": [len(b) for b in blobs],
        }
        del blobs
        before = self.bytes_sent
        frame = self._request(header, payload, timeout=timeout)
        if frame.header["kind"] != "loaded" or frame.header.get("version") != corpus.version:
            self.kill()
            raise SandboxProtocolError(f"expected loaded, got {frame.header['kind']!r}")
        self.loaded_version = corpus.version
        return self.bytes_sent - before

    def execute(
        self,
        code: str,
        *,
        on_subcall: SubcallHandler | None = None,
        timeout: float | None = None,
        max_output_chars: int | None = None,
    ) -> ExecResult:
        """Run code in the persistent namespace. Time spent in ``on_subcall`` is not
        counted against ``timeout``; the container is killed when the rest passes it."""
        if not self.alive:
            raise SandboxError("this sandbox container has been discarded")
        limit = timeout if timeout is not None else self.limits.exec_timeout_s
        max_output = max_output_chars or self.limits.max_output_chars
        rid = next(self._ids)
        self.executions += 1
        deadline = time.monotonic() + limit
        subcalls = 0
        try:
            self._channel.send(
                {"kind": "exec", "id": rid, "code": code, "max_output": max_output}, timeout=limit
            )
            while True:
                frame = self._channel.recv(deadline)
                if frame.header["kind"] != "subcall":
                    break
                items = _subcall_items(frame.header)
                started = time.monotonic()
                results = _answer(on_subcall, items)
                subcalls += len(items)
                deadline += time.monotonic() - started
                self._channel.send(
                    {"kind": "subcall_result", "id": frame.header.get("id"), "results": results},
                    timeout=max(deadline - time.monotonic(), 1.0),
                )
        except ChannelTimeout:
            self.kill()
            return ExecResult(
                status="timeout",
                error=(
                    f"TimeoutError: the code ran longer than {limit:g} s and was stopped. "
                    "The sandbox was restarted: variables from earlier steps are gone, "
                    "`context` is still loaded. Work on smaller pieces at a time."
                ),
                wall_s=limit,
                subcalls=subcalls,
            )
        except ChannelClosed:
            self.alive = False
            return self._lost_result(subcalls)
        except SandboxProtocolError:
            self.kill()
            raise
        self._check_reply(frame, rid)
        if frame.header["kind"] != "result":
            self.kill()
            raise SandboxProtocolError(f"expected result, got {frame.header['kind']!r}")
        return _exec_result(frame.header, subcalls, max_output)

    # -- when the container is gone -----------------------------------------------------

    def _exit_state(self) -> dict[str, Any]:
        try:
            self._client.api.wait(self.container_id, timeout=5)
            state: dict[str, Any] = self._client.api.inspect_container(self.container_id)["State"]
        except (DockerException, OSError):
            # The daemon cannot tell us more; report the exit without details.
            return {}
        return state

    def _describe_exit(self) -> str:
        state = self._exit_state()
        tail = self._channel.stderr_tail().strip()
        text = f"exit code {state.get('ExitCode', '?')}"
        if state.get("OOMKilled"):
            text += f", out of memory (limit {self.limits.memory_mb} MB)"
        if tail:
            text += f"; its last stderr: {tail[-2000:]}"
        return text

    def _lost_result(self, subcalls: int) -> ExecResult:
        state = self._exit_state()
        tail = self._channel.stderr_tail().strip()[-2000:]
        _remove_quietly(self._client, self.container_id)
        if state.get("OOMKilled") or state.get("ExitCode") == 137:
            return ExecResult(
                status="memory",
                error=(
                    f"MemoryError: the code used more than the sandbox's "
                    f"{self.limits.memory_mb} MB of memory and was killed. The sandbox was "
                    "restarted: variables from earlier steps are gone, `context` is still "
                    "loaded. Process the documents in smaller pieces."
                ),
                subcalls=subcalls,
            )
        detail = f" Its last stderr: {tail}" if tail else ""
        return ExecResult(
            status="crashed",
            error=(
                f"SandboxCrashed: the sandbox process exited (exit code "
                f"{state.get('ExitCode', '?')}). It was restarted: variables from earlier "
                f"steps are gone, `context` is still loaded.{detail}"
            ),
            subcalls=subcalls,
        )


def _answer(handler: SubcallHandler | None, items: Sequence[SubcallItem]) -> list[str]:
    if handler is None:
        return [NO_SUBCALLS] * len(items)
    results = handler(items)
    if len(results) != len(items):
        raise SandboxError(
            f"the sub-call handler returned {len(results)} answers for {len(items)} prompts"
        )
    return [str(r) for r in results]


def _subcall_items(header: dict[str, Any]) -> list[SubcallItem]:
    raw = header.get("items")
    if not isinstance(raw, list) or not raw or len(raw) > MAX_SUBCALL_ITEMS:
        raise SandboxProtocolError("the sandbox sent a sub-call without a valid list of items")
    items = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise SandboxProtocolError("the sandbox sent a malformed sub-call item")
        instruction, content = entry.get("instruction"), entry.get("content")
        if not isinstance(instruction, str) or not isinstance(content, str):
            raise SandboxProtocolError("the sandbox sent a sub-call item that is not text")
        items.append(SubcallItem(instruction, content))
    return items


def _text(header: dict[str, Any], key: str, limit: int) -> str:
    value = header.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SandboxProtocolError(f"the sandbox sent a result whose {key!r} is not text")
    # The runner already truncates; a runner that did not is cut here, bluntly.
    return value if len(value) <= limit + 1000 else value[:limit] + "\n... [cut by host]\n"


def _number(header: dict[str, Any], key: str) -> float:
    value = header.get(key, 0)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise SandboxProtocolError(f"the sandbox sent a result whose {key!r} is not a number")
    return float(value)


def _exec_result(header: dict[str, Any], subcalls: int, max_output: int) -> ExecResult:
    error = header.get("error")
    if error is not None and not isinstance(error, str):
        raise SandboxProtocolError("the sandbox sent a result whose 'error' is not text")
    final = header.get("final")
    if final is not None and not isinstance(final, str):
        raise SandboxProtocolError("the sandbox sent a result whose 'final' is not text")
    return ExecResult(
        status="error" if error else "ok",
        stdout=_text(header, "stdout", max_output),
        stderr=_text(header, "stderr", max_output),
        error=_text(header, "error", max_output) or None,
        final=final,
        stdout_chars=int(_number(header, "stdout_chars")),
        cpu_s=_number(header, "cpu_s"),
        wall_s=_number(header, "wall_s"),
        peak_memory_mb=round(_number(header, "peak_rss_kb") / 1024, 1),
        subcalls=subcalls,
    )


def _remove_quietly(client: docker.DockerClient, container_id: str) -> None:
    try:
        client.api.remove_container(container_id, force=True)
    except NotFound:
        return  # already gone: what we wanted
    except (APIError, DockerException, OSError):
        # Removal is best effort; orphans carry a label and are swept at the next start.
        return


def owner_token() -> str:
    """Who owns a container: host, pid and the process's start time (pids get reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid())}"


def _process_start(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            # Field 22, after the parenthesised command name (which may hold spaces).
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def owner_is_gone(token: str) -> bool:
    """True when the process that owns a container is known to be dead."""
    host, _, rest = token.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another machine's container, or a token we do not understand
    pid = int(pid_text)
    if start == "?":  # no start time recorded (no /proc): fall back to asking the pid
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # alive, owned by someone else
        return False
    return _process_start(pid) != start
