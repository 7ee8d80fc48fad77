"""The web page's main paths, in Chromium, against a server on 127.0.0.1 whose model is a
FunctionModel and whose sandboxes are the runner as local processes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from shesha import Shesha
from shesha.llm.types import Message
from shesha.sandbox import SandboxPool
from shesha.testing import FunctionModel, RunningServer
from tests.browser.conftest import shot

pytestmark = pytest.mark.browser

SUBCALL = "You follow one instruction"
XSS = 'Renewal notes <script>alert("doc")</script> <img src=x onerror="alert(\'img\')"> end.'


def model(messages: list[Message], name: str) -> str:
    """Looks, reads with sub-calls, waits a little (so the steps can be watched), answers."""
    if messages[0]["content"].startswith(SUBCALL):
        return "read: " + messages[-1]["content"][-60:]
    question = messages[1]["content"]
    step = sum(1 for m in messages if m["role"] == "assistant")
    if "forever" in question:
        return "```repl\nimport time\ntime.sleep(60)\n```"
    if step == 0:
        return (
            "```repl\nprint(doc_names)\nnotes = llm_query_batched('Summarise', "
            "[t[:300] for t in context])\nprint(len(notes))\n```"
        )
    if step == 1:
        return "```repl\nimport time\ntime.sleep(1.0)\nprint(context[0])\n```"
    return "FINAL(The lease renews every year.)"


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "lease.txt").write_text("This lease will renew every year on 1 May. " + XSS)
    (folder / "notes.md").write_text("# Notes\nNothing else here.")
    return folder


@pytest.fixture
def site(sandboxes: SandboxPool, docs: Path, tmp_path: Path) -> Iterator[Callable[..., str]]:
    opened: list[tuple[RunningServer, Shesha]] = []

    def start(token: str | None = None) -> str:
        sh = Shesha(home=str(tmp_path / "home"), llm=FunctionModel(model), sandboxes=sandboxes)
        sh.project("contracts").add([docs])
        server = RunningServer(sh, token=token, allow_paths=[tmp_path])
        url = server.__enter__()
        opened.append((server, sh))
        return url

    yield start
    for server, sh in opened:
        server.__exit__(None, None, None)
        sh.close()


def no_dialogs(page: Page) -> list[str]:
    seen: list[str] = []

    def on_dialog(dialog: Any) -> None:
        seen.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return seen


def ask(page: Page, url: str, question: str) -> None:
    page.goto(f"{url}/p/contracts")
    page.fill("#question", question)
    page.click("#ask button[type=submit]")
    page.wait_for_url("**/q/*")


def test_projects_and_adding_a_document_by_upload(
    page: Page, site: Callable[..., str], tmp_path: Path
) -> None:
    url = site()
    page.goto(url)
    expect(page.get_by_role("link", name="contracts")).to_be_visible()
    shot(page, "projects")
    page.get_by_role("link", name="contracts").click()
    (tmp_path / "memo.txt").write_text("A memo about the lease.")
    (tmp_path / "empty.txt").write_text("")
    page.set_input_files("#files", [str(tmp_path / "memo.txt"), str(tmp_path / "empty.txt")])
    page.click("#upload button[type=submit]")
    result = page.locator("#upload-result")
    expect(result).to_contain_text("1 stored, 1 failed")
    expect(result).to_contain_text("empty.txt")
    expect(result).to_contain_text("hint:")
    expect(page.locator("#upload-progress")).to_have_attribute("value", "100")
    page.reload()
    expect(page.get_by_role("link", name="memo.txt")).to_be_visible()
    shot(page, "project")


def test_asking_shows_the_steps_as_they_arrive_then_the_answer(
    page: Page, site: Callable[..., str]
) -> None:
    url = site()
    dialogs = no_dialogs(page)
    ask(page, url, "Which contracts renew automatically?")
    first_step = page.locator("#steps li").first
    expect(first_step).to_contain_text("print(doc_names)")
    expect(page.locator("#answer")).to_be_hidden()  # step 2 is still sleeping
    expect(page.locator("#answer-text")).to_have_text(
        "The lease renews every year.", timeout=30_000
    )
    expect(page.locator("#state")).to_have_text("success")
    expect(page.locator("#t-subs")).to_have_text("2")
    expect(page.locator("#steps")).to_contain_text('<script>alert("doc")</script>')  # as text
    shot(page, "run")
    assert dialogs == []


def test_a_run_is_cancelled_from_its_page(page: Page, site: Callable[..., str]) -> None:
    url = site()
    ask(page, url, "search forever")
    expect(page.locator("#steps li").first).to_contain_text("time.sleep(60)")
    started = time.monotonic()
    page.click("#cancel")
    expect(page.locator("#state")).to_have_text("cancelled", timeout=10_000)
    assert time.monotonic() - started < 10
    expect(page.locator("#cancel")).to_be_disabled()


def test_a_trace_with_its_charts_and_two_traces_compared(
    page: Page, site: Callable[..., str]
) -> None:
    url = site()
    dialogs = no_dialogs(page)
    for question in ("Which contracts renew?", "Which contracts renew, again?"):
        ask(page, url, question)
        expect(page.locator("#state")).to_have_text("success", timeout=30_000)
    page.click("#trace-link a")
    expect(page.locator("svg.chart")).to_have_count(3)
    expect(page.locator("figcaption")).to_contain_text(
        ["Tokens per step", "Time per step", "Sub-calls per step"]
    )
    expect(page.locator(".answer")).to_contain_text("The lease renews every year.")
    expect(page.locator(".step").nth(1)).to_contain_text("<img src=x onerror=\"alert('img')\">")
    shot(page, "trace")
    page.get_by_role("link", name="Compare with another trace").click()
    options = page.locator("#b option")
    page.select_option("#b", options.nth(1).get_attribute("value"))
    page.click("form button[type=submit]")
    # Step 0 (the engine's choice of strategy), then the 3 steps of the model.
    expect(page.locator("table.pairs tbody tr")).to_have_count(4)
    expect(page.locator(".compare .side")).to_have_count(2)
    shot(page, "compare")
    assert dialogs == []


def test_document_text_with_script_and_onerror_shows_as_text_and_never_runs(
    page: Page, site: Callable[..., str]
) -> None:
    url = site()
    dialogs = no_dialogs(page)
    page.goto(f"{url}/p/contracts/doc/lease.txt")
    expect(page.locator("pre.doc")).to_contain_text('<script>alert("doc")</script>')
    expect(page.locator("pre.doc")).to_contain_text("onerror")
    assert page.locator("pre.doc img, pre.doc script").count() == 0
    page.wait_for_timeout(500)  # an onerror would fire by now
    assert dialogs == []
    shot(page, "document")


def test_a_token_sends_the_browser_to_sign_in(page: Page, site: Callable[..., str]) -> None:
    url = site(token="s3cret")
    page.goto(url)
    expect(page).to_have_url(f"{url}/login")
    page.fill("#token", "wrong")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_contain_text("not right")
    page.fill("#token", "s3cret")
    page.click("button[type=submit]")
    expect(page.get_by_role("link", name="contracts")).to_be_visible()
    ask(page, url, "Which contracts renew?")  # the live stream works with the cookie
    expect(page.locator("#state")).to_have_text("success", timeout=30_000)


def test_a_base64_token_signs_in_once_and_stays_signed_in(
    page: Page, site: Callable[..., str]
) -> None:
    """The cookie comes back quoted for such a token; it must still be the token."""
    token = "Zm9vL2Jhcis9PQ=="
    url = site(token=token)
    page.goto(url)
    page.fill("#token", token)
    page.click("button[type=submit]")
    expect(page.get_by_role("link", name="contracts")).to_be_visible()
    page.goto(url)
    expect(page).to_have_url(f"{url}/")


def test_phone_sized_and_keyboard_only(page: Page, site: Callable[..., str]) -> None:
    url = site()
    page.set_viewport_size({"width": 390, "height": 800})
    page.goto(f"{url}/p/contracts")
    page.keyboard.press("Tab")
    expect(page.locator("a.skip")).to_be_focused()
    page.focus("#question")
    page.keyboard.type("Which contracts renew?")
    page.keyboard.press("Tab")  # the "Model and limits" summary
    page.keyboard.press("Tab")  # the Ask button
    page.keyboard.press("Enter")
    page.wait_for_url("**/q/*")
    expect(page.locator("#state")).to_have_text("success", timeout=30_000)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400  # nothing makes the page itself scroll sideways
    shot(page, "phone")


def test_shesha_view_shows_a_trace_file_from_disk(page: Page) -> None:
    folder = Path(__file__).parents[2] / "docs/results/sniah-qwen2.5-coder-1.5b/before-5611237"
    path = sorted((folder / "traces").glob("*.jsonl"))[0]  # a version 1 trace
    shesha = str(Path(sys.executable).with_name("shesha"))
    viewer = subprocess.Popen(
        [shesha, "view", str(path)], stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert viewer.stderr is not None
        line = viewer.stderr.readline()
        url = line.split(" at ")[1].split(" ")[0]
        page.goto(url)
        expect(page.locator("h1")).to_contain_text("special magic number")
        expect(page.locator("svg.chart")).to_have_count(3)
        expect(page.locator(".step").first).to_contain_text("Step 1")
    finally:
        viewer.terminate()
        viewer.wait(timeout=10)
