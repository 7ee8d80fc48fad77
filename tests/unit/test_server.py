"""`shesha serve`'s HTTP API, for real on 127.0.0.1: a FunctionModel answers, the runner
runs as local processes. Every request goes over loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from shesha import Shesha
from shesha.cli import app as cli_app
from shesha.errors import ConfigError
from shesha.llm.types import Message
from shesha.sandbox import SandboxPool
from shesha.server.security import check_bind, is_loopback
from shesha.testing import FunctionModel, RunningServer

SUBCALL = "You follow one instruction"
SECRET = "sk-secret-never-shown-123"


def steps(*replies: str) -> Callable[[list[Message], str], str]:
    """Root replies by step (the number of assistant turns so far); sub-calls echo."""

    def fn(messages: list[Message], model: str) -> str:
        if messages[0]["content"].startswith(SUBCALL):
            return "sub-answer"
        step = sum(1 for m in messages if m["role"] == "assistant")
        return replies[min(step, len(replies) - 1)]

    return fn


LOOK_THEN_ANSWER = steps("```repl\nprint(doc_names)\n```", "FINAL(Maria Lopez)")


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "acme.txt").write_text("The CEO of Acme is Maria Lopez.")
    (folder / "notes.md").write_text("# Notes\nNothing else.")
    return folder


class Server:
    def __init__(self, url: str, sh: Shesha, token: str | None) -> None:
        self.url, self.sh = url, sh
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=30)

    def ask(self, project: str, question: str = "Who is the CEO?", **body: Any) -> dict[str, Any]:
        r = self.http.post(f"/api/projects/{project}/queries", json={"question": question, **body})
        assert r.status_code == 202, r.text
        return dict(r.json())

    def events(self, query_id: str) -> list[dict[str, Any]]:
        with self.http.stream("GET", f"/api/queries/{query_id}/events", timeout=60) as r:
            return [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]


@pytest.fixture
def serve(sandboxes: SandboxPool, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    stack: list[tuple[RunningServer, Shesha]] = []

    def start(fn: Any = LOOK_THEN_ANSWER, token: str | None = None, **kwargs: Any) -> Server:
        sh = Shesha(
            home=str(tmp_path / "home"),
            llm=FunctionModel(fn),
            sandboxes=sandboxes,
            pool_size=kwargs.pop("pool_size", 2),
            allow_endpoint_overrides=kwargs.pop("allow_endpoint_overrides", False),
        )
        server = RunningServer(sh, token=token, allow_paths=[tmp_path], **kwargs)
        url = server.__enter__()
        stack.append((server, sh))
        return Server(url, sh, token)

    yield start
    for server, sh in reversed(stack):
        server.__exit__(None, None, None)
        sh.close()


def test_projects_documents_and_a_query_streamed_as_events(
    serve: Callable[..., Server], docs: Path
) -> None:
    s = serve()
    assert s.http.get("/api/health").json()["service"] == "shesha"
    added = s.http.post("/api/projects/acme/paths", json={"paths": [str(docs)]}).json()
    assert [d["name"] for d in added["stored"]] == ["acme.txt", "notes.md"]
    assert [p["name"] for p in s.http.get("/api/projects").json()["projects"]] == ["acme"]
    page = s.http.get("/api/projects/acme/documents/acme.txt/text", params={"limit": 10}).json()
    assert (page["text"], page["next_offset"], page["total_chars"]) == ("The CEO of", 10, 32)
    started = s.ask("acme")
    events = s.events(started["id"])
    kinds = [e["type"] for e in events]
    assert kinds[0] == "started"
    assert {"llm_response", "code", "exec_result", "final", "summary"} <= set(kinds)
    assert kinds[-1] == "done"
    assert events[-1]["result"]["answer"] == "Maria Lopez"
    assert "messages" not in next(e for e in events if e["type"] == "llm_request")
    done = s.http.get(f"/api/queries/{started['id']}").json()
    assert (done["state"], done["result"]["status"]) == ("done", "success")
    traces = s.http.get("/api/projects/acme/traces").json()["traces"]
    assert traces[0]["answer"] == "Maria Lopez"
    shown = s.http.get(f"/api/projects/acme/traces/{traces[0]['name']}").json()
    assert shown["header"]["question"] == "Who is the CEO?"


def test_errors_are_json_with_the_clis_message_and_hint(serve: Callable[..., Server]) -> None:
    s = serve()
    missing = s.http.get("/api/projects/nope")
    assert missing.status_code == 404
    body = missing.json()
    assert body["kind"] == "NotFoundError"
    assert body["error"].startswith("No project named 'nope'")
    assert "shesha projects list" in body["hint"]
    s.http.post("/api/projects/p")
    bad = s.http.post("/api/projects/p/queries", json={"question": "q", "max_iterations": 0})
    assert (bad.status_code, bad.json()["kind"]) == (422, "RequestValidationError")
    assert "max_iterations" in bad.json()["error"]
    unknown = s.http.post("/api/projects/p/queries", json={"question": "q", "frobnicate": 1})
    assert unknown.status_code == 422
    assert "frobnicate: not an option" in unknown.json()["error"]
    assert "max_iterations" in unknown.json()["hint"]  # the options it takes
    empty = s.http.post("/api/projects/p/queries", json={})
    assert empty.status_code == 422
    assert "question" in empty.json()["error"]


def test_add_by_path_is_limited_to_the_allowed_directories(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    s = serve()
    r = s.http.post("/api/projects/p/paths", json={"paths": ["/etc/hostname"]})
    assert r.status_code == 403
    assert "--allow-path" in r.json()["hint"]
    escape = s.http.post("/api/projects/p/paths", json={"paths": [str(tmp_path / ".." / "x")]})
    assert escape.status_code == 403
    glob = s.http.post("/api/projects/p/paths", json={"paths": [str(tmp_path / "*.txt")]})
    assert glob.status_code == 403


def test_uploads_keep_relative_names_and_are_bounded(serve: Callable[..., Server]) -> None:
    s = serve(max_upload_mb=1)
    files = [
        ("files", ("notes/call.md", b"Call notes.")),
        ("files", ("a.txt", b"alpha")),
    ]
    r = s.http.post("/api/projects/up/documents", files=files)
    assert r.status_code == 200, r.text
    assert sorted(d["name"] for d in r.json()["docs"]) == ["a.txt", "notes/call.md"]
    big = s.http.post("/api/projects/up/documents", files=[("files", ("b.txt", b"x" * 2**21))])
    assert big.status_code == 413
    assert big.json()["kind"] == "PayloadTooLarge"
    sneaky = s.http.post("/api/projects/up/documents", files=[("files", ("../x.txt", b"x"))])
    assert sneaky.status_code == 400
    assert sorted(d["name"] for d in s.http.get("/api/projects/up/documents").json()["docs"]) == [
        "a.txt",
        "notes/call.md",
    ]


def test_upload_names_are_refused_with_a_reason_never_a_500_or_a_silent_drop(
    serve: Callable[..., Server],
) -> None:
    s = serve()
    files = [
        ("files", (".env", b"API_KEY=x")),
        ("files", ("notes~", b"backup")),
        ("files", ("__pycache__/x.txt", b"cache")),
        ("files", ("a", b"a file")),
        ("files", ("a/b.txt", b"a file inside a file")),
        ("files", ("c.txt", b"first")),
        ("files", ("c.txt", b"second")),
        ("files", ("ok.md", b"fine")),
    ]
    r = s.http.post("/api/projects/up/documents", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert sorted(d["name"] for d in body["stored"]) == ["a", "c.txt", "ok.md"]
    why = {f["path"]: f["error"] for f in body["failed"]}
    assert set(why) == {".env", "notes~", "__pycache__/x.txt", "a/b.txt", "c.txt"}
    assert "left out by the rule '.*'" in why[".env"]
    assert "clashes" in why["a/b.txt"]
    assert "twice" in why["c.txt"]
    assert s.sh.get_project("up").text("c.txt").strip() == "first"
    for bad in ("x" * 300 + ".txt", "é" * 200, "../up.txt", "/abs.txt", "a\\b.txt"):
        r = s.http.post(
            "/api/projects/up2/documents",
            files=[("files", ("fine.txt", b"fine")), ("files", (bad, b"x"))],
        )
        assert r.status_code == 400, (bad, r.text)
        assert "refused" in r.json()["error"]
    assert "up2" not in s.sh.projects()  # a refused upload stores nothing, not even fine.txt


def test_a_running_query_is_cancelled_at_once_and_its_sandbox_freed(
    serve: Callable[..., Server], docs: Path
) -> None:
    s = serve(steps("```repl\nimport time\ntime.sleep(60)\n```", "FINAL(done)"))
    s.http.post("/api/projects/acme/paths", json={"paths": [str(docs)]})
    started = s.ask("acme")
    seen: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: seen.extend(s.events(started["id"])))
    reader.start()
    for _ in range(100):
        if s.http.get(f"/api/queries/{started['id']}").json()["events"] >= 4:
            break
        time.sleep(0.05)
    t0 = time.monotonic()
    s.http.post(f"/api/queries/{started['id']}/cancel")
    reader.join(timeout=10)
    assert time.monotonic() - t0 < 5
    assert seen[-1]["type"] == "cancelled"
    assert s.http.get(f"/api/queries/{started['id']}").json()["state"] == "cancelled"
    stats = s.sh.sandboxes().stats()  # type: ignore[attr-defined]
    assert stats.busy == 0


def test_more_queries_than_slots_wait_in_a_fair_line(
    serve: Callable[..., Server], docs: Path
) -> None:
    s = serve(
        steps("```repl\nimport time\ntime.sleep(0.5)\nprint(1)\n```", "FINAL(ok)"), pool_size=1
    )
    s.http.post("/api/projects/acme/paths", json={"paths": [str(docs)]})
    runs = [s.ask("acme", f"question {i}") for i in range(3)]
    streams = [s.events(r["id"]) for r in runs]
    positions = [[e["position"] for e in events if e["type"] == "queued"] for events in streams]
    assert positions[0] == []
    assert positions[1][0] == 1
    assert positions[2][:2] == [2, 1]
    finished = [s.http.get(f"/api/queries/{r['id']}").json() for r in runs]
    assert [f["state"] for f in finished] == ["done"] * 3
    starts = [f["started"] for f in finished]
    assert starts == sorted(starts)  # first come, first served


def test_a_query_that_breaks_does_not_break_the_others(
    serve: Callable[..., Server], docs: Path
) -> None:
    def fn(messages: list[Message], model: str) -> str:
        if "explode" in messages[1]["content"]:
            raise RuntimeError("the model exploded")
        return LOOK_THEN_ANSWER(messages, model)

    s = serve(fn)
    s.http.post("/api/projects/acme/paths", json={"paths": [str(docs)]})
    bad = s.events(s.ask("acme", "explode, please")["id"])
    assert bad[-1]["type"] == "failed"
    assert "the model exploded" in bad[-1]["error"]
    good = s.events(s.ask("acme")["id"])
    assert good[-1]["result"]["answer"] == "Maria Lopez"


def test_a_token_guards_every_route_but_health(serve: Callable[..., Server]) -> None:
    s = serve(token="t0ken")
    bare = httpx.Client(base_url=s.url, timeout=10)
    assert bare.get("/api/health").status_code == 200
    for method, path in (("GET", "/api/projects"), ("GET", "/api/status"), ("POST", "/mcp/")):
        r = bare.request(method, path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
    assert bare.get("/api/projects", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert s.http.get("/api/projects").status_code == 200


def test_api_keys_never_appear_in_responses_events_or_traces(
    serve: Callable[..., Server], docs: Path
) -> None:
    s = serve(allow_endpoint_overrides=True)  # else a request may not give a key at all
    s.http.post("/api/projects/acme/paths", json={"paths": [str(docs)]})
    started = s.ask("acme", api_key=SECRET)
    events = s.events(started["id"])
    run = s.http.get(f"/api/queries/{started['id']}").text
    trace = s.http.get("/api/projects/acme/traces").json()["traces"][0]
    shown = s.http.get(f"/api/projects/acme/traces/{trace['name']}").text
    everything = json.dumps(started) + json.dumps(events) + run + shown
    assert SECRET not in everything
    assert SECRET not in Path(trace["path"]).read_text()


def test_with_a_token_the_server_answers_for_any_host_name(serve: Callable[..., Server]) -> None:
    """A server that listens beyond loopback is reached by another name than 127.0.0.1;
    with its token it answers (without one it listens on loopback and stops DNS
    rebinding by the Host header)."""
    s = serve(token="t0ken")
    remote = {"Host": "shesha.example:7733", "Authorization": "Bearer t0ken"}
    assert httpx.get(f"{s.url}/api/projects", headers=remote).status_code == 200
    assert httpx.get(f"{s.url}/api/projects", headers={"Host": "shesha.example"}).status_code == 401
    open_ = serve()
    rebound = httpx.get(f"{open_.url}/api/projects", headers={"Host": "evil.example"})
    assert rebound.status_code == 421


@pytest.mark.parametrize("token", ["Zm9vL2Jhcis9PQ==", 'a"b;c d\\e', "plain-token"])
def test_the_login_cookie_round_trips_whatever_the_token(
    serve: Callable[..., Server], token: str
) -> None:
    s = serve(token=token)
    browser = httpx.Client(base_url=s.url, follow_redirects=False, timeout=10)
    login = browser.post("/login", data={"token": token})
    assert (login.status_code, login.headers["location"]) == (303, "/")
    page = browser.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 200, page.headers.get("location")
    assert browser.get("/api/projects").status_code == 200
    # another local app's cookies, which a strict cookie parser stops at, come first
    ours = login.headers["set-cookie"].split(";")[0]
    mixed = {"Cookie": 'prefs={"a": 1}; bad cookie; x="un"closed; ' + ours, "Accept": "text/html"}
    assert httpx.get(f"{s.url}/", headers=mixed).status_code == 200


def test_no_page_of_the_server_loads_code_from_elsewhere(serve: Callable[..., Server]) -> None:
    s = serve()
    assert s.http.get("/api/docs").status_code == 404  # it would load its viewer from a CDN
    schema = s.http.get("/api/openapi.json")
    assert schema.status_code == 200
    for path in ("/", "/api/openapi.json", "/api/projects", "/login"):
        r = s.http.get(path)
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
        assert "script-src 'self'" in r.headers["content-security-policy"], path


def test_only_loopback_without_a_token() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "example.org", "10.0.0.1"))
    with pytest.raises(ConfigError, match="without a token"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "a-token")  # allowed: the token guards it
    # The CLI refuses before it binds anything.
    r = CliRunner().invoke(cli_app, ["serve", "--host", "0.0.0.0", "--port", "0"])
    assert r.exit_code == 1
    assert "Refusing to listen on 0.0.0.0 without a token" in r.stderr


def test_a_conversation_over_http_follows_up_in_the_same_namespace(
    serve: Callable[..., Server], docs: Path
) -> None:
    def fn(messages: list[Message], model: str) -> str:
        question = messages[1]["content"].rsplit("Question:", 1)[-1]
        step = sum(1 for m in messages if m["role"] == "assistant")
        if step == 0:
            code = "found = doc_names[0]" if "Find" in question else "print(found)"
            return f"```repl\n{code}\n```"
        return 'FINAL("found it")' if "Find" in question else "FINAL(acme.txt)"

    s = serve(fn)
    s.http.post("/api/projects/acme/paths", json={"paths": [str(docs)]})
    first = s.ask("acme", "Find the first document.", conversation="new")
    cid = first["conversation"]
    assert s.events(first["id"])[-1]["result"]["answer"] == "found it"
    second = s.ask("acme", "Which was it?", conversation=cid)
    assert second["conversation"] == cid
    assert s.events(second["id"])[-1]["result"]["answer"] == "acme.txt"  # `found` was kept
    listed = s.http.get("/api/projects/acme/conversations").json()["conversations"]
    assert [c["id"] for c in listed] == [cid]
    shown = s.http.get(f"/api/projects/acme/conversations/{cid}").json()
    assert [e["question"] for e in shown["exchanges"]] == [
        "Find the first document.",
        "Which was it?",
    ]
    missing = s.http.post(
        "/api/projects/acme/queries", json={"question": "q", "conversation": "nope"}
    )
    assert (missing.status_code, missing.json()["kind"]) == (404, "NotFoundError")
    assert s.http.get("/api/projects/acme/conversations/..%2Fx").status_code in (400, 404)
