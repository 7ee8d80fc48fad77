"""What `shesha ask` prints, made from a query's JSON records (its trace events and its
result, as ``model_dump(mode="json")`` gives them and the server streams them): the
progress lines and the status line, the summary under the answer, and the citations.

The standard library only: the in-process CLI (``shesha.cli.ask``) and the light remote
path (``shesha.remote_ask``) print the same words from the same code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shesha.exits import EXIT_ERROR, EXIT_LIMIT, EXIT_OK

LIMIT_STATUSES = frozenset({"max_iterations", "stalled", "budget_exceeded", "timeout"})
"""A query that ended at a limit (exit 3): the answer so far, if any, is still printed."""
QUOTE_CHARS = 200


class Tally:
    """The running figures of a query's progress, from its events: the step, what it is
    doing, sub-calls, tokens and cost."""

    def __init__(self) -> None:
        self.step = 0
        self.subcalls = 0
        self.tokens = 0
        self.cost = 0.0
        self.cost_known = True
        self.activity = "thinking"

    def status(self) -> str:
        """The one-line status a terminal shows, rewritten as the query goes."""
        cost = f"${self.cost:.4f}" if self.cost_known else "cost unknown"
        return (
            f"step {self.step} · {self.activity} · {self.subcalls} sub-calls · "
            f"{self.tokens:,} tokens · {cost}"
        )

    def queued(self, position: int) -> str:
        """The server has more queries than sandboxes: this one waits in line."""
        self.activity = f"waiting: {position} ahead in line" if position > 1 else "next in line"
        return f"waiting for a sandbox: position {position} in the server's line"

    def add(self, event: Mapping[str, Any]) -> str | None:
        """Counts ``event`` in; the line a log (not a terminal) shows for it, if any."""
        kind, step = event.get("type"), int(event.get("iteration") or 0)
        self.step = step
        if kind == "llm_response" or (
            kind == "subcall_response" and event.get("error") is None and not event.get("cached")
        ):
            self.tokens += int(event.get("prompt_tokens") or 0)
            self.tokens += int(event.get("completion_tokens") or 0)
            if event.get("cost_usd") is None:
                self.cost_known = False
            else:
                self.cost += float(event["cost_usd"])
        elif kind == "llm_request":
            self.activity = "thinking"
            return f"step {step}: asking the model"
        elif kind == "code":
            code = str(event.get("code") or "")
            first = next((ln for ln in code.splitlines() if ln.strip()), "")
            self.activity = f"running: {first[:60]}"
            return f"step {step}: running code: {first[:100]}"
        elif kind == "subcall_request":
            self.subcalls += 1
        elif kind in ("limit", "warning"):
            return f"step {step}: {kind}: {_first_line(event.get('message'))}"
        elif kind == "error":
            return f"step {step}: error: {_first_line(event.get('error'))}"
        return None


def _first_line(text: object) -> str:
    lines = str(text or "").splitlines()
    return lines[0] if lines else ""


def usage_totals(usage: Mapping[str, Any]) -> tuple[int, float | None]:
    """Tokens and cost of a result's ``usage``, root and sub-calls together; the cost is
    None when a call's price is unknown."""
    buckets = [usage.get("root") or {}, usage.get("sub") or {}]
    tokens = sum(
        int(b.get("prompt_tokens", 0)) + int(b.get("completion_tokens", 0)) for b in buckets
    )
    costs = [b.get("cost_usd", 0.0) for b in buckets]
    return tokens, None if any(c is None for c in costs) else float(sum(costs))


def summary(result: Mapping[str, Any]) -> str:
    """The line under the answer: how it ended and what it took."""
    usage = result.get("usage") or {}
    tokens, cost = usage_totals(usage)
    cached = int(usage.get("cached_subcalls") or 0)
    reused = f" ({cached} cached)" if cached else ""
    return (
        f"{result.get('status')} · {result.get('iterations')} steps · "
        f"{result.get('subcalls')} sub-calls{reused} · {tokens:,} tokens · "
        f"{f'${cost:.4f}' if cost is not None else 'cost unknown'} · "
        f"{float(result.get('duration_s') or 0):.1f} s · trace: {result.get('trace_path')}"
    )


def error_lines(text: str) -> list[tuple[str, str]]:
    """A SheshaError's text (its message, then an optional "Hint: ..." line) as labelled
    lines: ``("error", message)``, then ``("hint", hint)``."""
    message, _, hint = text.partition("\nHint: ")
    return [("error", message), *([("hint", hint)] if hint else [])]


def ending_lines(result: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Under the summary, why a query did not simply succeed, as labelled lines: its error
    and hint, or the limit that stopped it; none for a success."""
    status = result.get("status")
    if status == "error":
        return error_lines(str(result.get("error") or "the query failed"))
    if status in LIMIT_STATUSES:
        return [("stopped", str(result.get("error") or status))]
    return []


def citation_lines(citations: Sequence[Mapping[str, Any]]) -> list[str]:
    """Under the answer: each citation, an unverified one marked so nobody misses it."""
    if not citations:
        return []
    lines = ["", "Citations:"]
    for c in citations:
        where = f"{c.get('document')}" + (f", page {c['page']}" if c.get("page") else "")
        quote = str(c.get("quote") or "")
        quote = quote if len(quote) <= QUOTE_CHARS else quote[:QUOTE_CHARS] + "..."
        if c.get("status") == "verified":
            judged = ""
            if c.get("supports") is not None:
                judged = " (supports the answer)" if c["supports"] else " (does NOT support it)"
            lines.append(f'  [verified] {where}: "{quote}"{judged}')
        else:
            lines.append(f'  [UNVERIFIED: {c.get("reason")}] {where}: "{quote}"')
    return lines


def answer_json(result: Mapping[str, Any], project: str) -> dict[str, Any]:
    """What ``shesha ask --json`` prints, from a result's JSON."""
    usage = result.get("usage") or {}
    tokens, cost = usage_totals(usage)
    return {
        "answer": result.get("answer"),
        "status": result.get("status"),
        "iterations": result.get("iterations"),
        "subcalls": result.get("subcalls"),
        "usage": {
            "root": usage.get("root"),
            "sub": usage.get("sub"),
            "total_tokens": tokens,
            "cached_subcalls": usage.get("cached_subcalls"),
            "saved_tokens": usage.get("saved_tokens"),
            "saved_cost_usd": usage.get("saved_cost_usd"),
        },
        "cost_usd": cost,
        "duration_s": result.get("duration_s"),
        "trace_path": result.get("trace_path"),
        "project": project,
        **{k: result.get(k) for k in ANSWER_FIELDS},
    }


ANSWER_FIELDS = (
    "error", "limit", "citations", "output", "tool_calls", "sandbox", "isolation",
)  # fmt: skip
"""The result's fields ``answer_json`` passes on as they are."""


def exit_code(status: str) -> int:
    """The exit code of a query that ended with ``status``."""
    if status == "error":
        return EXIT_ERROR
    return EXIT_LIMIT if status in LIMIT_STATUSES else EXIT_OK
