"""A reproduction script end to end, as its own process: a scripted oracle model over
HTTP, real Docker sandboxes. (tests/unit/test_eval_runner.py covers the runner in-process.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.oracle import oracle

from shesha.bench import generate
from shesha.testing import ScriptedLLMServer

pytestmark = pytest.mark.docker


@pytest.fixture
def server_for() -> Iterator[Callable[[Any], ScriptedLLMServer]]:
    servers: list[ScriptedLLMServer] = []

    def make(script: Any) -> ScriptedLLMServer:
        s = ScriptedLLMServer(script).start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


def test_the_sniah_reproduction_script_writes_its_table_plot_and_run_record(
    server_for: Any, tmp_path: Path
) -> None:
    _, tasks = generate.sniah(0, 2, [512, 2048], None)
    server = server_for(oracle(tasks, lambda t: t.gold))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHESHA_")}
    env.update({"SHESHA_HOME": str(tmp_path / "home"), "SHESHA_POOL_SIZE": "1"})
    script = Path(__file__).parents[2] / "examples" / "reproduce" / "sniah_rlm_vs_direct.py"
    out = tmp_path / "study"
    run = subprocess.run(
        [sys.executable, str(script), "--model", "openai/oracle", "--api-base", server.api_base,
         "--n", "2", "--lengths", "512,2k", "--haystack", "none", "--window-tokens", "1024",
         "--out", str(out)],
        env={**env, "OPENAI_API_KEY": "t"}, capture_output=True, text=True, check=False,
        timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    table = json.loads((out / "table.json").read_text())
    assert [r["mean_score"] for r in table["rlm"]] == [1.0, 1.0]
    assert [r["length_tokens"] for r in table["direct"]] == [512, 2048]
    assert table["direct"][1]["mean_truncated"] > 0.4  # 2K tokens cut to a 1K window
    assert "| 2,048 | 1.00 |" in (out / "table.md").read_text()
    assert (out / "sniah.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((out / "run.json").read_text())
    assert record["command"].startswith("python ")
    assert record["machine"]["cores"] == os.cpu_count()
    assert record["direct_window_tokens"] == 1024
    assert set(record["methods"]) == {"rlm", "direct"}
    assert record["git_commit"]
    (out / "table.md").unlink()
    again = subprocess.run(
        [sys.executable, str(script), "--model", "openai/oracle", "--out", str(out),
         "--report-only"],
        env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "| 2,048 | 1.00 |" in (out / "table.md").read_text()
