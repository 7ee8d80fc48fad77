"""The project store: identity, atomicity, concurrency and safe names."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tests.fixtures import make_pdf

from shesha import Shesha
from shesha.errors import NotFoundError, StorageError
from shesha.storage import AddProgress, ProjectStore


@pytest.fixture
def store(tmp_path: Path) -> ProjectStore:
    return ProjectStore(tmp_path / "home")


@pytest.fixture
def files(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    (d / "b.txt").write_text("bravo text")
    (d / "a.md").write_text("# alpha")
    (d / "sub" / "c.pdf").write_bytes(make_pdf(["Charlie page one text"]))
    (d / ".hidden").write_text("secret")
    (d / "sub" / "__pycache__").mkdir()
    (d / "sub" / "__pycache__" / "x.pyc").write_bytes(b"\x00")
    return d


def test_home_comes_from_shesha_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHESHA_HOME", str(tmp_path / "h"))
    assert Shesha().store.home == tmp_path / "h"


def test_add_a_directory_recursively_honouring_the_ignore_list(
    store: ProjectStore, files: Path
) -> None:
    p = store.create("proj")
    report = p.add([files])
    assert report.failed == []
    assert [d.name for d in report.stored] == ["a.md", "b.txt", "sub/c.pdf"]
    assert [r.name for r in p.documents_meta()] == ["a.md", "b.txt", "sub/c.pdf"]
    assert p.documents()[1] == ("b.txt", "bravo text\n")
    assert p.sizes() == [(name, len(text)) for name, text in p.documents()]
    assert p.documents_meta()[2].meta.pages == 1


def test_context_order_and_version_are_stable_and_content_based(
    tmp_path: Path, files: Path
) -> None:
    one = ProjectStore(tmp_path / "one").create("p")
    two = ProjectStore(tmp_path / "two").create("p")
    one.add([files / "b.txt", files / "a.md"])
    two.add([files / "a.md", files / "b.txt"])
    assert one.documents() == two.documents()
    assert one.version == two.version
    before = one.version
    (files / "b.txt").write_text("bravo changed")
    report = one.add([files / "b.txt"])
    assert report.stored[0].status == "replaced"
    assert one.version != before
    assert one.text("b.txt") == "bravo changed\n"
    assert len(list((one.docs_dir).glob("*.txt"))) == 2  # the old text is gone


def test_readding_unchanged_files_costs_only_their_hash(store: ProjectStore, files: Path) -> None:
    p = store.create("p")
    p.add([files])
    seen: list[AddProgress] = []
    report = p.add([files], on_progress=seen.append)
    assert {d.status for d in report.stored} == {"unchanged"}
    assert [e.done for e in seen] == [1, 2, 3]
    assert {e.total for e in seen} == {3}


def test_one_bad_file_never_aborts_the_batch(store: ProjectStore, tmp_path: Path) -> None:
    d = tmp_path / "mixed"
    d.mkdir()
    (d / "good.txt").write_text("fine")
    (d / "bad.pdf").write_bytes(b"%PDF-1.4 garbage")
    (d / "empty.txt").write_bytes(b"")
    (d / "good2.md").write_text("also fine")
    p = store.create("p")
    report = p.add([d, tmp_path / "missing.txt", str(tmp_path / "*.nomatch")], workers=2)
    assert [s.name for s in report.stored] == ["good.txt", "good2.md"]
    errors = {Path(f.path).name: f.error for f in report.failed}
    assert set(errors) == {"bad.pdf", "empty.txt", "missing.txt", "*.nomatch"}
    assert "damaged" in errors["bad.pdf"]
    assert "no such file" in errors["missing.txt"]
    assert not report.ok


def test_globs_add_matching_files(store: ProjectStore, files: Path) -> None:
    p = store.create("p")
    p.add([str(files / "*.txt")])
    assert [r.name for r in p.documents_meta()] == ["b.txt"]


def test_remove_a_document(store: ProjectStore, files: Path) -> None:
    p = store.create("p")
    p.add([files])
    p.remove("b.txt")
    assert [r.name for r in p.documents_meta()] == ["a.md", "sub/c.pdf"]
    with pytest.raises(StorageError, match=r"no document 'b\.txt'"):
        p.text("b.txt")


def test_projects_create_list_get_delete(store: ProjectStore) -> None:
    store.create("zeta")
    store.create("Ünïcode проект")
    assert store.list() == ["zeta", "Ünïcode проект"]
    with pytest.raises(StorageError, match="already exists"):
        store.create("zeta")
    store.delete("zeta")
    assert store.list() == ["Ünïcode проект"]
    with pytest.raises(StorageError, match="No project named 'zeta'"):
        store.get("zeta")


@pytest.mark.parametrize(
    "name", ["..", "../evil", "a/b", "/abs", ".hidden", "nul\x00x", "ctl\x07", "", " pad "]
)
def test_project_names_cannot_escape_the_data_directory(store: ProjectStore, name: str) -> None:
    with pytest.raises(StorageError, match="project name"):
        store.create(name)
    assert not (store.home.parent / "evil").exists()


@pytest.mark.parametrize(
    "name", ["../x.txt", "/etc/passwd", "a/../../b", "a//b", "./a", "C:\\x", "x\x00y", "a\\b"]
)
def test_document_names_cannot_escape(store: ProjectStore, name: str) -> None:
    p = store.create("p")
    with pytest.raises(StorageError, match="document name"):
        p.text(name)


def test_keep_originals(store: ProjectStore, files: Path) -> None:
    p = store.create("p")
    p.add([files / "b.txt"], keep_originals=True)
    original = p.documents_meta()[0].original
    assert original is not None
    assert (p.originals_dir / original).read_text() == "bravo text"


INGEST = """
import sys
from pathlib import Path
from shesha.storage import ProjectStore
p = ProjectStore(sys.argv[1]).get_or_create("p")
for round in range(int(sys.argv[3])):
    p.add([sys.argv[2]], workers=1)
    for f in Path(sys.argv[2]).iterdir():
        f.write_text(f.read_text() + "x")
"""


def _check_consistent(home: Path) -> int:
    p = ProjectStore(home).get("p")  # get() sweeps what a killed writer left
    docs = p.documents_meta()
    for r in docs:
        text = (p.docs_dir / r.text_file).read_bytes()
        assert hashlib.sha256(text).hexdigest() == r.text_sha256
    leftovers = [f.name for f in p.docs_dir.iterdir() if ".tmp-" in f.name]
    assert leftovers == []
    assert len(list(p.docs_dir.glob("*.txt"))) == len(docs)
    return len(docs)


def _wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def test_a_process_killed_mid_ingest_leaves_the_store_whole(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i:02d}.txt").write_text(f"document {i} " * 2000)
    home = tmp_path / "home"
    first_record = home / "projects" / "p" / "project.json"
    for delay in (0.0, 0.05, 0.15, 0.3, 0.6):
        proc = subprocess.Popen([sys.executable, "-c", INGEST, str(home), str(src), "1000"])
        _wait_for(first_record)  # the writer is running, however loaded the machine is
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        _check_consistent(home)
    # And a writer that is not killed stores every document.
    done = subprocess.run([sys.executable, "-c", INGEST, str(home), str(src), "1"], check=True)
    assert done.returncode == 0
    assert _check_consistent(home) == 20


ADDER = """
import sys
from shesha.storage import ProjectStore
store = ProjectStore(sys.argv[1])
p = store.get("p")
r = p.add([sys.argv[2]], workers=1)
assert not r.failed, r.failed
"""


def test_two_processes_adding_to_one_project_lose_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ProjectStore(home).create("p")
    dirs = []
    for who in ("left", "right"):
        d = tmp_path / who
        d.mkdir()
        for i in range(15):
            (d / f"{who}{i:02d}.txt").write_text(f"{who} {i}")
        dirs.append(d)
    procs = [subprocess.Popen([sys.executable, "-c", ADDER, str(home), str(d)]) for d in dirs]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    names = [r.name for r in ProjectStore(home).get("p").documents_meta()]
    assert len(names) == 30
    assert names == sorted(names)


def test_a_snapshot_is_what_one_query_sees_whatever_changes_after(
    store: ProjectStore, tmp_path: Path
) -> None:
    (tmp_path / "a.md").write_text("alpha")
    (tmp_path / "b.md").write_text("bravo")
    p = store.create("p")
    p.add([tmp_path / "a.md"])
    seen = p.snapshot()
    before = (seen.version, seen.sizes(), seen.documents())
    p.add([tmp_path / "b.md"])  # a document added while the query runs
    assert (seen.version, seen.sizes(), seen.documents()) == before
    assert p.snapshot().version == p.version != seen.version
    assert [n for n, _ in p.snapshot().documents()] == ["a.md", "b.md"]


def test_a_document_removed_under_a_snapshot_is_a_clear_error(
    store: ProjectStore, tmp_path: Path
) -> None:
    (tmp_path / "a.md").write_text("alpha")
    p = store.create("p")
    p.add([tmp_path / "a.md"])
    seen = p.snapshot()
    p.remove("a.md")
    with pytest.raises(StorageError, match="removed or replaced while a query"):
        seen.documents()


def test_a_snapshot_retrieves_from_its_own_documents(store: ProjectStore, tmp_path: Path) -> None:
    # Regression: the snapshot's passage index was the live one, so a document added
    # while a query ran showed up in its passages, and not in its version or documents.
    (tmp_path / "a.md").write_text("The harbour opened in 1871.")
    (tmp_path / "b.md").write_text("The zeppelin landed at dawn.")
    p = store.create("p")
    p.add([tmp_path / "a.md"])
    seen = p.snapshot()
    p.add([tmp_path / "b.md"])
    with seen.passage_index() as index:
        assert [h.passage.document for h in index.search("zeppelin")] == []
        assert [h.passage.document for h in index.search("harbour")] == ["a.md"]
    with p.passage_index() as index:
        assert [h.passage.document for h in index.search("zeppelin")] == ["b.md"]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_killed_writer_leaves_no_parse_worker_behind(tmp_path: Path) -> None:
    # Regression: a forked worker held its parent's end of their pipe, so when `shesha
    # add` was killed the worker waited on the pipe forever.
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i:02d}.txt").write_text(f"document {i} " * 2000)
    proc = subprocess.Popen(
        [sys.executable, "-c", INGEST, str(tmp_path / "home"), str(src), "1000"]
    )
    deadline = time.monotonic() + 60
    while not (workers := _children(proc.pid)):
        assert time.monotonic() < deadline, "the writer started no parse worker"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while alive := [w for w in workers if _running(w)]:
        if time.monotonic() > deadline:
            for w in alive:
                os.kill(w, signal.SIGKILL)
            raise AssertionError(f"parse workers {alive} outlived their killed parent")
        time.sleep(0.05)


# -- a project deleted while a handle to it is held (found by the API fuzz run) ---------


def _left(store: ProjectStore) -> list[str]:
    """What the projects folder holds, hidden entries (a delete's trash) aside."""
    return sorted(p.name for p in store.projects_dir.iterdir() if not p.name.startswith("."))


def test_a_handle_to_a_deleted_project_stores_nothing_and_leaves_nothing(
    store: ProjectStore, files: Path
) -> None:
    p = store.create("x")
    p.add([files / "a.md"])
    store.delete("x")
    for write in (
        lambda: p.add([files / "b.txt"]),
        lambda: p.remove("a.md"),
        p.documents,
        p.reindex,
    ):
        with pytest.raises(NotFoundError, match="'x'"):
            write()
        assert _left(store) == []  # no folder made again for it, not even the lock's
    again = store.create("x")  # the name is free: made anew, empty
    assert again.documents() == []


def test_a_project_is_made_over_a_folder_that_holds_no_project(store: ProjectStore) -> None:
    ghost = store.projects_dir / "x"
    (ghost / "docs").mkdir(parents=True)
    (ghost / ".lock").write_text("")  # what a writer left after a delete, before the fix
    assert store.create("x").documents() == []
    assert store.list() == ["x"]


def test_a_delete_during_an_add_leaves_no_project_behind(
    store: ProjectStore, tmp_path: Path
) -> None:
    many = tmp_path / "many"
    many.mkdir()
    for i in range(60):
        (many / f"n{i:02}.txt").write_text(f"note {i} " * 200)
    p = store.create("x")
    started, errors = threading.Event(), []

    def add() -> None:
        try:
            p.add([many], on_progress=lambda _: started.set())
        except NotFoundError as e:
            errors.append(e)

    adding = threading.Thread(target=add)
    adding.start()
    assert started.wait(30)
    store.delete("x")
    adding.join(60)
    assert not store.exists("x")
    assert _left(store) == []
    assert errors, "the add said the project went away"
    assert store.create("x").documents() == []
