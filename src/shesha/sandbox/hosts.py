"""A sandbox pool spread over several Docker daemons.

``docker_hosts = ["unix:///var/run/docker.sock", "ssh://build@host2", "tcp://host3:2376"]``
(TLS for ``tcp://`` from ``docker_tls_*``). ``DockerHosts`` is the pool's factory: each
new container goes to the healthy host with the most room, room being the host's weight
(given, or by default its CPU count) over the containers it already runs. Before a host's
first container, the sandbox image is checked there, and copied over the SDK
(``docker save`` from a host that has it, ``docker load`` into this one) when it is
missing; the copy is accepted only when its label carries this shesha's runner hash.

A host that fails (cannot be reached, refuses to start a container) is set aside and
tried again after a backoff that doubles, from 1 s up to a minute. Its containers fail
as any lost container does: the pool discards them, and the session that held one gets
a new container on another host (its namespace is gone, the documents are loaded again),
or, with no host left, a clear error. Nothing waits on a dead host without a timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from docker.constants import MINIMUM_DOCKER_API_VERSION
from docker.errors import DockerException, ImageNotFound
from docker.tls import TLSConfig
from requests import RequestException

import docker
from shesha.errors import SandboxError, SandboxImageError, SandboxUnavailableError
from shesha.sandbox.container import (
    LABEL_OWNER,
    LABEL_RUNNER,
    DockerSandbox,
    owner_token,
    sweep_orphans,
)
from shesha.sandbox.image import REBUILD_HINT, RUNNER_LABEL, runner_hash
from shesha.sandbox.limits import SandboxLimits

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 60.0
CONNECT_TIMEOUT_S = 10


@dataclass(frozen=True)
class HostSpec:
    """One daemon: its address, and its weight (None: its CPU count)."""

    url: str
    weight: float | None = None


@dataclass(frozen=True)
class TLSSettings:
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    verify: bool = True

    def config(self) -> TLSConfig | None:
        if not (self.ca or self.cert):
            return None
        pair = (self.cert, self.key) if self.cert and self.key else None
        return TLSConfig(client_cert=pair, ca_cert=self.ca, verify=self.verify)


def connect_host(spec: HostSpec, tls: TLSSettings | None = None) -> docker.DockerClient:
    """A client for one daemon, checked with a ping."""
    kwargs: dict[str, Any] = {"base_url": spec.url, "timeout": CONNECT_TIMEOUT_S}
    if spec.url.startswith("ssh://"):
        kwargs["use_ssh_client"] = True  # the ssh binary: its config, agent and known hosts
    elif spec.url.startswith("tcp://") and tls is not None and tls.config() is not None:
        kwargs["tls"] = tls.config()
    try:
        client = _tls_client(kwargs) if "tls" in kwargs else docker.DockerClient(**kwargs)
        client.ping()
    except (DockerException, RequestException) as e:
        raise SandboxUnavailableError(f"No Docker daemon answers at {spec.url}: {e}") from e
    return client


def _tls_client(kwargs: dict[str, Any]) -> docker.DockerClient:
    """A client that verifies the daemon with *our* CA. requests lets REQUESTS_CA_BUNDLE
    (and proxies) in the environment override a session's own CA, and the SDK's first
    request (the API version) would go that way: so ask the version with the environment
    turned off, then make the client for that version, also with it off."""
    probe = docker.DockerClient(**kwargs, version=MINIMUM_DOCKER_API_VERSION)
    try:
        probe.api.trust_env = False
        found = str(probe.api.version(api_version=False)["ApiVersion"])
    finally:
        probe.close()
    client = docker.DockerClient(**kwargs, version=found)
    client.api.trust_env = False
    return client


def ensure_image(
    client: docker.DockerClient, image: str, sources: Sequence[docker.DockerClient], where: str
) -> str:
    """Make sure ``image`` is on the daemon at ``where`` (``client``), copying it from a
    source that has it; check its runner. Returns how it got there: present or copied."""
    try:
        found = client.images.get(image)
        how = "present"
    except ImageNotFound:
        _copy_image(client, image, sources, where)
        found = client.images.get(image)
        how = "copied"
    labelled = (found.labels or {}).get(RUNNER_LABEL, "")
    if labelled != runner_hash():
        raise SandboxImageError(
            f"The image {image} at {where} carries runner {labelled[:12] or '?'}, "
            f"but this shesha needs runner {runner_hash()[:12]}.",
            hint=REBUILD_HINT,
        )
    return how


def _copy_image(
    client: docker.DockerClient, image: str, sources: Sequence[docker.DockerClient], where: str
) -> None:
    for source in sources:
        try:
            chunks = source.api.get_image(image)
        except DockerException:
            continue  # not on this one (or it is down): try the next
        try:
            for _ in client.api.load_image(_Stream(chunks)):  # type: ignore[no-untyped-call]
                pass  # the daemon's progress messages
        except DockerException as e:
            raise SandboxUnavailableError(
                f"Could not load the image {image} into {where}: {e}"
            ) from e
        return
    raise SandboxImageError(
        f"The sandbox image {image} is on none of the Docker hosts, so it cannot be copied "
        f"to {where}.",
        hint=REBUILD_HINT,
    )


class _Stream:
    """``docker save``'s chunks as a file-like body for ``docker load``."""

    def __init__(self, chunks: Any) -> None:
        self._chunks = iter(chunks)
        self._left = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._left) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._left += chunk
        out, self._left = (self._left, b"") if size < 0 else (self._left[:size], self._left[size:])
        return out


@dataclass
class Host:
    spec: HostSpec
    tls: TLSSettings | None
    client: docker.DockerClient | None = None
    weight: float = 1.0
    image_ready: bool = False
    sandboxes: list[DockerSandbox] = field(default_factory=list)
    failures: int = 0
    retry_at: float = 0.0
    last_error: str | None = None
    image_lock: threading.Lock = field(default_factory=threading.Lock)
    """Held while the image is checked or copied here (one copy, however many start)."""
    connect_lock: threading.Lock = field(default_factory=threading.Lock)
    """Held while connecting. Never held while taking another lock, so that a copy here
    (which connects to the other hosts) cannot deadlock with a copy there."""
    starting: int = 0
    """Containers being started there now (counted, so that a burst spreads too)."""

    def live(self) -> int:
        self.sandboxes = [s for s in self.sandboxes if s.alive]
        return len(self.sandboxes)

    def up(self, now: float) -> bool:
        return now >= self.retry_at


class DockerHosts:
    """The factory of a pool over several daemons: spreads containers, copies the image,
    sets failing hosts aside with backoff."""

    def __init__(
        self,
        specs: Sequence[HostSpec],
        image: str,
        limits: SandboxLimits,
        tls: TLSSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not specs:
            raise ValueError("DockerHosts needs at least one host")
        self.hosts = [Host(spec, tls, weight=spec.weight or 1.0) for spec in specs]
        self.image = image
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._labels = {LABEL_OWNER: owner_token(), LABEL_RUNNER: runner_hash()}

    def __call__(self) -> DockerSandbox:
        """Start one container on the host with the most room; on failure, the next."""
        tried: list[str] = []
        while True:
            host = self._pick(exclude=tried)
            if host is None:
                said = "; ".join(
                    f"{h.spec.url}: {h.last_error or 'set aside after failures'}"
                    for h in self.hosts
                )
                raise SandboxUnavailableError(
                    f"No Docker host can start a sandbox ({said}).",
                    hint="Check the daemons in docker_hosts (`shesha doctor` checks each); "
                    "failed hosts are tried again after a backoff.",
                )
            tried.append(host.spec.url)
            try:
                sandbox = self._launch_on(host)
            except (SandboxError, DockerException, RequestException) as e:
                # unreachable, refused, no image, or a runner that did not answer in time
                self._failed(host, e)
                if isinstance(e, SandboxImageError) and len(tried) == len(self.hosts):
                    raise
                continue
            finally:
                with self._lock:
                    host.starting -= 1
            with self._lock:
                host.failures, host.retry_at, host.last_error = 0, 0.0, None
                host.sandboxes.append(sandbox)
            return sandbox

    def _pick(self, exclude: Sequence[str]) -> Host | None:
        now = self._clock()
        with self._lock:
            ready = [h for h in self.hosts if h.spec.url not in exclude and h.up(now)]
            if not ready:
                return None
            host = min(ready, key=lambda h: (h.live() + h.starting + 1) / h.weight)
            host.starting += 1
            return host

    def _launch_on(self, host: Host) -> DockerSandbox:
        client = self._client(host)
        with host.image_lock:  # one copy, however many containers start at once
            if not host.image_ready:
                ensure_image(client, self.image, self._sources(host), host.spec.url)
                host.image_ready = True
        return DockerSandbox.launch(client, self.image, self.limits, labels=self._labels)

    def _client(self, host: Host) -> docker.DockerClient:
        with host.connect_lock:
            if host.client is None:
                client = connect_host(host.spec, host.tls)
                sweep_orphans(client)
                cpus = float(client.info().get("NCPU") or 1)
                host.weight = host.spec.weight or max(cpus, 1.0)
                host.image_ready = False
                host.client = client
            return host.client

    def _sources(self, host: Host) -> list[docker.DockerClient]:
        """The other hosts that answer, to copy the image from."""
        found = []
        for other in self.hosts:
            if other is host or not other.up(self._clock()):
                continue
            try:
                found.append(self._client(other))
            except SandboxUnavailableError:
                continue  # down: another may have the image
        return found

    def _failed(self, host: Host, error: BaseException) -> None:
        with self._lock:
            host.failures += 1
            host.last_error = str(error).split("\n")[0][:200]
            backoff = min(BACKOFF_START_S * 2 ** (host.failures - 1), BACKOFF_MAX_S)
            host.retry_at = self._clock() + backoff
            if host.client is not None:
                host.client.close()
            host.client = None  # reconnect (and re-check the image) when it comes back

    def host_of(self, sandbox: object) -> str | None:
        """The address of the host a sandbox runs on."""
        with self._lock:
            return next((h.spec.url for h in self.hosts if sandbox in h.sandboxes), None)

    def counts(self) -> dict[str, int]:
        """Live containers per host."""
        with self._lock:
            return {h.spec.url: h.live() for h in self.hosts}

    def close(self) -> None:
        with self._lock:
            for h in self.hosts:
                if h.client is not None:
                    h.client.close()
                    h.client = None
