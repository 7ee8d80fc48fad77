"""The operations every entry point of a server offers, in one place: the REST routes,
the web page and the MCP tools are translations of these.

Reads and writes of the store are plain methods: a caller on an event loop runs them in
a thread (``asyncio.to_thread``), so that no read stalls the loop. Queries and sessions
are coroutines on the loop, because they wait in the service's one fair line.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from shesha import __version__
from shesha.api import Project, Shesha
from shesha.conversation import OpenConversations, Turn
from shesha.errors import NotFoundError
from shesha.rlm.engine import LeasedSandbox
from shesha.rlm.output import output_checker
from shesha.rlm.result import QueryResult
from shesha.rlm.trace import read_trace
from shesha.service.line import QueryLine, QueuedQuery, event_record
from shesha.service.policy import allowed_path, request_overrides
from shesha.storage import AddReport, uploads
from shesha.views import conversation_json, document_json, project_json, trace_files, trace_json

TEXT_PAGE = 50_000
"""Characters of a document's text one page holds, unless the caller asks for fewer or
more."""
TEXT_PAGE_MAX = 1_000_000
"""The most one page holds, whatever the caller asks."""
TRACE_NAME = re.compile(r"^[\w.-]+\.jsonl$")
"""A trace file's name: nothing that could leave the traces folder."""
NEW = "new"
"""The conversation id that starts a new conversation."""


@dataclass
class HeldSandbox:
    """A warm sandbox with one project's documents, held between calls (an MCP
    session), and the line's slot it takes."""

    project: str
    sandbox: LeasedSandbox
    entry: QueuedQuery


class Service:
    """One Shesha, as a server offers it: projects, documents, traces, queries and
    conversations. Every query and held sandbox waits in one line of ``slots`` (default:
    the sandbox pool's size); a conversation is open once, whoever continues it."""

    def __init__(self, sh: Shesha, *, roots: Sequence[Path] = (), slots: int | None = None) -> None:
        self.sh = sh
        self.roots = [Path(p).expanduser().resolve() for p in roots]
        self.line = QueryLine(self._answer, slots or sh.settings.pool_size)
        self.conversations = OpenConversations()

    # -- about --------------------------------------------------------------------------

    @property
    def model_name(self) -> str | None:
        """The root model queries use when none is asked for (None: none configured)."""
        return self.sh.model_name

    def status(self) -> dict[str, Any]:
        return {
            "service": "shesha",
            "version": __version__,
            "home": str(self.sh.store.home),
            "model": self.model_name,
            "slots": self.line.slots,
            "running": self.line.running(),
            "waiting": self.line.waiting(),
            "pool": self.sh.pool_stats(),
        }

    # -- projects and documents ---------------------------------------------------------

    def project_names(self) -> list[str]:
        """The projects' names, without reading their documents."""
        return self.sh.projects()

    def projects(self) -> list[dict[str, Any]]:
        return [project_json(self.sh.store.get(name)) for name in self.sh.projects()]

    def project(self, name: str) -> dict[str, Any]:
        """A project and its documents."""
        p = self.sh.get_project(name)
        return {**project_json(p.stored), "docs": [document_json(d) for d in p.documents()]}

    def create_project(self, name: str) -> dict[str, Any]:
        return project_json(self.sh.project(name).stored)

    def delete_project(self, name: str) -> None:
        self.sh.delete_project(name)

    def documents(self, name: str) -> list[dict[str, Any]]:
        return [document_json(d) for d in self.sh.get_project(name).documents()]

    def text_page(
        self, name: str, doc: str, offset: int = 0, limit: int = TEXT_PAGE
    ) -> dict[str, Any]:
        """A page of a document's parsed text, as the model sees it."""
        text = self.sh.get_project(name).text(doc)
        offset, limit = max(0, min(offset, len(text))), max(1, min(limit, TEXT_PAGE_MAX))
        page = text[offset : offset + limit]
        end = offset + len(page)
        return {
            "project": name,
            "name": doc,
            "offset": offset,
            "text": page,
            "total_chars": len(text),
            "next_offset": end if end < len(text) else None,
        }

    def remove_document(self, name: str, doc: str) -> None:
        self.sh.get_project(name).remove(doc)

    def add_paths(
        self, name: str, paths: Sequence[str], password: str | None = None
    ) -> dict[str, Any]:
        """Add files and folders that lie under the service's roots (through any link)."""
        allowed = [allowed_path(p, self.roots) for p in paths]
        report = self.sh.project(name).add(allowed, password=password, roots=self.roots)
        return self._added(name, report)

    def add_uploads(
        self, name: str, files: Iterable[tuple[str, BinaryIO]], password: str | None = None
    ) -> dict[str, Any]:
        """Add uploaded files, each named by its (relative) file name."""
        with tempfile.TemporaryDirectory(prefix="shesha-upload-") as tmp:
            refused = uploads.stage(files, Path(tmp))
            report = self.sh.project(name).add([tmp], password=password)
        report.failed[:0] = refused
        return self._added(name, report)

    def _added(self, name: str, report: AddReport) -> dict[str, Any]:
        docs = {d.name: d for d in self.sh.get_project(name).documents()}
        return {
            **report.model_dump(mode="json"),
            "docs": [document_json(docs[d.name]) for d in report.stored if d.name in docs],
        }

    # -- traces and conversations -------------------------------------------------------

    def traces(self, name: str, last: int = 10) -> list[dict[str, Any]]:
        """A project's traces, newest first."""
        return [trace_json(f) for f in trace_files(self.sh.get_project(name).stored, max(1, last))]

    def traces_folder(self, name: str) -> Path:
        """Where a project's traces are written."""
        return self.sh.get_project(name).stored.traces_dir

    def trace_path(self, name: str, trace_name: str) -> Path:
        """Where one of a project's traces is; NotFoundError for a name that is not a
        trace's (nothing outside its traces folder is ever named)."""
        path = self.traces_folder(name) / trace_name
        if not TRACE_NAME.match(trace_name) or not path.is_file():
            raise NotFoundError(f"Project {name!r} has no trace {trace_name!r}.")
        return path

    def trace(self, name: str, trace_name: str) -> dict[str, Any]:
        """A trace's header and every event."""
        trace = read_trace(self.trace_path(name, trace_name))
        return {
            "project": name,
            "name": trace_name,
            "header": trace.header.model_dump(mode="json") if trace.header else None,
            "events": [event_record(e) for e in trace.events],
        }

    def conversation_list(self, name: str) -> list[dict[str, Any]]:
        return [conversation_json(r) for r in self.sh.get_project(name).conversations()]

    def conversation(self, name: str, conversation_id: str) -> dict[str, Any]:
        return conversation_json(self.sh.get_project(name).chat(conversation_id).record)

    # -- queries and held sandboxes (on the event loop) ---------------------------------

    async def submit(
        self,
        name: str,
        question: str,
        overrides: Mapping[str, Any],
        *,
        output: dict[str, Any] | None = None,
        conversation: str | None = None,
        earlier: Sequence[Turn] | None = None,
    ) -> QueuedQuery:
        """Put a question in line. Everything a request got wrong fails here, before it
        waits: an option it may not set, an unknown project, an invalid output schema,
        an unknown conversation (``"new"`` starts one). ``earlier``: a client's own
        history of this conversation (its questions and answers), which finds or starts
        the conversation instead of an id (``OpenConversations.following``)."""
        chosen = request_overrides(overrides, self.sh.settings)
        self.sh.query_settings(**chosen)
        project = await asyncio.to_thread(self.sh.get_project, name)
        if output is not None:
            output_checker(output)
        conv = None
        if conversation is not None:
            given = None if conversation == NEW else conversation
            conv = await asyncio.to_thread(self.conversations.get, project, given)
        elif earlier is not None:
            conv = await asyncio.to_thread(self.conversations.following, project, earlier)
        return self.line.submit(name, question, chosen, output=output, conversation=conv)

    async def ask(
        self, name: str, question: str, overrides: Mapping[str, Any], **options: Any
    ) -> tuple[QueuedQuery, QueryResult]:
        """Ask, wait in line, and return the answer (``submit``'s options)."""
        queued = await self.submit(name, question, overrides, **options)
        return queued, await queued.wait()

    async def hold_sandbox(self, name: str) -> HeldSandbox:
        """A warm sandbox with the project's documents, once the line has a slot for
        it; it keeps the slot until ``release_sandbox``."""
        project = await asyncio.to_thread(self.sh.get_project, name)
        entry = await self.line.hold(name, "(an MCP session)")
        try:
            sandbox = await asyncio.to_thread(project.lease_sandbox)
        except BaseException:
            self.line.release(entry)
            raise
        return HeldSandbox(name, sandbox, entry)

    async def release_sandbox(self, held: HeldSandbox) -> None:
        try:
            await asyncio.to_thread(held.sandbox.close)
        finally:
            self.line.release(held.entry)

    async def shutdown(self) -> None:
        """Cancel every query still in line or running."""
        await self.line.shutdown()

    async def _answer(self, queued: QueuedQuery) -> QueryResult:
        if queued.conversation is not None:
            return await queued.conversation.aask(
                queued.question, on_event=queued.publish, output=queued.output, **queued.overrides
            )
        project: Project = await asyncio.to_thread(self.sh.get_project, queued.project)
        return await project.aquery(
            queued.question, on_event=queued.publish, output=queued.output, **queued.overrides
        )
