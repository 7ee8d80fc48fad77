"""Jupyter notebooks (.ipynb): the cells in order, markdown as text, code in a fenced
block, and each code cell's outputs marked as output (text, results, errors). Images
and widget state are left out, with a note where an output was an image."""

from __future__ import annotations

import json
from typing import Any

from shesha.errors import ParseError
from shesha.parser.document import ParsedDocument
from shesha.parser.encoding import decode

DAMAGED_HINT = "Open it in Jupyter and save it again, then add it again."


def _joined(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def _outputs(cell: dict[str, Any]) -> list[str]:
    said = []
    for out in cell.get("outputs") or []:
        kind = out.get("output_type")
        if kind == "stream":
            said.append(_joined(out.get("text")).rstrip())
        elif kind in ("execute_result", "display_data"):
            data = out.get("data") or {}
            if "text/plain" in data:
                said.append(_joined(data["text/plain"]).rstrip())
            elif any(k.startswith("image/") for k in data):
                said.append("[an image]")
        elif kind == "error":
            said.append(f"{out.get('ename', 'Error')}: {out.get('evalue', '')}")
    return [s for s in said if s]


def parse_notebook(data: bytes, name: str, sha256: str) -> ParsedDocument:
    try:
        notebook = json.loads(decode(data).text)
        cells = notebook["cells"]
        language = (notebook.get("metadata") or {}).get("kernelspec", {}).get("language", "")
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise ParseError(
            f"{name}: not a readable Jupyter notebook ({type(e).__name__}: {e}).",
            hint=DAMAGED_HINT,
        ) from e
    parts: list[str] = []
    for number, cell in enumerate(cells, start=1):
        source = _joined(cell.get("source")).strip()
        kind = cell.get("cell_type")
        if kind == "code":
            block = f"[cell {number}: code]\n```{language or ''}\n{source}\n```"
            outputs = _outputs(cell)
            if outputs:
                block += "\n[output]\n" + "\n".join(outputs)
            parts.append(block)
        elif source:
            parts.append(f"[cell {number}: {kind}]\n{source}")
    text = "\n\n".join(parts) + "\n"
    return ParsedDocument.of(
        text,
        data,
        sha256,
        fmt="notebook",
        parser="notebook:json",
        warnings=[] if parts else ["the notebook has no cells with content"],
    )
