"""What the CLI's commands work with: shesha in this process, or a running server. Both
give the same JSON shapes (``shesha.views``) and the same errors, so the commands print
the same output and exit with the same codes either way."""

from __future__ import annotations

import contextlib
import functools
import glob
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import typer
from pydantic import TypeAdapter, ValidationError

from shesha.cli.common import open_shesha
from shesha.client import ServerClient, find_server
from shesha.config import load_settings
from shesha.endpoints import is_local
from shesha.errors import Forbidden, SheshaError
from shesha.locations import default_home
from shesha.rlm import QueryResult, TraceEvent
from shesha.storage import AddProgress, AddReport, FailedInput
from shesha.storage.inputs import expand
from shesha.views import document_json

if TYPE_CHECKING:
    from shesha.api import Shesha

EventHandler = Callable[[TraceEvent], None]
QueueHandler = Callable[[int], None]


@functools.cache
def _events() -> TypeAdapter[TraceEvent]:
    """Built on first use: a union of every event costs tens of milliseconds."""
    return TypeAdapter(TraceEvent)


class Backend(Protocol):
    where: str
    """In a sentence: where the work happens."""

    def local_model_note(self) -> str | None: ...
    def project_rows(self) -> list[dict[str, Any]]: ...
    def project_info(self, name: str) -> dict[str, Any]: ...
    def delete_project(self, name: str) -> None: ...
    def project_exists(self, name: str) -> bool: ...
    def documents(self, project: str) -> list[dict[str, Any]]: ...
    def text(self, project: str, name: str) -> str: ...
    def add(
        self,
        project: str,
        paths: Sequence[str],
        *,
        password: str | None,
        on_progress: Callable[[AddProgress], None] | None,
    ) -> tuple[AddReport, dict[str, dict[str, Any]]]: ...
    def traces(self, project: str, last: int) -> tuple[list[dict[str, Any]], str]: ...
    def ask(
        self,
        project: str,
        question: str,
        *,
        on_event: EventHandler,
        on_queue: QueueHandler,
        overrides: dict[str, Any],
        output: dict[str, Any] | None = None,
    ) -> QueryResult: ...


class LocalBackend:
    """shesha in this process: the classic CLI."""

    where = "in this process"

    def __init__(self, sh: Shesha) -> None:
        from shesha.service import Service  # noqa: PLC0415  the remote path never loads it

        self.sh = sh
        self.service = Service(sh)
        """The operations a server offers, on this process's Shesha: the same reads."""

    def local_model_note(self) -> str | None:
        """Said on stderr when no model is configured and the local one steps in."""
        return self.sh.fallback_note()

    def project_rows(self) -> list[dict[str, Any]]:
        return self.service.projects()

    def project_info(self, name: str) -> dict[str, Any]:
        return self.service.project(name)

    def delete_project(self, name: str) -> None:
        self.service.delete_project(name)

    def project_exists(self, name: str) -> bool:
        return self.sh.store.exists(name)

    def documents(self, project: str) -> list[dict[str, Any]]:
        return self.service.documents(project)

    def text(self, project: str, name: str) -> str:
        return self.sh.get_project(project).text(name)

    def add(
        self,
        project: str,
        paths: Sequence[str],
        *,
        password: str | None,
        on_progress: Callable[[AddProgress], None] | None,
    ) -> tuple[AddReport, dict[str, dict[str, Any]]]:
        p = self.sh.project(project)
        report = p.add(list(paths), password=password, on_progress=on_progress)
        return report, {d.name: document_json(d) for d in p.documents()}

    def add_repository(
        self,
        project: str,
        location: str,
        *,
        ref: str | None,
        update: bool,
        on_progress: Callable[[AddProgress], None] | None,
    ) -> tuple[list[AddReport], dict[str, dict[str, Any]]]:
        """Add a git repository (or, with ``update``, refresh the recorded ones)."""
        p = self.sh.project(project)
        if update:
            reports = p.update(on_progress=on_progress)
        else:
            reports = [p.add_repository(location, ref=ref, on_progress=on_progress)]
        return reports, {d.name: document_json(d) for d in p.documents()}

    def traces(self, project: str, last: int) -> tuple[list[dict[str, Any]], str]:
        svc = self.service
        return svc.traces(project, last), str(svc.traces_folder(project))

    def ask(
        self,
        project: str,
        question: str,
        *,
        on_event: EventHandler,
        on_queue: QueueHandler,
        overrides: dict[str, Any],
        output: dict[str, Any] | None = None,
    ) -> QueryResult:
        if not overrides.get("model") and self.sh.fallback_model():
            overrides = {**overrides, "model": "local"}
        p = self.sh.get_project(project)
        return p.query(question, on_event=on_event, output=output, **overrides)


class RemoteBackend:
    """A running `shesha serve`: the warm pool, LiteLLM already imported, corpora loaded."""

    def __init__(self, client: ServerClient) -> None:
        self.client = client
        self.where = f"on the server at {client.url}"

    def local_model_note(self) -> str | None:
        return None  # the server chose its model when it started

    def project_rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.client.get("/api/projects")["projects"]
        return rows

    def project_info(self, name: str) -> dict[str, Any]:
        info: dict[str, Any] = self.client.get(f"/api/projects/{name}")
        return info

    def delete_project(self, name: str) -> None:
        self.client.delete(f"/api/projects/{name}")

    def project_exists(self, name: str) -> bool:
        return any(row["name"] == name for row in self.project_rows())

    def documents(self, project: str) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = self.client.get(f"/api/projects/{project}/documents")["docs"]
        return docs

    def text(self, project: str, name: str) -> str:
        parts: list[str] = []
        offset: int | None = 0
        while offset is not None:
            page = self.client.get(f"/api/projects/{project}/documents/{name}/text", offset=offset)
            parts.append(page["text"])
            offset = page["next_offset"]
        return "".join(parts)

    def add(
        self,
        project: str,
        paths: Sequence[str],
        *,
        password: str | None,
        on_progress: Callable[[AddProgress], None] | None,
    ) -> tuple[AddReport, dict[str, dict[str, Any]]]:
        """By path when the server may read them, else as an upload (and globs are
        expanded here, as the shell would)."""
        failed: list[FailedInput] = []
        if any(glob.has_magic(p) for p in paths):
            body, failed = self._upload(project, paths, password)
        else:
            resolved = [str(Path(p).expanduser().resolve()) for p in paths]
            try:
                body = self.client.post(
                    f"/api/projects/{project}/paths",
                    {"paths": resolved, "password": password},
                    timeout=None,
                )
            except Forbidden:
                body, failed = self._upload(project, paths, password)
        report = AddReport.model_validate(body)
        report.failed[:0] = failed
        return report, {d["name"]: d for d in body["docs"]}

    def _upload(
        self, project: str, paths: Sequence[str], password: str | None
    ) -> tuple[dict[str, Any], list[FailedInput]]:
        candidates, problems = expand(list(paths))
        failed = [FailedInput(path=p.path, error=p.error) for p in problems]
        if not candidates:
            return {"project": project, "stored": [], "failed": [], "docs": []}, failed
        with contextlib.ExitStack() as stack:
            files = [
                ("files", (c.name, stack.enter_context(open(c.path, "rb")))) for c in candidates
            ]
            body = self.client.request(
                "POST",
                f"/api/projects/{project}/documents",
                files=files,
                params={"password": password} if password else None,
                timeout=None,
            )
        return body, failed

    def traces(self, project: str, last: int) -> tuple[list[dict[str, Any]], str]:
        body = self.client.get(f"/api/projects/{project}/traces", last=last)
        return body["traces"], body["folder"]

    def ask(
        self,
        project: str,
        question: str,
        *,
        on_event: EventHandler,
        on_queue: QueueHandler,
        overrides: dict[str, Any],
        output: dict[str, Any] | None = None,
    ) -> QueryResult:
        body = {"question": question, **overrides}
        if output is not None:
            body["output_schema"] = output
        started = self.client.post(f"/api/projects/{project}/queries", body)
        try:
            for record in self.client.events(started["events_url"]):
                kind = record.get("type")
                if kind == "queued":
                    on_queue(int(record["position"]))
                elif kind == "done":
                    return QueryResult.model_validate(record["result"])
                elif kind in ("failed", "cancelled"):
                    raise SheshaError(
                        f"The query {kind} on the server: {record.get('error') or kind}."
                    )
                else:
                    with contextlib.suppress(ValidationError):  # a server-only event kind
                        on_event(_events().validate_python(record))
        except KeyboardInterrupt:
            self.client.post(f"/api/queries/{started['id']}/cancel")
            raise
        raise SheshaError("The server's event stream ended before the query did.")


@contextlib.contextmanager
def open_backend(
    ctx: typer.Context, server: str | None, config: Path | None, **settings: Any
) -> Iterator[Backend]:
    """A running server when one answers (``--server``, SHESHA_SERVER, the local one),
    else shesha in this process, with these settings."""
    base = load_settings(config_file=config)
    token = settings.get("token") or (base.token.get_secret_value() if base.token else None)
    home = Path(base.home).expanduser() if base.home else None
    client = None
    if ctx.find_root().obj is None:  # a test's or an embedder's factory runs in-process
        client = find_server(server, base.server, token, home or default_home())
    if client is not None:
        with client:
            yield RemoteBackend(client)
        return
    with open_shesha(ctx, config_file=config, **settings) as sh:
        yield LocalBackend(sh)


def warm_llm_import(model: str | None) -> None:
    """Import LiteLLM in the background while the CLI parses documents and starts the
    sandbox pool: it takes seconds, and a query needs it only at its first model call.
    Not for the local model (``model`` local, or None: the local fallback), which is
    reached without LiteLLM."""
    if model is None or is_local(model):
        return

    def load() -> None:
        with contextlib.suppress(SheshaError, ImportError):  # the query reports it properly
            import shesha.llm.client  # noqa: F401, PLC0415

    threading.Thread(target=load, name="shesha-warm-litellm", daemon=True).start()
