"""What a parser returns: the text and its metadata."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class DocumentMeta(BaseModel):
    """Per-document metadata, as stored and as shown by `shesha docs`."""

    model_config = ConfigDict(extra="forbid")

    format: str = Field(
        description="pdf, docx, xlsx, pptx, epub, notebook, email, html, image, text, "
        "markdown, csv, json, code"
    )
    pages: int | None = Field(None, description="pages, for formats that have them")
    chars: int = Field(description="characters of extracted text")
    sha256: str = Field(description="sha256 of the source bytes")
    source_bytes: int = Field(description="size of the source file")
    parser: str = Field(description="the parser (and library) that produced the text")
    encoding: str | None = Field(None, description="the text encoding (its WHATWG name)")
    encoding_source: Literal["bom", "declared", "detected", "default"] | None = Field(
        None, description="how the encoding was decided"
    )
    encoding_confidence: float | None = Field(
        None, description="1 for a BOM, a declaration or valid UTF-8; lower for a guess"
    )
    ocr_pages: list[int] = Field(default_factory=list, description="pages read by OCR")
    warnings: list[str] = Field(default_factory=list)


class ParsedDocument(BaseModel):
    text: str
    meta: DocumentMeta

    @classmethod
    def of(
        cls, text: str, source: bytes, sha256: str, *, fmt: str, parser: str, **meta: Any
    ) -> ParsedDocument:
        """A parser's text with its metadata; the counts (characters, source bytes) are
        taken from the text and the source here, not by each parser."""
        return cls(
            text=text,
            meta=DocumentMeta(
                format=fmt,
                chars=len(text),
                sha256=sha256,
                source_bytes=len(source),
                parser=parser,
                **meta,
            ),
        )
