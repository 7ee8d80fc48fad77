"""Shared output for the benchmark scripts: JSON, or a table marked against targets."""

from __future__ import annotations

import json
from typing import Any

Targets = dict[str, tuple[str, float]]


def table(results: dict[str, Any], targets: Targets) -> str:
    width = max(len(k) for k in results) + 2
    lines = [f"{'metric':<{width}} {'value':>12}   target", "-" * (width + 26)]
    for key, value in results.items():
        mark = ""
        if key in targets:
            op, bound = targets[key]
            ok = value <= bound if op == "<=" else value >= bound
            mark = f"{op} {bound:g}  {'PASS' if ok else 'FAIL'}"
        lines.append(f"{key:<{width}} {value!s:>12}   {mark}")
    return "\n".join(lines)


def emit(results: dict[str, Any], targets: Targets, as_json: bool) -> None:
    print(json.dumps(results) if as_json else table(results, targets))
