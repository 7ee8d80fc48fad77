"""What one execution in the sandbox returns, and how sub-calls reach the host."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

ExecStatus = Literal["ok", "error", "timeout", "memory", "crashed"]
"""ok: the code ran; error: it raised (see ``error``); timeout: it passed its limit and
the container was killed; memory: it passed the memory limit and was killed; crashed:
the container died or misbehaved. After timeout, memory and crashed, the namespace is
gone: the next execution starts in a fresh container with ``context`` loaded again."""

SANDBOX_LOST: frozenset[str] = frozenset({"timeout", "memory", "crashed"})


@dataclass(frozen=True, slots=True)
class SubcallItem:
    """One ``llm_query`` prompt from code in the sandbox: untrusted data."""

    instruction: str
    content: str


SubcallHandler = Callable[[Sequence[SubcallItem]], list[str]]
"""Answers a batch of sub-calls, one string per item and in order."""


@dataclass(frozen=True, slots=True)
class ExecResult:
    status: ExecStatus
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    final: str | None = None
    """The answer, when the code called FINAL(...) or FINAL_VAR(...)."""
    stdout_chars: int = 0
    """How much was printed in all, before truncation."""
    cpu_s: float = 0.0
    wall_s: float = 0.0
    peak_memory_mb: float = 0.0
    subcalls: int = 0

    @property
    def sandbox_lost(self) -> bool:
        return self.status in SANDBOX_LOST

    @property
    def output(self) -> str:
        """stdout, stderr and the error, as one text for a reader."""
        parts = [self.stdout]
        if self.stderr:
            parts.append(self.stderr)
        if self.error:
            parts.append(self.error)
        return "".join(p if p.endswith("\n") or not p else p + "\n" for p in parts if p)
