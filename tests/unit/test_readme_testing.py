"""The README's example of testing a pipeline runs as written (in-process, no Docker)."""

from __future__ import annotations

import re
import subprocess
import sys
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


TESTING_IMPORT = """
import sys
import shesha.testing
print(" ".join(m for m in ("fastapi", "uvicorn", "docker", "litellm") if m in sys.modules))
from shesha.testing import RunningServer
print(RunningServer.__module__, "uvicorn" in sys.modules)
"""


def test_shesha_testing_loads_the_server_only_for_running_server() -> None:
    """A test of a pipeline imports shesha.testing for a FunctionModel: it pays for
    neither the server (FastAPI, uvicorn) nor Docker's SDK nor LiteLLM until it asks."""
    done = subprocess.run(
        [sys.executable, "-c", TESTING_IMPORT], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["", "shesha.server.run True"]
