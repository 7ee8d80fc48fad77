"""The OpenAI-compatible chat API of `shesha serve`, asked by the official ``openai`` SDK
(sync, async, streaming) and by LiteLLM as a client, over loopback: a FunctionModel is
the root model, the runner runs as local processes."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import litellm
import openai
import pytest

from shesha import Shesha
from shesha.llm.types import Message
from shesha.sandbox import SandboxPool
from shesha.testing import FunctionModel, RunningServer

SUBCALL = "You follow one instruction"
TOKEN = "tok-openai-test"


def the_question(messages: list[Message]) -> str:
    """This query's question (not an earlier one of its conversation)."""
    return messages[1]["content"].rsplit("Question:", 1)[-1]


def model(messages: list[Message], name: str) -> str:
    """ "build": keeps an index in the namespace; "use": prints it; "json": a typed
    answer; "slow": waits on a file; else looks, then answers."""
    if messages[0]["content"].startswith(SUBCALL):
        return "sub-answer"
    question = the_question(messages)
    step = sum(1 for m in messages if m["role"] == "assistant")
    if "build" in question:
        if step == 0:
            return "```repl\nindex = sorted(context[0].split())[:2]\nprint(index)\n```"
        return "FINAL(built)"
    if "use" in question:
        return "```repl\nprint('index is', index)\n```" if step == 0 else "FINAL(used it)"
    if "json" in question:
        return 'FINAL({"ceo": "Maria Lopez", "age": 51})'
    if "pause" in question:
        return "```repl\nimport time\ntime.sleep(2)\n```" if step == 0 else "FINAL(paused)"
    if "slow" in question:
        return "```repl\nimport time\ntime.sleep(30)\n```" if step == 0 else "FINAL(late)"
    return "```repl\nprint(doc_names)\n```" if step == 0 else "FINAL(Maria Lopez)"


class Served:
    def __init__(self, url: str, sh: Shesha) -> None:
        self.url, self.sh = url, sh
        self.client = openai.OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0)
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
        )

    def roots(self) -> list[list[Message]]:
        """The root model's calls so far, each its messages."""
        llm = self.sh._llm
        assert isinstance(llm, FunctionModel)
        return [m for _, m in llm.calls if not m[0]["content"].startswith(SUBCALL)]


@pytest.fixture
def served(sandboxes: SandboxPool, tmp_path: Path) -> Iterator[Callable[..., Served]]:
    (tmp_path / "acme.txt").write_text("The CEO of Acme is Maria Lopez. beta alpha")
    stack: list[tuple[RunningServer, Shesha]] = []

    def start(pool_size: int = 2) -> Served:
        sh = Shesha(
            home=str(tmp_path / "home"),
            llm=FunctionModel(model),
            sandboxes=sandboxes,
            pool_size=pool_size,
        )
        sh.project("acme").add([tmp_path / "acme.txt"])
        server = RunningServer(sh, token=TOKEN)
        url = server.__enter__()
        stack.append((server, sh))
        return Served(url, sh)

    yield start
    for server, sh in reversed(stack):
        server.__exit__(None, None, None)
        sh.close()


def ask(q: str) -> list[Any]:
    return [{"role": "user", "content": q}]


def test_projects_are_models_and_a_question_is_answered(served: Callable[..., Served]) -> None:
    s = served()
    assert [m.id for m in s.client.models.list()] == ["shesha/acme"]
    assert s.client.models.retrieve("shesha/acme").owned_by == "shesha"
    r = s.client.chat.completions.create(model="shesha/acme", messages=ask("Who is the CEO?"))
    assert r.choices[0].message.content == "Maria Lopez"
    assert r.choices[0].finish_reason == "stop"
    assert r.model == "shesha/acme"
    assert r.usage is not None
    assert r.usage.total_tokens > 0
    figures = (r.model_extra or {})["shesha"]
    assert (figures["status"], figures["steps"]) == ("success", 2)
    trace = s.http.get(f"/api/projects/acme/traces/{figures['trace']}").json()
    assert trace["header"]["question"] == "Who is the CEO?"


def test_a_streamed_answer_sends_each_step_as_reasoning_then_the_answer(
    served: Callable[..., Served],
) -> None:
    s = served()
    chunks = list(
        s.client.chat.completions.create(
            model="shesha/acme", messages=ask("Who is the CEO?"), stream=True
        )
    )
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
        for c in chunks
        if c.choices
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "Maria Lopez"
    assert "step 1: asking the model" in reasoning
    assert "step 1: running code: print(doc_names)" in reasoning
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.usage is not None
    assert last.usage.total_tokens > 0
    assert (last.model_extra or {})["shesha"]["steps"] == 2
    # the answer comes after every line of reasoning
    first_content = next(
        i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content
    )
    assert all(
        not (c.choices[0].delta.model_extra or {}).get("reasoning_content")
        for c in chunks[first_content:]
    )


def test_the_async_client_asks_and_streams(served: Callable[..., Served]) -> None:
    s = served()

    async def both() -> tuple[str | None, str]:
        client = openai.AsyncOpenAI(base_url=f"{s.url}/v1", api_key=TOKEN, max_retries=0)
        plain = await client.chat.completions.create(model="shesha/acme", messages=ask("CEO?"))
        stream = await client.chat.completions.create(
            model="shesha/acme", messages=ask("CEO?"), stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await client.close()
        return plain.choices[0].message.content, text

    assert asyncio.run(both()) == ("Maria Lopez", "Maria Lopez")


def test_a_follow_up_continues_the_conversation_and_its_namespace(
    served: Callable[..., Served],
) -> None:
    s = served()
    chat = s.client.chat.completions
    history: list[Any] = [
        {"role": "system", "content": "You are a helpful assistant."},
        *ask("Please build an index."),
    ]
    first = chat.create(model="shesha/acme", messages=history)
    assert first.choices[0].message.content == "built"
    history += [{"role": "assistant", "content": "built"}, *ask("Now use it.")]
    second = chat.create(model="shesha/acme", messages=history)
    assert second.choices[0].message.content == "used it"
    ids = [(r.model_extra or {})["shesha"]["conversation"] for r in (first, second)]
    assert None not in ids
    assert ids[0] != ids[1]  # each answer is recorded with the history it followed
    follow_up = s.roots()[-1]
    assert "Q: Please build an index.\nA: built" in follow_up[1]["content"]
    assert "index is ['Acme', 'CEO']" in follow_up[-1]["content"]  # the first one's variable
    assert "helpful assistant" not in json.dumps(s.roots())  # the client's system message
    shown = s.http.get(f"/api/projects/acme/conversations/{ids[1]}").json()
    assert [e["question"] for e in shown["exchanges"]] == ["Please build an index.", "Now use it."]
    assert shown["exchanges"][0]["trace"] is not None  # the first one's, replayed


def test_an_edited_history_branches_and_an_unknown_one_is_given(
    served: Callable[..., Served],
) -> None:
    s = served()
    chat = s.client.chat.completions
    built = [*ask("Please build an index."), {"role": "assistant", "content": "built"}]
    first = chat.create(model="shesha/acme", messages=ask("Please build an index."))
    on = chat.create(model="shesha/acme", messages=[*built, *ask("Who is the CEO?")])
    # the same history again, with another question (a regenerated or edited turn)
    branch = chat.create(model="shesha/acme", messages=[*built, *ask("Now use it.")])
    conv = [(r.model_extra or {})["shesha"]["conversation"] for r in (first, on, branch)]
    assert len(set(conv)) == 3
    assert branch.choices[0].message.content == "used it"  # its code was replayed
    assert "index is ['Acme', 'CEO']" in s.roots()[-1][-1]["content"]
    assert "Who is the CEO" not in s.roots()[-1][1]["content"]  # not in this branch
    # a history this server never answered: its turns are what the client says
    given = [*ask("What is Acme?"), {"role": "assistant", "content": "A company."}]
    new = chat.create(model="shesha/acme", messages=[*given, *ask("Who is the CEO?")])
    assert (new.model_extra or {})["shesha"]["conversation"] not in conv
    assert "Q: What is Acme?\nA: A company." in s.roots()[-1][1]["content"]


def test_two_requests_with_one_history_never_see_each_others_question(
    served: Callable[..., Served],
) -> None:
    """Two tabs (or a client's retry) send the same history with a question each, the
    second while the first runs: each follow-up sees the history it sent, never the
    other's exchange."""
    s = served(pool_size=1)
    chat = s.client.chat.completions
    chat.create(model="shesha/acme", messages=ask("Please build an index."))
    built = [*ask("Please build an index."), {"role": "assistant", "content": "built"}]
    tab_one = threading.Thread(
        target=chat.create,
        kwargs={"model": "shesha/acme", "messages": [*built, *ask("Please pause. (tab one)")]},
    )
    tab_one.start()
    for _ in range(300):
        queries = s.http.get("/api/queries").json()["queries"]
        if any("tab one" in q["question"] and q["state"] == "running" for q in queries):
            break
        threading.Event().wait(0.05)
    second = chat.create(model="shesha/acme", messages=[*built, *ask("Now use it. (tab two)")])
    tab_one.join(30)
    assert second.choices[0].message.content == "used it"
    opening = next(m for m in reversed(s.roots()) if "tab two" in the_question(m))[1]["content"]
    assert "Q: Please build an index.\nA: built" in opening
    assert "tab one" not in opening


def test_a_typed_answer_follows_the_response_format(served: Callable[..., Served]) -> None:
    s = served()
    schema: Any = {
        "type": "object",
        "properties": {"ceo": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["ceo", "age"],
    }
    r = s.client.chat.completions.create(
        model="shesha/acme",
        messages=ask("Give json."),
        response_format={"type": "json_schema", "json_schema": {"name": "ceo", "schema": schema}},
    )
    assert json.loads(r.choices[0].message.content or "") == {"ceo": "Maria Lopez", "age": 51}
    bad: Any = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}
    with pytest.raises(openai.BadRequestError):
        s.client.chat.completions.create(
            model="shesha/acme",
            messages=ask("Give json."),
            response_format=bad,
        )


def test_per_query_options_ride_in_extra_body_and_limits_hold(
    served: Callable[..., Served],
) -> None:
    s = served()
    chat = s.client.chat.completions
    stopped = chat.create(
        model="shesha/acme",
        messages=ask("Who is the CEO?"),
        extra_body={"shesha": {"max_iterations": 1}},
    )
    assert stopped.choices[0].finish_reason == "length"
    assert (stopped.model_extra or {})["shesha"]["status"] == "max_iterations"
    with pytest.raises(openai.PermissionDeniedError, match="where its model calls go"):
        chat.create(
            model="shesha/acme",
            messages=ask("Who?"),
            extra_body={"shesha": {"api_base": "http://127.0.0.1:9"}},
        )
    with pytest.raises(openai.BadRequestError, match="frobnicate"):
        chat.create(
            model="shesha/acme", messages=ask("Who?"), extra_body={"shesha": {"frobnicate": 1}}
        )


def test_refusals_are_in_the_openai_error_shape(served: Callable[..., Served]) -> None:
    s = served()
    wrong = openai.OpenAI(base_url=f"{s.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as denied:
        wrong.chat.completions.create(model="shesha/acme", messages=ask("Who?"))
    assert denied.value.status_code == 401
    assert denied.value.body == {
        "message": "This server needs a token. Send Authorization: Bearer <token> "
        "(shesha: --token or SHESHA_TOKEN).",
        "type": "authentication_error",
        "param": None,
        "code": "Unauthorized",
    }
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    raw = httpx.post(f"{s.url}/v1/chat/completions", json={"model": "shesha/acme"})
    assert raw.status_code == 401
    assert raw.json()["error"]["type"] == "authentication_error"

    chat = s.client.chat.completions
    with pytest.raises(openai.NotFoundError, match="named shesha/<project>"):
        chat.create(model="gpt-4o", messages=ask("Who?"))
    with pytest.raises(openai.NotFoundError, match="No project named 'nope'"):
        chat.create(model="shesha/nope", messages=ask("Who?"))
    image = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]
    refused: list[tuple[list[Any], dict[str, Any], str]] = [
        ([{"role": "user", "content": image}], {}, "text parts, not 'image_url'"),
        ([{"role": "assistant", "content": "hi"}], {}, "last message must be the user's"),
        ([{"role": "tool", "content": "x", "tool_call_id": "1"}, *ask("q")], {}, "not 'tool'"),
        (ask("q"), {"n": 2}, "one answer per request"),
        (ask("q"), {"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ([], {}, "messages"),
    ]
    for messages, more, said in refused:
        with pytest.raises(openai.BadRequestError, match=said) as bad:
            chat.create(model="shesha/acme", messages=messages, **more)
        assert isinstance(bad.value.body, dict)
        assert set(bad.value.body) == {"message", "type", "param", "code"}
    # a browser's Accept changes nothing under /v1: JSON, not a page or a login redirect
    page = {"Accept": "text/html,application/xhtml+xml"}
    as_browser = httpx.get(f"{s.url}/v1/models", headers=page, follow_redirects=False)
    assert as_browser.status_code == 401
    assert as_browser.json()["error"]["type"] == "authentication_error"
    unknown = s.http.get("/v1/models/shesha/nope", headers=page)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "NotFoundError"
    # no such route under /v1 either
    missing = s.http.post("/v1/embeddings", json={})
    assert missing.status_code == 404
    assert "error" in missing.json()
    assert missing.json()["error"]["type"] == "not_found_error"


def test_litellm_asks_a_project_as_an_openai_model(served: Callable[..., Served]) -> None:
    s = served()
    r = litellm.completion(
        model="openai/shesha/acme",
        api_base=f"{s.url}/v1",
        api_key=TOKEN,
        messages=ask("Who is the CEO?"),
    )
    assert r.choices[0].message.content == "Maria Lopez"
    streamed = litellm.completion(
        model="openai/shesha/acme",
        api_base=f"{s.url}/v1",
        api_key=TOKEN,
        messages=ask("Who is the CEO?"),
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == "Maria Lopez"


def test_a_question_waits_in_the_one_line_and_a_client_that_leaves_cancels_it(
    served: Callable[..., Served],
) -> None:
    s = served(pool_size=1)
    slow = s.http.post("/api/projects/acme/queries", json={"question": "Be slow."}).json()
    seen: list[str] = []
    gone = threading.Event()

    def follow() -> None:
        stream = s.client.chat.completions.create(
            model="shesha/acme", messages=ask("Who is the CEO?"), stream=True
        )
        for c in stream:
            seen.append((c.choices[0].delta.model_extra or {}).get("reasoning_content") or "")
            if any("position 1 in line" in line for line in seen):
                stream.close()  # the client goes away while its question waits
                gone.set()
                return

    worker = threading.Thread(target=follow)
    worker.start()
    assert gone.wait(30), seen
    worker.join(10)
    s.http.post(f"/api/queries/{slow['id']}/cancel")
    for _ in range(300):
        states = {q["question"]: q["state"] for q in s.http.get("/api/queries").json()["queries"]}
        if states.get("Who is the CEO?") == "cancelled":
            break
        threading.Event().wait(0.1)
    assert states["Who is the CEO?"] == "cancelled"
    assert not any("Who is the CEO" in the_question(m) for m in s.roots())
