"""Running a coroutine from synchronous code, with or without a running event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

_T = TypeVar("_T")


def run_sync(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run(coroutine)``; inside a running event loop (Jupyter, an async web
    handler), on a helper thread with a loop of its own, blocking until it ends."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(1, thread_name_prefix="shesha-sync") as helper:
        return helper.submit(asyncio.run, coroutine).result()
