"""The README's example of testing a pipeline runs as written (in-process, no Docker)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_testing_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.S | re.M)
    (code,) = [b for b in blocks if "FunctionModel" in b]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "call.md").write_text("Call notes.")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SHESHA_HOME", str(tmp_path / "home"))
    printed: list[str] = []
    exec(
        compile(code, "README.md", "exec"),
        {"print": lambda *a: printed.append(" ".join(map(str, a)))},
    )
    assert printed == ["one document"]
