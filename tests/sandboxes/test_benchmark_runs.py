"""benchmarks/sandbox.py runs, in a quick mode, against both sandboxes: its figures are
read by people (no target is asserted here), but it must never break unseen."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "sandbox.py"
FIGURES = {
    "exec_roundtrip_ms_p50", "floor_roundtrip_ms_p50", "acquire_ms_p50", "release_ms_p50",
    "pool_ready_s", "load_100mb_s", "requery_bytes_sent",
}  # fmt: skip


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("docker", marks=pytest.mark.docker),
        pytest.param("bwrap", marks=pytest.mark.bwrap),
    ],
)
def test_the_sandbox_benchmark_runs_and_reports_its_figures(
    backend: str, request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue("docker_client" if backend == "docker" else "bwrap_ready")
    done = subprocess.run(
        [sys.executable, str(BENCH), "--backend", backend, "--rounds", "50", "--json"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    assert set(figures) >= FIGURES
    assert figures["requery_bytes_sent"] == 0
