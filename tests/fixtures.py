"""Small documents (and git repositories) the tests make themselves."""

from __future__ import annotations

import io
import os
import subprocess
import zlib
from pathlib import Path

import docx


def make_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF with one line of Helvetica text per page ('' = a blank page)."""
    objects: list[bytes] = []
    n = len(pages)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode())
    font_id = 3 + 2 * n
    for i, text in enumerate(pages):
        content_id = 4 + 2 * i
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content_id} 0 R "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode()
        )
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream = f"BT /F1 12 Tf 72 720 Td ({escaped}) Tj ET".encode() if text else b""
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    return pdf_of(objects)


def pdf_of(objects: list[bytes]) -> bytes:
    """A PDF of these objects (numbered from 1, the first the catalog), with its xref."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def make_docx() -> bytes:
    d = docx.Document()
    d.sections[0].header.paragraphs[0].text = "ACME Confidential"
    d.sections[0].footer.paragraphs[0].text = "Page footer text"
    d.add_heading("Quarterly report", level=1)
    d.add_paragraph("Revenue grew strongly.")
    d.add_paragraph("First point", style="List Bullet")
    d.add_paragraph("Step one", style="List Number")
    d.add_paragraph("Step two", style="List Number")
    table = d.add_table(rows=3, cols=3)
    for r, row in enumerate(table.rows):
        for c, cell in enumerate(row.cells):
            cell.text = f"r{r}c{c}"
    merged = table.cell(0, 0).merge(table.cell(0, 1))
    merged.text = "Merged header"
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def make_pdf_with_object_streams(pages: list[str]) -> bytes:
    """A PDF 1.5 as modern writers make it: the catalog, the page tree, the pages and the
    font compressed together in an object stream, the page contents as plain streams,
    and a cross-reference stream at the end."""
    n = len(pages)
    page_ids = [3 + i for i in range(n)]
    font_id = 3 + n
    content_ids = [font_id + 1 + i for i in range(n)]
    objstm_id = content_ids[-1] + 1
    xref_id = objstm_id + 1
    kids = " ".join(f"{p} 0 R" for p in page_ids)
    packed = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode(),
        **{
            p: f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {c} 0 R "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode()
            for p, c in zip(page_ids, content_ids, strict=True)
        },
        font_id: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    }
    header, body = b"", b""
    for number, obj in packed.items():
        header += b"%d %d " % (number, len(body))
        body += obj + b"\n"
    stream = zlib.compress(header + body)
    out = bytearray(b"%PDF-1.5\n")
    offsets: dict[int, int] = {}
    for text, c in zip(pages, content_ids, strict=True):
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        content = f"BT /F1 12 Tf 72 720 Td ({escaped}) Tj ET".encode()
        offsets[c] = len(out)
        out += b"%d 0 obj\n<< /Length %d >>\nstream\n%s\nendstream\nendobj\n" % (
            c,
            len(content),
            content,
        )
    offsets[objstm_id] = len(out)
    out += (
        b"%d 0 obj\n<< /Type /ObjStm /N %d /First %d /Filter /FlateDecode /Length %d >>\n"
        b"stream\n"
        % (objstm_id, len(packed), len(header), len(stream))
        + stream
        + b"\nendstream\nendobj\n"
    )
    offsets[xref_id] = len(out)
    rows = b"\x00" + b"\x00\x00\x00\x00" + b"\xff\xff"
    for number in range(1, xref_id + 1):
        if number in packed:
            index = list(packed).index(number)
            rows += b"\x02" + objstm_id.to_bytes(4, "big") + index.to_bytes(2, "big")
        else:
            rows += b"\x01" + offsets[number].to_bytes(4, "big") + b"\x00\x00"
    out += (
        b"%d 0 obj\n<< /Type /XRef /Size %d /W [1 4 2] /Root 1 0 R /Length %d >>\nstream\n"
        % (xref_id, xref_id + 1, len(rows))
        + rows
        + b"\nendstream\nendobj\nstartxref\n%d\n%%%%EOF\n" % offsets[xref_id]
    )
    return bytes(out)


GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "t@example.invalid",
    "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
}  # fmt: skip
"""git for the tests' own repositories: a fixed author, no user or system configuration."""


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` as the tests do; its stdout, stripped."""
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True,
        env={**os.environ, **GIT_ENV},
    )  # fmt: skip
    return done.stdout.strip()
