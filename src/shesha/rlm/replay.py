"""Replaying a conversation: the code its traces recorded as having run cleanly, run again
in order in a fresh sandbox, with sub-calls answered from the recorded answers (never by
unpickling anything), so the namespace is as it was."""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from shesha.rlm.engine import SHOW_WHOLE, LeasedSandbox
from shesha.rlm.events import CodeRun, ExecDone, SubcallResponse
from shesha.rlm.history import subcall_messages
from shesha.rlm.prompting import PromptSet
from shesha.rlm.trace import prompt_key, read_trace
from shesha.sandbox.execution import ExecResult, SubcallItem, ToolCall, ToolOutcome, drive

NOT_REPLAYED = "[not replayed: this sub-call has no recorded answer]"


async def replay(lease: LeasedSandbox, traces: Sequence[str], prompts: PromptSet) -> int:
    """Run the code the traces recorded as having run cleanly, in order, answering its
    sub-calls with the recorded answers: the namespace as it was. ``prompts``: the ones the
    queries ran with (a sub-call is found by its prompt). Returns the blocks run."""
    ran = 0
    for path in traces:
        if not Path(path).is_file():
            continue  # a trace deleted since: what it defined is gone
        events = read_trace(path).events
        answers: dict[str, deque[str]] = {}
        for e in events:
            if isinstance(e, SubcallResponse) and e.text is not None:
                answers.setdefault(e.key, deque()).append(e.text)
        pending: str | None = None
        for e in events:
            if isinstance(e, CodeRun):
                pending = e.code
            elif isinstance(e, ExecDone) and pending is not None:
                if e.status == "ok" and pending != SHOW_WHOLE:
                    await _run_again(lease, pending, answers, prompts)
                    ran += 1
                pending = None
    return ran


async def _run_again(
    lease: LeasedSandbox, code: str, answers: dict[str, deque[str]], prompts: PromptSet
) -> ExecResult:
    async def recorded(items: Sequence[SubcallItem]) -> list[str]:
        return [_recorded(item, answers, prompts) for item in items]

    async def no_tool(call: ToolCall) -> ToolOutcome:
        return ToolOutcome(ok=False, error="tools are not called again when replaying")

    return await drive(lease, code, subcalls=recorded, tool=no_tool)


def _recorded(item: SubcallItem, answers: dict[str, deque[str]], prompts: PromptSet) -> str:
    """The recorded answer to the same sub-call (``prompt_key`` ignores the boundary)."""
    queue = answers.get(prompt_key(subcall_messages(prompts, item, secrets.token_hex(16))))
    return queue.popleft() if queue else NOT_REPLAYED
