"""A server reads files only under its allowed folders, through any link at any depth;
files named directly follow a folder's ignore rules, or are refused with a reason.

Each route below leads out of the allowed folder to the same secret: a link to it, a
relative link deep in subfolders, a chain of links, a linked folder. The routes are tried
over HTTP, over MCP and through the CLI's server backend; the secret must never be
stored, and every refusal must say why.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from typer.testing import CliRunner

from shesha import Shesha
from shesha.cli import app
from shesha.sandbox import SandboxPool
from shesha.server.mcp_tools import McpHub
from shesha.service import Service
from shesha.storage.inputs import OutsideRoots, read_inside
from shesha.storage.parsing import ParseJob, parse_all
from shesha.testing import FunctionModel, RunningServer

SECRET = "the secret beside the allowed folder"


def answer(messages: list[dict[str, Any]], model: str) -> str:
    return "FINAL(nothing)"


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """tmp_path/allowed (what the server may read) and, beside it, tmp_path/outside."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "a" / "b" / "c").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (outside / "more.md").write_text(SECRET)
    (allowed / "fine.txt").write_text("An ordinary document.")
    (allowed / "leak.txt").symlink_to(outside / "secret.txt")
    (allowed / "a" / "b" / "c" / "deep.txt").symlink_to("../../../../outside/secret.txt")
    (allowed / "hop1.txt").symlink_to("hop2.txt")
    (allowed / "hop2.txt").symlink_to(outside / "secret.txt")
    (allowed / "linked").symlink_to(outside)
    (allowed / "inside.txt").symlink_to("fine.txt")  # a link that stays inside: followed
    return allowed, outside


LEAKS = {"leak.txt", "a/b/c/deep.txt", "hop1.txt", "hop2.txt", "linked"}


def refused(failed: list[dict[str, Any]]) -> dict[str, str]:
    return {Path(f["path"]).name: f["error"] for f in failed}


def check(sh: Shesha, failed: list[dict[str, Any]]) -> None:
    project = sh.get_project("p")
    names = sorted(d.name for d in project.documents())
    assert names == ["fine.txt", "inside.txt"]
    for name in names:
        assert SECRET not in project.text(name)
    why = refused(failed)
    assert {"leak.txt", "deep.txt", "hop1.txt", "hop2.txt", "linked"} <= set(why)
    assert "outside the folders this server may read" in why["leak.txt"]
    assert "not followed into folders" in why["linked"]


@pytest.fixture
def sh(sandboxes: SandboxPool, tmp_path: Path) -> Iterator[Shesha]:
    with Shesha(home=str(tmp_path / "home"), llm=FunctionModel(answer), sandboxes=sandboxes) as s:
        yield s


def test_http_follows_no_link_out_of_the_allowed_folder(
    sh: Shesha, layout: tuple[Path, Path]
) -> None:
    allowed, _ = layout
    with (
        RunningServer(sh, allow_paths=[allowed]) as url,
        httpx.Client(base_url=url, timeout=60) as http,  # a busy machine answers late
    ):
        r = http.post("/api/projects/p/paths", json={"paths": [str(allowed)]})
        assert r.status_code == 200, r.text
        check(sh, r.json()["failed"])
        for direct in ("leak.txt", "linked", "a/b/c/deep.txt"):  # named directly: refused
            r = http.post("/api/projects/p/paths", json={"paths": [str(allowed / direct)]})
            assert r.status_code == 403, r.text
    assert sorted(d.name for d in sh.get_project("p").documents()) == ["fine.txt", "inside.txt"]


def test_mcp_follows_no_link_out_of_the_allowed_folder(
    sh: Shesha, layout: tuple[Path, Path]
) -> None:
    allowed, _ = layout
    hub = McpHub(Service(sh, roots=[allowed]))

    async def go() -> dict[str, Any]:
        async with Client(hub.server) as client:
            asked = {"project": "p", "paths": [str(allowed)]}
            result = await client.call_tool("add_documents", asked)
            assert not result.is_error, result.content
            assert isinstance(result.structured_content, dict)
            return dict(result.structured_content)

    report = asyncio.run(go())
    check(sh, report["failed"])


def test_the_clis_server_backend_follows_no_link_out(
    sh: Shesha, layout: tuple[Path, Path], tmp_path: Path
) -> None:
    allowed, _ = layout
    with RunningServer(sh, allow_paths=[allowed]) as url:
        r = CliRunner().invoke(
            app, ["add", "p", str(allowed), "--server", url, "--json"],
            env={"SHESHA_HOME": str(tmp_path / "cli-home")},
        )  # fmt: skip
    assert r.exit_code == 1, r.output  # some inputs were refused
    check(sh, json.loads(r.output)["failed"])


def test_in_process_a_folders_links_stay_in_that_folder(
    layout: tuple[Path, Path], tmp_path: Path
) -> None:
    allowed, _ = layout
    env = {"SHESHA_HOME": str(tmp_path / "home"), "SHESHA_SERVER": "off"}
    r = CliRunner().invoke(app, ["add", "p", str(allowed), "--json"], env=env)
    assert r.exit_code == 1, r.output
    out = json.loads(r.output)
    assert sorted(d["name"] for d in out["stored"]) == ["fine.txt", "inside.txt"]
    why = refused(out["failed"])
    assert "outside the folder" in why["leak.txt"]
    # named by the user, a link is theirs to follow
    direct = CliRunner().invoke(app, ["add", "p", str(allowed / "leak.txt"), "--json"], env=env)
    assert direct.exit_code == 0, direct.output


@pytest.mark.parametrize("name", [".env", "notes~", ".hidden/doc.txt"])
def test_a_file_named_directly_follows_the_ignore_rules_or_is_refused_with_why(
    tmp_path: Path, name: str
) -> None:
    target = tmp_path / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("API_KEY=do-not-store")
    env = {"SHESHA_HOME": str(tmp_path / "home"), "SHESHA_SERVER": "off"}
    r = CliRunner().invoke(app, ["add", "p", str(target), "--json"], env=env)
    out = json.loads(r.output)
    if name.startswith(".hidden"):  # the file's own name is fine; only its folder is hidden
        assert [d["name"] for d in out["stored"]] == ["doc.txt"]
        return
    assert r.exit_code == 1
    assert out["stored"] == []
    (failure,) = out["failed"]
    assert "left out by the rule" in failure["error"]
    assert "rename" in failure["error"]


def test_a_path_rewritten_after_its_check_is_not_read(tmp_path: Path) -> None:
    """The check and the read are apart (a parse may wait minutes behind OCR): a folder on
    a checked path swapped for a link to elsewhere, then read, is refused."""
    allowed = tmp_path / "allowed"
    (allowed / "sub").mkdir(parents=True)
    (allowed / "sub" / "doc.txt").write_text("checked")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "doc.txt").write_text(SECRET)
    checked = allowed / "sub" / "doc.txt"
    assert read_inside(checked, [allowed]) == b"checked"
    (allowed / "sub" / "doc.txt").unlink()
    (allowed / "sub").rmdir()
    (allowed / "sub").symlink_to(outside)  # the race an attacker with write access runs
    with pytest.raises(OutsideRoots):
        read_inside(checked, [allowed])
    outcomes = dict(parse_all([("doc", ParseJob(str(checked), roots=(str(allowed),)))], 1))
    assert "outside the allowed folders" in str(outcomes["doc"])
    (allowed / "link.txt").symlink_to(outside / "doc.txt")
    with pytest.raises(OSError, match="Too many levels of symbolic links"):  # not followed
        read_inside(allowed / "link.txt", [allowed])
