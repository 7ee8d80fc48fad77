"""Pick a parser by extension and by sniffing the content, and run it."""

from __future__ import annotations

import functools
import hashlib
import importlib
import io
import zipfile
from collections.abc import Callable
from pathlib import Path

from shesha.errors import ParseError
from shesha.parser.bounds import DEFAULT, ParseBounds, check_chars, check_pdf_streams, check_zip
from shesha.parser.document import ParsedDocument
from shesha.parser.encoding import looks_binary
from shesha.parser.ocr import OcrSettings
from shesha.parser.text import parse_text

BinaryParser = Callable[..., ParsedDocument]
_PARSERS: dict[str, tuple[str, str]] = {
    "pdf": ("shesha.parser.pdf", "parse_pdf"),
    "docx": ("shesha.parser.docx", "parse_docx"),
    "html": ("shesha.parser.html", "parse_html"),
    "image": ("shesha.parser.image", "parse_image"),
    "xlsx": ("shesha.parser.xlsx", "parse_xlsx"),
    "pptx": ("shesha.parser.pptx", "parse_pptx"),
    "epub": ("shesha.parser.epub", "parse_epub"),
    "notebook": ("shesha.parser.notebook", "parse_notebook"),
    "email": ("shesha.parser.mail", "parse_email"),
}
"""Formats whose parser needs a library that is slow to import (pypdfium2, python-docx,
BeautifulSoup): each is loaded the first time a file of that format is parsed, so that
commands which parse nothing (`shesha --help`, `projects`, `ask` through a server) do not
pay for it."""


@functools.cache
def _parser(fmt: str) -> BinaryParser:
    module, name = _PARSERS[fmt]
    parser: BinaryParser = getattr(importlib.import_module(module), name)
    return parser


MARKDOWN = {".md", ".markdown", ".mdx", ".mkd"}
HTML = {".html", ".htm", ".xhtml", ".shtml"}
CSV = {".csv", ".tsv"}
JSON = {".json", ".geojson"}
OFFICE = {".xlsx": "xlsx", ".xlsm": "xlsx", ".pptx": "pptx", ".epub": "epub", ".ipynb": "notebook",
          ".eml": "email"}  # fmt: skip
_ZIP_MARKERS = (("word/document.xml", "docx"), ("xl/workbook.xml", "xlsx"),
                ("ppt/presentation.xml", "pptx"), ("META-INF/container.xml", "epub"))  # fmt: skip
CODE = {
    ".py", ".pyi", ".js", ".mjs", ".cjs", ".ts", ".tsx", ".jsx", ".java", ".kt", ".scala",
    ".c", ".h", ".cc", ".cpp", ".hpp", ".cs", ".go", ".rs", ".rb", ".php", ".swift",
    ".m", ".r", ".jl", ".lua", ".pl", ".sh", ".bash", ".zsh", ".ps1", ".sql", ".yaml",
    ".yml", ".toml", ".ini", ".cfg", ".conf", ".xml", ".css", ".scss", ".tex", ".hs",
    ".ex", ".exs", ".erl", ".clj", ".dart", ".vue", ".svelte", ".proto", ".graphql",
    ".dockerfile", ".makefile", ".gradle",
}  # fmt: skip
KNOWN_BINARY = {
    ".doc": "Word 97-2003 (.doc)", ".xls": "Excel 97-2003 (.xls)",
    ".ppt": "PowerPoint 97-2003 (.ppt)", ".odt": "OpenDocument (.odt)",
    ".rtf": "RTF", ".zip": "a zip archive", ".gz": "a gzip archive",
    ".mp3": "audio",
    ".mp4": "video", ".exe": "a program", ".so": "a shared library", ".bin": "binary data",
}  # fmt: skip
SUPPORTED = (
    "PDF, DOCX, XLSX, PPTX, EPUB, HTML, e-mail (.eml), Jupyter notebooks, text, Markdown, "
    "CSV, JSON, source code and images (by OCR)"
)
IMAGES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp", ".webp"}
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"GIF87a",
                b"GIF89a", b"BM")  # fmt: skip


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def detect_format(data: bytes, name: str) -> str:  # noqa: PLR0911, PLR0912
    """pdf, docx, xlsx, pptx, epub, notebook, email, html, image, markdown, csv, json,
    code or text. Raises ParseError for binaries."""
    ext = Path(name).suffix.lower()
    head = data[:1024].lstrip()
    if head.startswith(b"%PDF") or ext == ".pdf":
        return "pdf"
    if ext in (".docx", ".docm", ".dotx"):
        return "docx"
    if ext in OFFICE:
        return OFFICE[ext]
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                names = set(z.namelist())
            for marker, fmt in _ZIP_MARKERS:
                if marker in names:
                    return fmt
        except zipfile.BadZipFile:
            pass  # not a zip after all: judged below like any other bytes
    if ext in IMAGES or data.startswith(_IMAGE_MAGIC) or data[8:12] == b"WEBP":
        return "image"
    if ext in KNOWN_BINARY:
        raise ParseError(
            f"{name}: {KNOWN_BINARY[ext]} is not a format shesha reads.",
            hint=f"Convert it to one of: {SUPPORTED}.",
        )
    if looks_binary(data):
        raise ParseError(
            f"{name}: this looks like a binary file, not a document.",
            hint=f"shesha reads {SUPPORTED}.",
        )
    if ext in HTML:
        return "html"
    if ext in MARKDOWN:
        return "markdown"
    if ext in CSV:
        return "csv"
    if ext in JSON:
        return "json"
    if ext in CODE:
        return "code"
    lowered = head[:512].lower()
    if lowered.startswith((b"<!doctype html", b"<html")):
        return "html"
    return "text"


ZIPPED = {"docx", "xlsx", "pptx", "epub"}


def parse_bytes(
    data: bytes,
    name: str,
    password: str | None = None,
    ocr: OcrSettings | None = None,
    bounds: ParseBounds = DEFAULT,
) -> ParsedDocument:
    """Parse one document's bytes; ``name`` is used for the format and in errors. ``ocr``
    says whether and how to read scanned pages and images (None: not at all). A file past
    one of ``bounds`` fails with a ParseError naming the bound, before the work where the
    format allows (``bounds.py``)."""
    if not data:
        raise ParseError(
            f"{name}: the file is empty (0 bytes).", hint="Check the file, or leave it out."
        )
    sha = sha256_bytes(data)
    fmt = detect_format(data, name)
    if fmt in ZIPPED:
        check_zip(data, name, bounds)
    if fmt == "pdf":
        check_pdf_streams(data, name, bounds)
        doc = _parser("pdf")(data, name, sha, password, ocr)
    elif fmt == "image":
        doc = _parser("image")(data, name, sha, ocr, bounds)
    elif fmt == "email":  # attachments are documents too, parsed by the same rules
        doc = _parser("email")(
            data,
            name,
            sha,
            lambda inner, inner_name: parse_bytes(inner, inner_name, password, ocr, bounds),
        )
    elif fmt == "epub":
        doc = _parser("epub")(data, name, sha, bounds)
    elif fmt in _PARSERS:
        doc = _parser(fmt)(data, name, sha)
    else:
        doc = parse_text(data, name, sha, fmt)
    check_chars(doc.text, name, bounds)
    return doc


def parse_file(
    path: str | Path,
    password: str | None = None,
    ocr: OcrSettings | None = None,
    bounds: ParseBounds = DEFAULT,
) -> ParsedDocument:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ParseError(f"{p}: cannot be read ({e.strerror or e}).", hint="Check the path.") from e
    return parse_bytes(data, p.name, password, ocr, bounds)
