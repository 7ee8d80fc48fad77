"""Charts people would rather look at than read, as inline SVG: tokens and cost per step
(root against sub-calls), time per step (model, code, sub-calls), and sub-call fan-out.

No script and no style attribute: the page's Content-Security-Policy forbids both. Every
label is escaped."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from shesha.rlm.steps import Step

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 560, 180, 56, 28, 12


@dataclass(frozen=True)
class Series:
    name: str
    css: str
    """A class from app.css (its fill), one per kind of time or token."""
    values: list[float]


def _nice(top: float) -> float:
    if top <= 0:
        return 1.0
    for power in range(-6, 12):
        for scale in (1, 2, 2.5, 5):
            bound = scale * 10.0**power
            if bound >= top:
                return bound
    return top


def _fmt(value: float, unit: str) -> str:
    if unit == "$":
        return f"${value:.4f}"
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value:,.0f}"


def stacked_bars(title: str, labels: list[str], series: list[Series], unit: str) -> str:
    """One bar per label, its series stacked, with a legend, axis ticks and a tooltip."""
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    top = _nice(max(totals, default=0.0))
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(labels))
    bar = max(2.0, slot * 0.7)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT + 22}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for tick in (0.0, top / 2, top):
        y = TOP + plot_h - plot_h * tick / top
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - 8}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="axis" x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(_fmt(tick, unit))}</text>"
        )
    for i, label in enumerate(labels):
        x = LEFT + i * slot + (slot - bar) / 2
        base = float(TOP + plot_h)
        for s in series:
            h = plot_h * s.values[i] / top
            if h <= 0:
                continue
            base -= h
            tip = f"step {label}: {s.name} {_fmt(s.values[i], unit)}"
            parts.append(
                f'<rect class="{s.css}" x="{x:.1f}" y="{base:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}"><title>{escape(tip)}</title></rect>'
            )
        if len(labels) <= 30 or i % max(1, len(labels) // 15) == 0:
            parts.append(
                f'<text class="axis" x="{x + bar / 2:.1f}" y="{TOP + plot_h + 14}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    x = LEFT
    for s in series:
        parts.append(f'<rect class="{s.css}" x="{x}" y="{HEIGHT + 8}" width="10" height="10"/>')
        parts.append(f'<text class="legend" x="{x + 14}" y="{HEIGHT + 17}">{escape(s.name)}</text>')
        x += 24 + 8 * len(s.name)
    parts.append("</svg>")
    return "".join(parts)


def trace_charts(steps: list[Step]) -> dict[str, str]:
    """The four charts of a trace, by name."""
    labels = [str(s.number) for s in steps]
    costs_known = all(s.root_cost is not None and s.sub_cost is not None for s in steps)
    charts = {
        "tokens": stacked_bars(
            "Tokens per step",
            labels,
            [
                Series("root", "root", [float(s.root_tokens) for s in steps]),
                Series("sub-calls", "sub", [float(s.sub_tokens) for s in steps]),
            ],
            "tokens",
        ),
        "time": stacked_bars(
            "Time per step",
            labels,
            [
                Series("model", "model", [s.model_s for s in steps]),
                Series("code", "code", [s.code_s for s in steps]),
                Series("sub-calls", "sub", [s.subcall_s for s in steps]),
            ],
            "s",
        ),
        "fanout": stacked_bars(
            "Sub-calls per step",
            labels,
            [Series("sub-calls", "sub", [float(len(s.subs)) for s in steps])],
            "calls",
        ),
    }
    if costs_known and any((s.root_cost or 0) + (s.sub_cost or 0) > 0 for s in steps):
        charts["cost"] = stacked_bars(
            "Cost per step",
            labels,
            [
                Series("root", "root", [s.root_cost or 0.0 for s in steps]),
                Series("sub-calls", "sub", [s.sub_cost or 0.0 for s in steps]),
            ],
            "$",
        )
    return charts
