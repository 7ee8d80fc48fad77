"""The LLM clients against the scripted server: LiteLLM's (every provider) and the thin
OpenAI-compatible one (the local server, no LiteLLM). The contract tests run on both."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from shesha.errors import (
    LLMAuthenticationError,
    LLMConnectionError,
    LLMContextWindowError,
    LLMRateLimitError,
)
from shesha.llm import (
    Choices,
    Grammar,
    JsonSchema,
    LLMClient,
    LLMSettings,
    NotedChoice,
    OpenAICompatibleClient,
    Price,
)
from shesha.testing import Fail, ScriptedLLMServer, Slow

HI = [{"role": "user", "content": "hello there"}]


Client = LLMClient | OpenAICompatibleClient
CLIENTS = {"litellm": LLMClient, "openai-compatible": OpenAICompatibleClient}


@pytest.fixture(params=sorted(CLIENTS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def client(server: ScriptedLLMServer, kind: str = "litellm", **kw: object) -> Client:
    kw.setdefault("num_retries", 0)
    settings = LLMSettings(api_base=server.api_base, api_key="k", **kw)
    return LLMClient(settings) if kind == "litellm" else OpenAICompatibleClient(settings)


def test_completion_reports_text_and_tokens(kind: str) -> None:
    with ScriptedLLMServer(["hi back"]) as server:
        c = client(server, kind).complete_sync(HI, model="openai/scripted")
    assert c.text == "hi back"
    assert (c.prompt_tokens, c.completion_tokens) == (3, 2)
    assert c.cost_usd is None  # no price known: unknown, not zero
    assert server.requests[0].model == "scripted"


def test_user_prices_give_a_cost(kind: str) -> None:
    with ScriptedLLMServer(["hi back"]) as server:
        prices = {"openai/scripted": Price(input_per_mtok=2.0, output_per_mtok=10.0)}
        c = client(server, kind, prices=prices).complete_sync(HI, model="openai/scripted")
    assert c.cost_usd == pytest.approx((3 * 2.0 + 2 * 10.0) / 1e6)


def test_rate_limits_and_server_errors_are_retried(kind: str) -> None:
    with ScriptedLLMServer(["finally"], fail_first=[429, 500]) as server:
        c = client(server, kind, num_retries=3).complete_sync(HI, model="openai/scripted")
    assert c.text == "finally"
    assert len(server.requests) == 3


def test_rate_limits_past_every_retry_raise_a_rate_limit_error(kind: str) -> None:
    with ScriptedLLMServer([Fail(429)]) as server, pytest.raises(LLMRateLimitError):
        client(server, kind, num_retries=1).complete_sync(HI, model="openai/scripted")


def test_a_bad_key_fails_at_once_without_retries(kind: str) -> None:
    with ScriptedLLMServer([Fail(401, "invalid api key")]) as server:
        with pytest.raises(LLMAuthenticationError, match="refused the credentials"):
            client(server, kind, num_retries=3).complete_sync(HI, model="openai/scripted")
        assert len(server.requests) == 1


def test_an_unreachable_endpoint_is_a_clear_connection_error(kind: str) -> None:
    with ScriptedLLMServer(["x"]) as server:
        base = server.api_base
    started = time.monotonic()
    settings = LLMSettings(api_base=base, api_key="k", num_retries=0, timeout_s=5)
    with pytest.raises(LLMConnectionError, match="Could not get an answer"):
        CLIENTS[kind](settings).complete_sync(HI, model="openai/scripted")
    assert time.monotonic() - started < 10


def test_a_slow_answer_times_out(kind: str) -> None:
    with ScriptedLLMServer([Slow(3, "late")]) as server, pytest.raises(LLMConnectionError):
        client(server, kind, timeout_s=0.5).complete_sync(HI, model="openai/scripted")


def test_calls_run_concurrently(kind: str) -> None:
    with ScriptedLLMServer(["ok"], latency_s=0.3) as server:
        llm = client(server, kind)

        async def many() -> list[str]:
            results = await asyncio.gather(
                *(llm.complete(HI, model="openai/scripted") for _ in range(8))
            )
            return [r.text for r in results]

        started = time.monotonic()
        assert asyncio.run(many()) == ["ok"] * 8
        assert time.monotonic() - started < 1.5


def test_the_scripted_server_listens_on_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        ScriptedLLMServer(["x"], host="0.0.0.0")


def test_a_local_openai_compatible_server_needs_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with ScriptedLLMServer(["no key needed"]) as server:
        llm = LLMClient(LLMSettings(api_base=server.api_base, num_retries=0))
        assert llm.complete_sync(HI, model="openai/local").text == "no key needed"


# -- output constraints -------------------------------------------------------------------


def test_a_llama_cpp_endpoint_is_sent_the_choices_as_a_grammar(kind: str) -> None:
    with ScriptedLLMServer([" praise\n", "maybe"]) as server:
        c = client(server, kind, constraints="llama.cpp")
        kinds = Choices(("complaint", "praise", 'say "hi"\\now'))
        first = c.complete_sync(HI, model="openai/scripted", constraint=kinds)
        second = c.complete_sync(HI, model="openai/scripted", constraint=kinds)
    assert server.requests[0].body["grammar"] == (
        'root ::= "complaint" | "praise" | "say \\"hi\\"\\\\now"'
    )
    assert (first.text, second.text) == ("praise", "maybe")  # trimmed to the choice, or as is


def test_a_noted_choice_is_a_grammar_of_a_note_line_then_a_label_line(kind: str) -> None:
    reply = "Says: the parcel came late\nLabel: complaint"
    with ScriptedLLMServer([reply]) as server:
        c = client(server, kind, constraints="llama.cpp")
        got = c.complete_sync(
            HI, model="openai/scripted", constraint=NotedChoice(("complaint", "x\ny"))
        )
    assert server.requests[0].body["grammar"] == (
        'root ::= "Says: " [^\\n]{1,160} "\\nLabel: " ("complaint" | "x\\ny")'
    )
    assert got.text == reply  # the note stays, for the trace; the caller reads the label


def test_a_noted_choice_is_asked_in_words_where_no_grammar_is_taken() -> None:
    with ScriptedLLMServer(["Label: a"]) as server:
        client(server, constraints="response_format").complete_sync(
            HI, model="openai/scripted", constraint=NotedChoice(("a", "b"))
        )
    assert "grammar" not in server.requests[0].body
    assert "response_format" not in server.requests[0].body


def test_a_llama_cpp_endpoint_is_sent_a_schema_and_a_grammar_as_they_are(kind: str) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    with ScriptedLLMServer(['{"n": 3}', "yes"]) as server:
        c = client(server, kind, constraints="llama.cpp")
        c.complete_sync(HI, model="openai/scripted", constraint=JsonSchema(schema))
        c.complete_sync(HI, model="openai/scripted", constraint=Grammar('root ::= "yes" | "no"'))
    assert server.requests[0].body["response_format"] == {"type": "json_object", "schema": schema}
    assert server.requests[1].body["grammar"] == 'root ::= "yes" | "no"'


def test_an_endpoint_that_cannot_enforce_a_constraint_is_asked_plainly() -> None:
    schema = {"type": "object"}
    with ScriptedLLMServer(["a", "b", "c"]) as server:
        for dialect in ("response_format", "none"):
            c = client(server, constraints=dialect)
            c.complete_sync(HI, model="openai/scripted", constraint=Choices(("a", "b")))
        # A model LiteLLM does not know is not assumed to take a schema.
        client(server).complete_sync(HI, model="openai/scripted", constraint=JsonSchema(schema))
    for request in server.requests:
        assert "grammar" not in request.body
        assert "response_format" not in request.body


def test_a_provider_with_structured_output_is_sent_the_schema() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    with ScriptedLLMServer(['{"n": 1}']) as server:
        client(server).complete_sync(HI, model="openai/gpt-4o-mini", constraint=JsonSchema(schema))
    sent = server.requests[0].body["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["schema"] == schema


@pytest.mark.parametrize("bad", [(), ("",), ("a", "  ")])
def test_a_choice_of_nothing_is_refused(bad: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="at least one option"):
        Choices(bad)


@pytest.mark.parametrize(
    "message",
    [
        # OpenAI's wording, which vLLM and llama-cpp-python copy
        "This model's maximum context length is 2048 tokens. However, you requested 5031 "
        "tokens (5031 in the messages, None in the completion).",
        # llama.cpp's own server
        "request (5031 tokens) exceeds the available context size (2048 tokens), try increasing it",
    ],
)
def test_a_prompt_past_the_window_says_by_how_much(message: str, kind: str) -> None:
    # The engine reads fewer passages by the share the server reports.
    with (
        ScriptedLLMServer([Fail(400, message)]) as server,
        pytest.raises(LLMContextWindowError) as err,
    ):
        client(server, kind).complete_sync(HI, model="openai/scripted")
    assert (err.value.limit, err.value.requested) == (2048, 5031)


NO_LITELLM = """
import sys
from shesha.llm import LLMSettings, OpenAICompatibleClient
llm = OpenAICompatibleClient(LLMSettings(api_base=sys.argv[1], num_retries=0))
print(llm.complete_sync([{"role": "user", "content": "hi"}], model="openai/local").text)
assert "litellm" not in sys.modules, "LiteLLM was imported"
"""


def test_the_thin_client_never_imports_litellm() -> None:
    # LiteLLM takes seconds to import: the local model's path does without it.
    with ScriptedLLMServer(["hello"]) as server:
        done = subprocess.run(
            [sys.executable, "-c", NO_LITELLM, server.api_base],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "hello"
