"""The HTTP API, fuzzed from its own OpenAPI schema by schemathesis against a real
``shesha serve`` on loopback: no 5xx, no response that breaks the schema (bodies, status
codes, content types, the Allow header), schema-violating requests refused, and nothing
stored for a request that was refused (``tests/fuzz/hooks.py``).

Bounded: a fixed seed, a few examples an operation and a time budget, so a run takes about
the same time, and finds the same things, every time. (Schemathesis' deterministic mode
was tried: it never sends the NUL bytes that found a 500 here.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shesha import Shesha
from shesha.sandbox import SandboxPool
from shesha.testing import FunctionModel, RunningServer

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
REPO = FUZZ.parents[1]
EXAMPLES = 15
BUDGET_S = 100


def answer(messages: list[Any], model: str) -> str:
    return "FINAL(an answer)"


@pytest.fixture(scope="module")
def served(
    sandboxes: SandboxPool, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("fuzz")
    allowed = root / "allowed"
    allowed.mkdir()
    (allowed / "notes.md").write_text("# Notes\nThe fee is 10 EUR.")
    home = root / "home"
    with Shesha(home=str(home), llm=FunctionModel(answer), sandboxes=sandboxes) as sh:
        sh.project("p").add([allowed / "notes.md"])
        with RunningServer(sh, allow_paths=[allowed]) as url:
            yield url, home


@pytest.mark.timeout(BUDGET_S + 180)
def test_the_api_holds_to_its_schema_and_stores_nothing_it_refuses(
    served: tuple[str, Path],
) -> None:
    url, home = served
    tally = home.parent / "checked"
    done = subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli",
            "--config-file", str(FUZZ / "schemathesis.toml"), "run", f"{url}/api/openapi.json",
            "--max-examples", str(EXAMPLES), "--seed", "7",
            "--max-time", str(BUDGET_S), "--no-color", "--continue-on-failure",
        ],
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.fuzz.hooks",
            "SHESHA_FUZZ_HOME": str(home),
            "SHESHA_FUZZ_TALLY": str(tally),
            "PYTHONPATH": str(REPO),
        },
        capture_output=True, text=True, timeout=BUDGET_S + 120, check=False,
    )  # fmt: skip
    summary = done.stdout[-6000:]
    assert done.returncode == 0, summary + done.stderr[-2000:]
    assert len(tally.read_text()) > 100  # the stored-nothing check ran on every response


def test_the_schema_lists_every_refusal_with_its_body(served: tuple[str, Path]) -> None:
    url, _ = served
    document = httpx.get(f"{url}/api/openapi.json").json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            documented = set(operation["responses"])
            if path.startswith("/v1/"):  # the OpenAI API: 400 for any request it refuses
                assert {"400", "401", "403", "404"} <= documented, (method, path)
                assert "422" not in documented, (method, path)
                shape = operation["responses"]["400"]["content"]["application/json"]["schema"]
                assert shape == {"$ref": "#/components/schemas/OpenAIError"}
            else:
                assert {"400", "403", "404", "422"} <= documented, (method, path)
    assert "ErrorBody" in document["components"]["schemas"]
