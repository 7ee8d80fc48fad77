"""Every benchmark runs, in a quick mode, and reports its figures: their targets are read
by people (none is asserted here), but no benchmark may break unseen. (The sandbox
benchmark runs in tests/sandboxes/test_benchmark_runs.py, on both sandboxes.)"""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from shesha.local.registry import ModelRegistry

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

QUICK = {
    "engine": ["--iterations", "5"],
    "cache": [],
    "sizing": ["--rounds", "2"],
    "serve": ["--rounds", "1"],
    "eval_scale": ["--quick"],
}
QUICK_SHARED = {
    "ingest": ["--pdfplumber-pages", "4"],
    "retrieval": ["--quick"],
}


QUICK_LOCAL = {"local_model": ["--quick"]}


def run(name: str, args: list[str]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), *args, "--json"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(figures, dict)
    return figures


def targets(name: str) -> set[str]:
    """The figures a benchmark promises: the names in its TARGETS."""
    sys.path.insert(0, str(BENCHMARKS))  # for its `from report import emit`
    try:
        module = runpy.run_path(str(BENCHMARKS / f"{name}.py"), run_name="benchmark")
    finally:
        sys.path.remove(str(BENCHMARKS))
    return set(module.get("TARGETS", {}))


@pytest.mark.docker
@pytest.mark.parametrize("name", sorted(QUICK))
def test_a_docker_benchmark_runs_and_reports_its_figures(
    name: str, request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue("docker_client")
    figures = run(name, QUICK[name])
    assert targets(name) <= set(figures)


@pytest.mark.parametrize("name", sorted(QUICK_SHARED))
def test_a_benchmark_of_shared_documents_runs_and_reports_its_figures(
    name: str, shared_dir: Path
) -> None:
    figures = run(name, QUICK_SHARED[name])
    assert targets(name) <= set(figures)


@pytest.mark.real_llm
@pytest.mark.parametrize("name", sorted(QUICK_LOCAL))
def test_a_local_model_benchmark_runs_and_reports_its_figures(
    name: str, local_models: ModelRegistry
) -> None:
    figures = run(name, QUICK_LOCAL[name])
    runtimes = figures["runtimes"]
    assert isinstance(runtimes, dict)
    assert "llama-server" in runtimes  # the default runtime is always measured
    for measured in runtimes.values():
        assert targets(name) <= set(measured)
