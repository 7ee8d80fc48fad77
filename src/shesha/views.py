"""What a project, a document and a trace look like as JSON: one shape for the CLI's
``--json``, the server's API and MCP, so that all three agree."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from shesha.ask_text import answer_json
from shesha.rlm.result import QueryResult
from shesha.rlm.trace import read_trace
from shesha.storage import StoredDocument, StoredProject

if TYPE_CHECKING:
    from shesha.storage.conversations import Record


def document_json(doc: StoredDocument) -> dict[str, Any]:
    m = doc.meta
    return {
        "name": doc.name,
        "format": m.format,
        "pages": m.pages,
        "chars": m.chars,
        "encoding": m.encoding,
        "encoding_source": m.encoding_source,
        "encoding_confidence": m.encoding_confidence,
        "warnings": list(m.warnings),
    }


def project_json(project: StoredProject) -> dict[str, Any]:
    docs = project.documents_meta()
    return {
        "name": project.name,
        "documents": len(docs),
        "chars": sum(d.meta.chars for d in docs),
        "version": project.version,
        "traces": len(trace_files(project)),
        "path": str(project.path),
    }


def trace_files(project: StoredProject, last: int | None = None) -> list[Path]:
    """A project's trace files, newest first."""
    folder = project.traces_dir
    paths = sorted(folder.glob("*.jsonl"), key=lambda f: f.name, reverse=True)
    return paths if last is None else paths[:last]


def trace_json(path: Path) -> dict[str, Any]:
    """A trace in one line: question, model, how it ended."""
    trace = read_trace(path)
    header, summary = trace.header, trace.summary
    return {
        "path": str(path),
        "name": path.name,
        "question": header.question if header else None,
        "model": header.model if header else None,
        "status": summary.status if summary else "incomplete",
        "iterations": summary.iterations if summary else None,
        "subcalls": summary.subcalls if summary else None,
        "tokens": summary.usage.total_tokens if summary else None,
        "cost_usd": summary.usage.total_cost_usd if summary else None,
        "duration_s": summary.duration_s if summary else None,
        "answer": summary.answer if summary else None,
    }


def result_json(result: QueryResult, project: str) -> dict[str, Any]:
    """What ``shesha ask --json`` prints."""
    return answer_json(result.model_dump(mode="json"), project)


def conversation_json(record: Record) -> dict[str, Any]:
    """A conversation: its questions and answers, and their traces' file names."""
    return {
        "id": record.id,
        "project": record.project,
        "exchanges": [
            {
                "question": e.question,
                "answer": e.answer,
                "status": e.status,
                "trace": Path(e.trace).name if e.trace else None,
            }
            for e in record.exchanges
        ],
    }
