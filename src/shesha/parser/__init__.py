"""Document parsers: text and metadata from PDF, DOCX, HTML, text and data files."""

from shesha.parser.document import DocumentMeta, ParsedDocument
from shesha.parser.registry import detect_format, parse_bytes, parse_file, sha256_bytes

__all__ = [
    "DocumentMeta",
    "ParsedDocument",
    "detect_format",
    "parse_bytes",
    "parse_file",
    "sha256_bytes",
]
