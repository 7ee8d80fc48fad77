"""A result and its trace as HTML, for Jupyter (``_repr_html_``): the answer, how the query
ended and what it used, then each step collapsed under a line. Every text (the answer,
code, output, replies, document previews) is untrusted and escaped, as on the web page;
nothing here runs script or loads anything."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Protocol

from shesha.rlm.events import Summary, TraceEvent
from shesha.rlm.steps import Step, steps_of
from shesha.rlm.usage import Usage


class Shown(Protocol):
    """What a result shows (``QueryResult``)."""

    @property
    def answer(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def error(self) -> str | None: ...
    @property
    def iterations(self) -> int: ...
    @property
    def subcalls(self) -> int: ...
    @property
    def usage(self) -> Usage: ...
    @property
    def duration_s(self) -> float: ...


STYLE = (
    "font-family:system-ui,sans-serif;line-height:1.4;max-width:60em;"
    "border:1px solid #ccc;border-radius:6px;padding:0.6em 0.9em"
)
PRE = (
    "white-space:pre-wrap;background:#f6f6f6;padding:0.4em;margin:0.3em 0;"
    "max-height:24em;overflow:auto"
)
OUTPUT_CHARS = 4_000
"""Of a block's output or a reply, what a step shows (the trace keeps it whole)."""


def result_html(result: Shown, events: Sequence[TraceEvent] = ()) -> str:
    """The answer, the status line, and the steps of its trace's ``events``."""
    usage = result.usage
    cost = f"${usage.total_cost_usd:.4f}" if usage.total_cost_usd is not None else "cost unknown"
    line = (
        f"{result.status} · {result.iterations} steps · {result.subcalls} sub-calls · "
        f"{usage.total_tokens:,} tokens · {cost} · {result.duration_s:.1f} s"
    )
    answer = "(no answer)" if result.answer is None else result.answer
    parts = [
        f'<div class="shesha-result" style="{STYLE}">',
        f"<p><strong>Answer:</strong> {_text(answer)}</p>",
        f'<p style="color:#555">{escape(line)}</p>',
    ]
    if result.error:
        parts.append(f'<p style="color:#a00">{_text(result.error)}</p>')
    parts.append(_steps(events))
    parts.append("</div>")
    return "\n".join(parts)


def trace_html(question: str | None, events: Sequence[TraceEvent]) -> str:
    """The question, how the query ended, and its steps."""
    summary = next((e for e in reversed(events) if isinstance(e, Summary)), None)
    ended = (
        f"{summary.status} · {summary.iterations} steps · {summary.usage.total_tokens:,} tokens"
        if summary
        else "incomplete"
    )
    return "\n".join(
        [
            f'<div class="shesha-trace" style="{STYLE}">',
            f"<p><strong>Question:</strong> {_text(question or '(no header)')}</p>",
            f'<p style="color:#555">{escape(ended)}</p>',
            _steps(events),
            "</div>",
        ]
    )


def _steps(events: Sequence[TraceEvent]) -> str:
    return "\n".join(_step(s) for s in steps_of(events))


def _step(s: Step) -> str:
    title = f"Step {s.number}" + (" (the engine's)" if s.number == 0 else "")
    said = f"{title} · model {s.model_s:.2f} s · {s.root_tokens:,} tokens"
    if s.subs:
        said += f" · {len(s.subs)} sub-calls"
    body: list[str] = []
    for b in s.blocks:
        body.append(f'<pre style="{PRE}">{escape(b.code)}</pre>')
        body.append(f'<p style="color:#555">{escape(b.status)} · {b.seconds:.2f} s</p>')
        body.append(f'<pre style="{PRE}">{_cut(b.output) if b.output else "(no output)"}</pre>')
    if not s.blocks and s.reply:
        body.append(f'<pre style="{PRE}">{_cut(s.reply)}</pre>')
    for c in s.subs:
        got = c.answer if c.answer is not None else c.error
        asked = f"{escape(c.instruction)} ({c.chars:,} characters)"
        body.append(f"<p>sub-call: {asked} → {_text(got or '')}</p>")
    body.extend(f'<p style="color:#555">{escape(n)}</p>' for n in s.notes)
    if s.answer is not None:
        body.append(f"<p><strong>FINAL:</strong> {_text(s.answer)}</p>")
    return f"<details><summary>{escape(said)}</summary>\n" + "\n".join(body) + "\n</details>"


def _text(text: str) -> str:
    return escape(text).replace("\n", "<br>")


def _cut(text: str) -> str:
    if len(text) <= OUTPUT_CHARS:
        return escape(text)
    return escape(text[:OUTPUT_CHARS]) + f"\n… ({len(text) - OUTPUT_CHARS:,} more characters)"
