"""No small file takes the host down: each bomb fails alone, with an error naming the
file and the bound, before the work is done, and what no bound foresees meets the
parsing worker's memory and time limits instead of this process."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests import bombs
from typer.testing import CliRunner

from shesha import Shesha
from shesha.cli import app
from shesha.sandbox import SandboxPool
from shesha.testing import FunctionModel, RunningServer

OVER = int(1.25 * bombs.GIB)
"""Past a gigabyte inflated, as the review's bombs were."""

BOMBS: dict[str, Callable[[], bytes]] = {
    "report.docx": lambda: bombs.docx_bomb(OVER),
    "sheet.xlsx": lambda: bombs.xlsx_bomb(OVER),
    "deck.pptx": lambda: bombs.pptx_bomb(OVER),
    "page.pdf": lambda: bombs.pdf_bomb(OVER),
    "frames.gif": bombs.gif_bomb,
}
BOUND = {
    "report.docx": "512 MB a file",
    "sheet.xlsx": "512 MB a file",
    "deck.pptx": "512 MB a file",
    "page.pdf": "512 MB a file",
    "frames.gif": "2,000,000,000 pixels a file",
}


@pytest.fixture(scope="module")
def bomb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bombs")
    for name, make in BOMBS.items():
        (folder / name).write_bytes(make())
    (folder / "book.epub").write_bytes(bombs.epub_repeating())
    return folder


PARSE = """
import json, sys
from shesha.errors import ParseError
from shesha.parser.registry import parse_file
try:
    doc = parse_file(sys.argv[1])
    print(json.dumps({"chars": len(doc.text), "warnings": doc.meta.warnings}))
except ParseError as e:
    print(json.dumps({"error": str(e)}))
"""


def parse_in_a_small_process(path: Path) -> dict[str, Any]:
    """Parse in a child limited to 1 GiB of address space: a bomb that inflated there
    would die of it, not fail with a clear error."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (bombs.GIB, bombs.GIB))

    done = subprocess.run(
        [sys.executable, "-c", PARSE, str(path)],
        capture_output=True, text=True, timeout=120, preexec_fn=limit, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout))


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_a_bomb_fails_with_its_bound_before_it_inflates(bomb_dir: Path, name: str) -> None:
    assert (bomb_dir / name).stat().st_size < 16 * 2**20  # small on disk
    outcome = parse_in_a_small_process(bomb_dir / name)
    error = str(outcome.get("error"))
    assert error.startswith(f"{name}: "), outcome
    assert f"(the bound: {BOUND[name]})" in error


def test_an_ebook_that_names_one_chapter_many_times_reads_it_once(bomb_dir: Path) -> None:
    outcome = parse_in_a_small_process(bomb_dir / "book.epub")
    assert outcome["chars"] < 1_100_000, outcome  # one chapter of about a megabyte
    assert any("more than once" in str(w) for w in outcome["warnings"])


def cli(tmp_path: Path, *args: str, **settings: str) -> dict[str, Any]:
    env = {"SHESHA_HOME": str(tmp_path / "home"), "SHESHA_SERVER": "off"}
    env |= {f"SHESHA_{k.upper()}": v for k, v in settings.items()}
    r = CliRunner().invoke(app, ["add", *args, "--json"], env=env)
    assert r.exit_code in (0, 1), r.output
    return dict(json.loads(r.output))


def test_an_add_stores_the_good_files_and_names_each_bomb_and_its_bound(
    bomb_dir: Path, tmp_path: Path
) -> None:
    good = tmp_path / "good.md"
    good.write_text("# A real document\nWith text.")
    out = cli(tmp_path, "p", str(good), *(str(bomb_dir / n) for n in BOMBS))
    assert [d["name"] for d in out["stored"]] == ["good.md"]
    failed = {Path(f["path"]).name: f["error"] for f in out["failed"]}
    assert set(failed) == set(BOMBS)
    for name, error in failed.items():
        assert f"(the bound: {BOUND[name]})" in error


def test_an_add_stops_at_its_bound_on_characters(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"part{i}.txt").write_text("word " * 2_000)
    out = cli(tmp_path, "p", *(str(tmp_path / f"part{i}.txt") for i in range(3)),
              max_add_chars="25000")  # fmt: skip
    assert len(out["stored"]) == 2
    (failure,) = out["failed"]
    assert "more than 25,000 characters" in failure["error"]


@pytest.fixture(scope="module")
def hungry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DOCX within the bounds (400 MB inflated) whose reading needs far more than
    256 MB of memory and several seconds."""
    path = tmp_path_factory.mktemp("hungry") / "hungry.docx"
    path.write_bytes(bombs.docx_bomb(400 * 2**20))
    return path


def test_what_no_bound_foresees_meets_the_workers_memory_limit(
    hungry: Path, tmp_path: Path
) -> None:
    good = tmp_path / "after.md"
    good.write_text("Parsed after the worker before it died.")
    out = cli(
        tmp_path, "p", str(hungry), str(good), parse_memory_mb="256", max_file_chars="1000000000"
    )
    assert [d["name"] for d in out["stored"]] == ["after.md"]
    (failure,) = out["failed"]
    assert "256 MB of memory" in failure["error"]


def test_a_file_that_takes_too_long_is_stopped(hungry: Path, tmp_path: Path) -> None:
    out = cli(tmp_path, "p", str(hungry), parse_timeout_s="1", max_file_chars="1000000000")
    (failure,) = out["failed"]
    assert "longer than 1 s" in failure["error"]


def test_an_upload_is_parsed_out_of_the_servers_process(
    bomb_dir: Path, sandboxes: SandboxPool, tmp_path: Path, hungry: Path
) -> None:
    with (
        Shesha(
            home=str(tmp_path / "home"),
            llm=FunctionModel(lambda m, x: "FINAL(x)"),
            sandboxes=sandboxes,
            parse_memory_mb=256,
            max_file_chars=1_000_000_000,
        ) as sh,
        RunningServer(sh) as url,
        httpx.Client(base_url=url, timeout=120) as http,
    ):
        files = [("files", ("hungry.docx", hungry.read_bytes())),
                 ("files", ("frames.gif", (bomb_dir / "frames.gif").read_bytes())),
                 ("files", ("fine.txt", b"A fine file."))]  # fmt: skip
        r = http.post("/api/projects/p/documents", files=files)
        assert r.status_code == 200, r.text
        body = r.json()
        assert [d["name"] for d in body["stored"]] == ["fine.txt"]
        errors = {Path(f["path"]).name: f["error"] for f in body["failed"]}
        assert "256 MB of memory" in errors["hungry.docx"]  # died in a worker, not here
        assert "(the bound: 2,000,000,000 pixels a file)" in errors["frames.gif"]
        assert http.get("/api/health").status_code == 200


SCRIPT = """
import sys, threading, time
from shesha import Shesha
print("ran", flush=True)
threading.Thread(target=time.sleep, args=(5,), daemon=True).start()  # a threaded caller
with Shesha(home=sys.argv[1]) as sh:
    report = sh.project("p").add([sys.argv[2]])
print("stored", [d.name for d in report.stored], report.failed, flush=True)
"""


def test_a_threaded_script_without_a_main_guard_is_not_run_again(tmp_path: Path) -> None:
    """Parsing workers of a threaded caller are fresh interpreters: nothing runs the
    caller's script a second time (multiprocessing's spawn and fork server would)."""
    script = tmp_path / "unguarded.py"
    script.write_text(SCRIPT)
    doc = tmp_path / "doc.md"
    doc.write_text("# A document")
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "home"), str(doc)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("ran") == 1, done.stdout
    assert "stored ['doc.md'] []" in done.stdout
