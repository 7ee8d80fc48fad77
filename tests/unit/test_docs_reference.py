"""The generated parts of the docs match the code: docs/cli.md ends with every command's
`--help`, docs/settings.md with every setting (cog, scripts/docs_reference.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATED = {"docs/cli.md": "### shesha ask\n", "docs/settings.md": "`SHESHA_MODEL`"}


@pytest.mark.parametrize("page", sorted(GENERATED))
def test_the_generated_reference_is_up_to_date(page: str) -> None:
    text = (ROOT / page).read_text()
    assert "[[[cog" in text, f"{page} lost its cog block"
    assert GENERATED[page] in text, f"{page} has no generated reference: run `make docs`"
    r = subprocess.run(
        [sys.executable, "-m", "cogapp", "-I", "scripts", "--check", page],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, (
        f"{page} is stale: its generated reference no longer matches the code. "
        f"Run `make docs` and commit the result.\n{r.stdout}{r.stderr}"
    )
