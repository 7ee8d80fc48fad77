"""The code sandbox: hardened, network-isolated Docker containers in a warm pool, all
speaking one frame protocol to the same runner (``runner_client``); ``process`` runs that
runner as a local child process, without isolation, for tests."""

from shesha.sandbox.container import DockerSandbox
from shesha.sandbox.corpus import Corpus, InMemoryCorpus, content_version
from shesha.sandbox.docker_client import connect
from shesha.sandbox.execution import ExecResult, ExecStatus, SubcallHandler, SubcallItem
from shesha.sandbox.image import default_image, runner_hash
from shesha.sandbox.limits import SandboxLimits
from shesha.sandbox.pool import PoolStats, Sandbox, SandboxPool, SandboxSession

__all__ = [
    "Corpus",
    "DockerSandbox",
    "ExecResult",
    "ExecStatus",
    "InMemoryCorpus",
    "PoolStats",
    "Sandbox",
    "SandboxLimits",
    "SandboxPool",
    "SandboxSession",
    "SubcallHandler",
    "SubcallItem",
    "connect",
    "content_version",
    "default_image",
    "runner_hash",
]
