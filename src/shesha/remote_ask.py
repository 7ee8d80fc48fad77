"""`shesha ask` against a running `shesha serve`, on the standard library alone.

A question to a warm server needs an HTTP client and a printer, not typer's app, rich,
pydantic's settings models or httpx: this path starts in a few tens of milliseconds, where
the full CLI takes half a second. It takes the plain case, a stored project asked by
name (``shesha ask -p NAME QUESTION``) with the options below, and only when a server
answers as the full CLI would find it (``--server``, else ``SHESHA_SERVER`` or the config
file's ``server``, else the local server recorded in the data directory). Anything else
(paths to add, other options, ``--help``, no server) returns None, and the full CLI
(``shesha.cli``) takes the command, with the same words and exit codes.
"""

from __future__ import annotations

import http.client
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, urlsplit

import platformdirs

from shesha.ask_text import (
    Tally,
    answer_json,
    citation_lines,
    ending_lines,
    error_lines,
    exit_code,
    summary,
)
from shesha.errors import SheshaError
from shesha.exits import EXIT_ERROR
from shesha.locations import config_file_path, environment_setting, read_config_file
from shesha.server.state import read_state

OFF = "off"
STATUS_TIMEOUT_S = 3.0
"""How long the CLI waits for a server to say it is there. A busy machine's server can
take over a second, and a second late is cheaper than the question run in-process;
nobody listening is refused at once."""
REQUEST_TIMEOUT_S = 30.0
STRATEGIES = frozenset({"auto", "read", "retrieve", "count", "map", "code"})
NUMBERS: dict[str, tuple[str, type[int] | type[float]]] = {
    "--max-iterations": ("max_iterations", int),
    "--max-subcalls": ("max_subcalls", int),
    "--max-tokens": ("max_tokens", int),
    "--max-cost": ("max_cost_usd", float),
    "--timeout": ("max_wall_s", float),
}
"""The numeric options this path takes, as the server's query settings."""
FLAGS = {"--no-cache": ("cache", False), "--verify": ("verify_citations", True)}


@dataclass
class Question:
    """A plain ``shesha ask``: one question about one stored project."""

    text: str
    project: str
    server: str | None = None
    json_out: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)


VALUED = ("--project", "--server", "--strategy", *NUMBERS)


def parse(argv: Sequence[str]) -> Question | None:
    """``argv`` (after ``shesha``) as a plain remote question, or None for the full CLI."""
    if not argv or argv[0] != "ask":
        return None
    split = _split(argv[1:])
    if split is None:
        return None
    words, values, flags = split
    overrides = _overrides(values, flags)
    if len(words) != 1 or not values.get("--project") or overrides is None:
        return None  # paths to add, no project, or a value the full CLI must explain
    return Question(
        text=words[0],
        project=values["--project"],
        server=values.get("--server"),
        json_out="--json" in flags,
        overrides=overrides,
    )


def _split(args: Sequence[str]) -> tuple[list[str], dict[str, str], set[str]] | None:
    """The words, the options' values and the flags; None at an option this path does
    not take (the full CLI's, or --help)."""
    words: list[str] = []
    values: dict[str, str] = {}
    flags: set[str] = set()
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        name, eq, inline = arg.partition("=")
        name = "--project" if name == "-p" else name
        if name in VALUED:
            if not eq and not rest:
                return None
            values[name] = inline if eq else rest.pop(0)
        elif arg in ("--json", *FLAGS):
            flags.add(arg)
        elif arg.startswith("-"):
            return None
        else:
            words.append(arg)
    return words, values, flags


def _overrides(values: Mapping[str, str], flags: set[str]) -> dict[str, Any] | None:
    """The query settings the options give; None when one does not parse."""
    overrides: dict[str, Any] = {FLAGS[f][0]: FLAGS[f][1] for f in flags if f in FLAGS}
    for option, (key, kind) in NUMBERS.items():
        if option in values:
            try:
                overrides[key] = kind(values[option])
            except ValueError:
                return None
    strategy = values.get("--strategy", "").lower()
    if strategy and strategy not in STRATEGIES:
        return None
    if strategy:
        overrides["strategy"] = strategy
    return overrides


class Http:
    """Blocking JSON calls and an event stream to one server (``http.client``)."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not a server URL: {url!r}")
        self._parts = parts
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        https = self._parts.scheme == "https"
        kind = http.client.HTTPSConnection if https else http.client.HTTPConnection
        return kind(str(self._parts.hostname), self._parts.port, timeout=timeout)

    def call(
        self, method: str, path: str, body: Any = None, timeout: float | None = REQUEST_TIMEOUT_S
    ) -> tuple[int, Any]:
        """The status and the JSON body of one request; OSError when nobody answers."""
        connection = self._connection(timeout)
        try:
            headers = dict(self._headers)
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            connection.request(method, self._parts.path + path, body=data, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        try:
            return response.status, json.loads(raw) if raw else {}
        except ValueError:
            return response.status, {}

    def events(self, path: str) -> Iterator[dict[str, Any]]:
        """A Server-Sent Events stream, one JSON record per event, until it ends."""
        connection = self._connection(None)
        try:
            connection.request("GET", self._parts.path + path, headers=self._headers)
            response = connection.getresponse()
            if response.status >= 400:
                raise SheshaError(_refusal(response.status, _json(response.read())))
            for line in response:
                if line.startswith(b"data: "):
                    yield json.loads(line[6:])
        finally:
            connection.close()


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return {}


def _refusal(status: int, body: Any) -> str:
    """A server's JSON error as the CLI shows a SheshaError: the message, then the hint."""
    body = body if isinstance(body, dict) else {}
    message = str(body.get("error") or f"The server answered {status}.")
    hint = body.get("hint")
    return message + (f"\nHint: {hint}" if hint else "")


def _answers(http: Http) -> dict[str, Any] | None:
    """The server's status when a shesha server answers there, else None."""
    try:
        status, body = http.call("GET", "/api/status", timeout=STATUS_TIMEOUT_S)
    except OSError:
        return None
    if status != 200 or not isinstance(body, dict) or body.get("service") != "shesha":
        return None
    return body


def find(question: Question, env: Mapping[str, str] | None = None) -> Http | None:
    """The server the full CLI would use for ``question``, when it answers; None when
    the full CLI should take the command (it runs in-process, or says what is wrong)."""
    settings = _settings(env)
    if settings is None:
        return None
    url = question.server or settings.get("server")
    token = settings.get("token")
    if url == OFF:
        return None
    try:
        if url:
            http = Http(url, token)
            return http if _answers(http) is not None else None
        home = Path(settings.get("home") or platformdirs.user_data_dir("shesha")).expanduser()
        state = read_state(home)
        if state is None:
            return None
        http = Http(state.url, token or state.token)
    except ValueError:
        return None  # not a URL: the full CLI says so
    status = _answers(http)
    served = status is not None and Path(str(status.get("home"))).resolve() == home.resolve()
    return http if served else None


def _settings(env: Mapping[str, str] | None) -> dict[str, str] | None:
    """``server``, ``token`` and ``home``, from the environment over the config file;
    None when the config file does not read (the full CLI reports it)."""
    try:
        path = config_file_path()
        configured = read_config_file(path) if path is not None else {}
    except SheshaError:
        return None
    found = {}
    for name in ("server", "token", "home"):
        value = environment_setting(name, env) or configured.get(name)
        if value:
            found[name] = str(value)
    return found


class Printer:
    """Progress on stderr: a status line rewritten on a terminal, else a line per step."""

    def __init__(self, err: TextIO, quiet: bool) -> None:
        self.err, self.tally = err, Tally()
        self.live = not quiet and err.isatty()
        self.quiet = quiet

    def show(self, line: str | None) -> None:
        if self.live:
            self.err.write("\r" + self.tally.status()[:200] + "\x1b[K")
            self.err.flush()
        elif line is not None and not self.quiet:
            print(line, file=self.err, flush=True)

    def close(self) -> None:
        if self.live:
            self.err.write("\r\x1b[K")
            self.err.flush()


def ask(question: Question, http: Http, out: TextIO, err: TextIO) -> int:
    """Asks the server, prints as ``shesha ask`` does, and returns the exit code."""
    project = quote(question.project, safe="")
    status, started = http.call(
        "POST",
        f"/api/projects/{project}/queries",
        {"question": question.text, **question.overrides},
    )
    if status >= 400:
        raise SheshaError(_refusal(status, started))
    printer = Printer(err, quiet=question.json_out and not err.isatty())
    result: dict[str, Any] | None = None
    try:
        for record in http.events(str(started["events_url"])):
            kind = record.get("type")
            if kind == "queued":
                printer.show(printer.tally.queued(int(record["position"])))
            elif kind == "done":
                result = record["result"]
                break
            elif kind in ("failed", "cancelled"):
                raise SheshaError(f"The query {kind} on the server: {record.get('error') or kind}.")
            else:
                printer.show(printer.tally.add(record))
    except KeyboardInterrupt:
        http.call("POST", f"/api/queries/{quote(str(started['id']), safe='')}/cancel")
        raise
    finally:
        printer.close()
    if result is None:
        raise SheshaError("The server's event stream ended before the query did.")
    _print(result, question, out, err)
    return exit_code(str(result.get("status")))


def _print(result: Mapping[str, Any], question: Question, out: TextIO, err: TextIO) -> None:
    if question.json_out:
        print(json.dumps(answer_json(result, question.project), ensure_ascii=False), file=out)
        return
    if result.get("answer") is not None:
        print(result["answer"], file=out)
    for line in citation_lines(result.get("citations") or []):
        print(line, file=out)
    print(summary(result), file=err)
    _labelled(ending_lines(result), err)


def _error(text: str, err: TextIO) -> None:
    _labelled(error_lines(text), err)


def _labelled(lines: list[tuple[str, str]], err: TextIO) -> None:
    for label, text in lines:
        print(f"{label}: {text}", file=err)


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int | None:
    """The exit code of ``shesha ask`` when ``argv`` is a plain question and a server
    answers; None when the full CLI should take the command."""
    question = parse(argv)
    if question is None:
        return None
    http = find(question, env)
    if http is None:
        return None
    try:
        return ask(question, http, out, err)
    except SheshaError as e:
        _error(str(e), err)
    except OSError as e:
        _error(f"The shesha server at {http.url} stopped answering: {e}", err)
    except KeyboardInterrupt:
        print("Aborted!", file=err)
    return EXIT_ERROR
