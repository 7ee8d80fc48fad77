"""One hardened sandbox container: how it is launched, killed and inspected; and
``DockerFactory``, which starts them for a pool (``docker_pool``). The conversation with
the runner inside is ``RunnerClient``'s."""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import LogConfig, Ulimit
from requests import RequestException

import docker
from shesha.errors import SandboxError, SandboxImageError, SandboxUnavailableError
from shesha.sandbox.docker_client import connect
from shesha.sandbox.image import REBUILD_HINT, default_image, runner_hash
from shesha.sandbox.limits import SandboxLimits
from shesha.sandbox.pool import SandboxPool
from shesha.sandbox.protocol import FrameChannel, socket_from_attach
from shesha.sandbox.runner_client import ExitState, RunnerClient, check_runner

SANDBOX_USER = "65532:65532"
LABEL_SANDBOX = "io.shesha.sandbox"
LABEL_OWNER = "io.shesha.owner"
LABEL_RUNNER = "io.shesha.runner"
DOCKER_ISOLATION = (
    "Docker: no network, read-only root, no capabilities, no new privileges, Docker's "
    "seccomp profile, memory, CPU and process limits by cgroup, noexec /tmp"
)


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
            # No init: the runner is PID 1 itself, so no signal from inside can stop it, it
            # reaps every orphan, and there is no other process for code to take over.
            init=False,
            ipc_mode="none",  # no /dev/shm: nothing writable outside /tmp
            log_config=LogConfig(type=LogConfig.types.NONE),
        )
    )


class DockerSandbox(RunnerClient):
    """A running container with the runner in it, ready for frames."""

    def __init__(
        self,
        client: docker.DockerClient,
        container_id: str,
        attached: Any,
        channel: FrameChannel,
        limits: SandboxLimits,
    ) -> None:
        super().__init__(channel, limits)
        self._client = client
        self.container_id = container_id
        self._attached = attached  # keeps the HTTP response behind the socket alive

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
                command=["--scratch", "/tmp"],  # noqa: S108  emptied after every query
                environment={},
                labels={LABEL_SANDBOX: "1", **(labels or {})},
                host_config=host_config(client, limits),
            )
        except ImageNotFound as e:
            raise SandboxImageError(
                f"The sandbox image {image} is not present on the Docker daemon.",
                hint=REBUILD_HINT,
            ) from e
        except (DockerException, RequestException) as e:  # the daemon refused, or is gone
            raise SandboxUnavailableError(f"Could not create a sandbox container: {e}") from e
        cid: str = created["Id"]
        try:
            attached = client.api.attach_socket(
                cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
            sock = socket_from_attach(attached)
            client.api.start(cid)
        except (DockerException, RequestException) as e:
            _remove_quietly(client, cid)
            raise SandboxUnavailableError(f"Could not start a sandbox container: {e}") from e
        channel = FrameChannel(sock, max_frame=limits.max_frame_mb * 1024 * 1024)
        sandbox = cls(client, cid, attached, channel, limits)
        check_runner(sandbox, image, ready_timeout, expected_runner)
        return sandbox

    def _stop(self) -> None:
        _remove_quietly(self._client, self.container_id)

    def exit_state(self) -> ExitState:
        try:
            self._client.api.wait(self.container_id, timeout=5)
            state = self._client.api.inspect_container(self.container_id)["State"]
        except (DockerException, OSError):
            # The daemon cannot tell us more; report the exit without details.
            return ExitState()
        code = state.get("ExitCode")
        return ExitState(
            code=code if isinstance(code, int) else None,
            out_of_memory=bool(state.get("OOMKilled")) or code == 137,
        )


def _remove_quietly(client: docker.DockerClient, container_id: str) -> None:
    try:
        client.api.remove_container(container_id, force=True)
    except NotFound:
        return  # already gone: what we wanted
    except (APIError, DockerException, OSError):
        # Removal is best effort; orphans carry a label and are swept at the next start.
        return


def sweep_orphans(client: docker.DockerClient) -> int:
    """Remove sandbox containers whose owning process has died."""
    removed = 0
    try:
        found = client.api.containers(all=True, filters={"label": LABEL_SANDBOX})
    except DockerException as e:
        raise SandboxUnavailableError(f"Could not list containers: {e}") from e
    for c in found:
        token = (c.get("Labels") or {}).get(LABEL_OWNER, "")
        if owner_is_gone(token):
            try:
                client.api.remove_container(c["Id"], force=True)
                removed += 1
            except DockerException:
                continue  # another process swept it first, or it is being removed
    return removed


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


class DockerFactory:
    """Starts hardened containers for a ``SandboxPool``: the first call connects (unless a
    client is given) and removes containers that dead shesha processes left behind."""

    def __init__(
        self,
        image: str | None = None,
        limits: SandboxLimits | None = None,
        client: docker.DockerClient | None = None,
    ) -> None:
        self.image = image or default_image()
        self.limits = limits or SandboxLimits()
        self._client = client
        self._owns_client = client is None
        self._labels: dict[str, str] | None = None
        self._closed = False
        self._lock = threading.Lock()

    def __call__(self) -> DockerSandbox:
        client, labels = self._connected()
        return DockerSandbox.launch(client, self.image, self.limits, labels=labels)

    def _connected(self) -> tuple[docker.DockerClient, dict[str, str]]:
        with self._lock:
            if self._closed:  # a replacement started as the pool closed: no new client
                raise SandboxError("this Docker sandbox factory has been closed")
            if self._client is None:
                self._client = connect()
            if self._labels is None:
                try:
                    sweep_orphans(self._client)
                except (DockerException, RequestException) as e:
                    raise SandboxUnavailableError(f"Docker did not answer: {e}") from e
                self._labels = {LABEL_OWNER: owner_token(), LABEL_RUNNER: runner_hash()}
            return self._client, self._labels

    def close(self) -> None:
        """Close the client this factory opened (a given one is the caller's)."""
        with self._lock:
            self._closed = True
            if self._owns_client and self._client is not None:
                self._client.close()
                self._client = None


def docker_pool(
    size: int = 3,
    *,
    image: str | None = None,
    limits: SandboxLimits | None = None,
    client: docker.DockerClient | None = None,
    **pool_options: Any,
) -> SandboxPool:
    """A pool of ``size`` hardened Docker containers (not yet started): the default
    sandbox. ``pool_options`` go to ``SandboxPool`` (``acquire_timeout``, ...)."""
    factory = DockerFactory(image, limits, client)
    return SandboxPool(
        size,
        factory=factory,
        kind="docker",
        isolation=DOCKER_ISOLATION,
        on_close=factory.close,
        **pool_options,
    )
