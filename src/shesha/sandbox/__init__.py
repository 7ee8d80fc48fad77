"""The code sandbox: hardened, network-isolated sandboxes in a warm pool (Docker
containers, or bubblewrap namespaces where there is no Docker), all speaking one frame
protocol to the same runner (``runner_client``); ``process`` runs that runner as a local
child process, without isolation, for tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shesha.lazy import lazy_attributes

if TYPE_CHECKING:
    from shesha.sandbox.container import DockerFactory, DockerSandbox, docker_pool
    from shesha.sandbox.corpus import Corpus, InMemoryCorpus, content_version
    from shesha.sandbox.docker_client import connect
    from shesha.sandbox.execution import ExecResult, ExecStatus, SubcallHandler, SubcallItem
    from shesha.sandbox.image import default_image, runner_hash
    from shesha.sandbox.limits import SandboxLimits
    from shesha.sandbox.pool import PoolStats, Sandbox, SandboxLease, SandboxPool

_LAZY = {
    "Corpus": "shesha.sandbox.corpus",
    "DockerFactory": "shesha.sandbox.container",
    "DockerSandbox": "shesha.sandbox.container",
    "ExecResult": "shesha.sandbox.execution",
    "ExecStatus": "shesha.sandbox.execution",
    "InMemoryCorpus": "shesha.sandbox.corpus",
    "PoolStats": "shesha.sandbox.pool",
    "Sandbox": "shesha.sandbox.pool",
    "SandboxLimits": "shesha.sandbox.limits",
    "SandboxPool": "shesha.sandbox.pool",
    "SandboxLease": "shesha.sandbox.pool",
    "SubcallHandler": "shesha.sandbox.execution",
    "SubcallItem": "shesha.sandbox.execution",
    "connect": "shesha.sandbox.docker_client",
    "content_version": "shesha.sandbox.corpus",
    "default_image": "shesha.sandbox.image",
    "docker_pool": "shesha.sandbox.container",
    "runner_hash": "shesha.sandbox.image",
}


__getattr__ = lazy_attributes(__name__, _LAZY)

__all__ = [
    "Corpus",
    "DockerFactory",
    "DockerSandbox",
    "ExecResult",
    "ExecStatus",
    "InMemoryCorpus",
    "PoolStats",
    "Sandbox",
    "SandboxLease",
    "SandboxLimits",
    "SandboxPool",
    "SubcallHandler",
    "SubcallItem",
    "connect",
    "content_version",
    "default_image",
    "docker_pool",
    "runner_hash",
]
