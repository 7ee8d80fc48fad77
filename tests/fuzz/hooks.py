"""Schemathesis hooks for the API fuzz run (tests/unit/test_api_fuzz.py): a check that a
refused request stored nothing. The server's data directory is SHESHA_FUZZ_HOME."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import schemathesis
from schemathesis import Case

_before: dict[int, dict[str, list[str]]] = {}


def stored() -> dict[str, list[str]]:
    """Every project and the records of its documents, as the store keeps them."""
    projects = Path(os.environ["SHESHA_FUZZ_HOME"]) / "projects"
    if not projects.is_dir():
        return {}
    return {
        p.name: sorted(d.name for d in (p / "docs").glob("*.json"))
        for p in sorted(projects.iterdir())
        if (p / "project.json").is_file()
    }


@schemathesis.hook
def before_call(ctx: Any, case: Case[Any], **kwargs: Any) -> None:
    _before[id(case)] = stored()


@schemathesis.check
def nothing_stored_when_refused(ctx: Any, response: Any, case: Case[Any]) -> bool | None:
    with open(os.environ["SHESHA_FUZZ_TALLY"], "a") as tally:  # proof that it ran
        tally.write(".")
    before = _before.pop(id(case), None)
    if before is not None and 400 <= response.status_code < 500 and stored() != before:
        raise AssertionError(
            f"{case.method} {case.path} was refused ({response.status_code}) yet changed "
            "what is stored"
        )
    return None
