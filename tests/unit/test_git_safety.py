"""A repository is data: reading one runs nothing it names, follows none of its links,
and an update applies its deletions.

Every attack here is a repository made with git on this machine, whose own configuration
(``.git/config``, an included file, its hooks) or attributes name a program that leaves a
mark when it runs. Shesha reads the repository (add, then an update after a new commit)
and no mark may appear; the stored text must be the committed bytes, unconverted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.fixtures import git
from typer.testing import CliRunner, Result

from shesha.cli import app
from shesha.storage import gitrepo


def cli(tmp_path: Path, *args: str) -> Result:
    env = {"SHESHA_HOME": str(tmp_path / "home"), "SHESHA_SERVER": "off"}
    return CliRunner().invoke(app, list(args), env=env)


def stored_text(tmp_path: Path, project: str, name: str) -> str:
    r = cli(tmp_path, "docs", project, "--show", name, "--json")
    assert r.exit_code == 0, r.output
    return str(json.loads(r.output)["text"])


def program(tmp_path: Path, name: str) -> str:
    """A program that leaves ``ran-<name>`` in tmp_path, then passes its input on."""
    script = tmp_path / f"evil-{name}.sh"
    script.write_text(f"#!/bin/sh\ntouch {tmp_path}/ran-{name}\ncat\n")
    script.chmod(0o755)
    return str(script)


def marks(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.glob("ran-*"))


TEXT = "Invoices are due in 30 days. $Id$ $Format:%H$\n"


def arm(repo: Path, tmp_path: Path, route: str) -> None:
    """Set up one way for a repository to run a program when it is read."""
    config = repo / ".git" / "config"
    evil = program(tmp_path, route)
    if route == "smudge filter":
        git(repo, "config", "filter.evil.smudge", evil)
        git(repo, "config", "filter.evil.required", "true")
    elif route == "long-running filter":
        git(repo, "config", "filter.evil.process", evil)
    elif route == "textconv":
        git(repo, "config", "diff.evil.textconv", evil)
    elif route == "external diff":
        git(repo, "config", "diff.external", evil)
    elif route == "fsmonitor":
        git(repo, "config", "core.fsmonitor", evil)
    elif route == "hooks":
        hooks = repo / ".git" / "hooks"
        for hook in ("post-index-change", "post-checkout", "reference-transaction",
                     "pre-auto-gc", "post-merge"):  # fmt: skip
            (hooks / hook).write_text(f"#!/bin/sh\ntouch {tmp_path}/ran-{route}\n")
            (hooks / hook).chmod(0o755)
    elif route == "hooks path":
        elsewhere = tmp_path / "hooks"
        elsewhere.mkdir()
        for hook in ("post-index-change", "post-checkout", "reference-transaction"):
            (elsewhere / hook).write_text(f"#!/bin/sh\ntouch {tmp_path}/ran-{route}\n")
            (elsewhere / hook).chmod(0o755)
        git(repo, "config", "core.hooksPath", str(elsewhere))
    elif route == "included config":
        included = tmp_path / "included.config"
        included.write_text(f'[filter "evil"]\n\tsmudge = {evil}\n[core]\n\tfsmonitor = {evil}\n')
        with config.open("a") as f:
            f.write(f"[include]\n\tpath = {included}\n")
    elif route == "pager":
        git(repo, "config", "core.pager", evil)
        git(repo, "config", "pager.diff", evil)


ROUTES = [
    "smudge filter", "long-running filter", "textconv", "external diff", "fsmonitor",
    "hooks", "hooks path", "included config", "pager",
]  # fmt: skip


@pytest.mark.parametrize("route", ROUTES)
def test_reading_a_repository_runs_nothing_it_names(tmp_path: Path, route: str) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "notes.md").write_text(TEXT)
    (repo / "other.md").write_text("Second file.\n")
    (repo / ".gitattributes").write_text("*.md filter=evil diff=evil ident export-subst\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    arm(repo, tmp_path, route)

    first = cli(tmp_path, "add", "p", str(repo), "--json")
    assert first.exit_code == 0, first.output
    assert stored_text(tmp_path, "p", "notes.md") == TEXT  # no filter, no $Id$, no $Format$

    (repo / "notes.md").write_text(TEXT + "A new line.\n")
    (repo / "other.md").unlink()
    config = repo / ".git" / "config"
    armed = config.read_bytes()
    config.write_text("[core]\n\trepositoryformatversion = 0\n\tbare = false\n")
    git(repo, "-c", "core.hooksPath=/dev/null", "commit", "-q", "-a", "-m", "second")
    config.write_bytes(armed)  # our own commit ran none of it; shesha's reads come next
    assert marks(tmp_path) == []

    again = cli(tmp_path, "add", "p", "--update", "--json")
    assert again.exit_code == 0, again.output
    assert stored_text(tmp_path, "p", "notes.md") == TEXT + "A new line.\n"
    assert marks(tmp_path) == []


def test_links_in_a_repository_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("a secret beside the repository\n")
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "real.md").write_text("A real document.\n")
    (repo / "passwd.md").symlink_to("/etc/passwd")
    (repo / "beside.md").symlink_to("../outside.txt")
    (repo / "etc").symlink_to("/etc")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "links")

    r = cli(tmp_path, "add", "p", str(repo), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert [d["name"] for d in out["stored"]] == ["real.md"]
    skipped = out["repositories"][0]["skipped"]
    assert skipped["passwd.md"] == "symbolic link (to /etc/passwd)"
    assert skipped["beside.md"] == "symbolic link (to ../outside.txt)"
    assert skipped["etc"] == "symbolic link (to /etc)"
    listed = cli(tmp_path, "docs", "p", "--json")
    assert [d["name"] for d in json.loads(listed.output)["docs"]] == ["real.md"]


@pytest.mark.parametrize("again", [["--update"], []], ids=["add-update", "add-again"])
def test_a_deleted_file_leaves_the_project_when_its_repository_is_read_again(
    tmp_path: Path, again: list[str]
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "a.md").write_text("Alpha.\n")
    (repo / "b.md").write_text("Beta.\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    assert cli(tmp_path, "add", "p", str(repo)).exit_code == 0
    git(repo, "rm", "-q", "b.md")
    git(repo, "commit", "-q", "-m", "drop b")

    r = cli(tmp_path, "add", "p", str(repo), *again, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["repositories"][0]["removed"] == ["b.md"]
    listed = cli(tmp_path, "docs", "p", "--json")
    assert [d["name"] for d in json.loads(listed.output)["docs"]] == ["a.md"]
    human = cli(tmp_path, "add", "p", str(repo), *again)
    assert "removed" not in human.output  # nothing more to remove, and nothing else moved


def _repo_with_big_files(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for i in range(3):
        # past any pipe buffer; a document's suffix, so that size does not leave it out
        (repo / f"big{i}.pdf").write_bytes(bytes([65 + i]) * (4 << 20))
    (repo / "small.md").write_text("Small.\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "big")
    return repo


@pytest.mark.timeout(60)
def test_a_reader_that_stops_early_does_not_leave_git_blocked(tmp_path: Path) -> None:
    repo = _repo_with_big_files(tmp_path)
    with gitrepo.checkout(str(repo), None) as checkout:
        selection = gitrepo.select(checkout, gitrepo.committed_files(checkout))
        blobs = gitrepo._batch(checkout, selection.objects)
        _, size, stream = next(blobs)
        assert size == 4 << 20
        assert stream.read(10) == bytes([65]) * 10
        blobs.close()  # git has megabytes left to write: it must not hold this up


def test_a_file_that_cannot_be_written_is_left_out_alone(tmp_path: Path) -> None:
    repo = _repo_with_big_files(tmp_path)
    into = tmp_path / "export"
    (into / "big1.pdf").mkdir(parents=True)  # as a clash on a case-insensitive disk would
    with gitrepo.checkout(str(repo), None) as checkout:
        selection = gitrepo.select(checkout, gitrepo.committed_files(checkout))
        failed = gitrepo.export(checkout, selection, into)
    assert set(failed) == {"big1.pdf"}
    assert (into / "small.md").read_text() == "Small.\n"
    assert (into / "big2.pdf").stat().st_size == 4 << 20
