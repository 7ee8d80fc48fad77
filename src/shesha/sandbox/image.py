"""The sandbox image: its tag, and the runner version it must carry."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

IMAGE_REPOSITORY = "shesha-sandbox"
RUNNER_PATH = Path(__file__).with_name("runner.py")
RUNNER_LABEL = "io.shesha.runner-hash"
"""The image label that carries the runner's hash (set by sandbox_image/build.sh)."""
REBUILD_HINT = (
    "Build it with `make sandbox-image` in a shesha checkout (or `bash sandbox_image/build.sh`)."
)


@functools.cache
def runner_hash() -> str:
    """sha256 of the runner's source: the version a container must report."""
    return hashlib.sha256(RUNNER_PATH.read_bytes()).hexdigest()


def default_image() -> str:
    """The image tag that matches this shesha's runner."""
    return f"{IMAGE_REPOSITORY}:{runner_hash()[:12]}"
