"""Small files that would inflate past a gigabyte, or run for minutes, if parsed without
bounds: each is built here, in memory, in a second or two."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

from tests.fixtures import pdf_of

GIB = 1 << 30


def zip_with(members: dict[str, bytes], bomb_name: str, pattern: bytes, size: int) -> bytes:
    """A zip of small ``members`` and one member ``bomb_name`` that inflates to ``size``
    bytes of ``pattern``, honestly declared (zip64), written as a stream."""
    buf = io.BytesIO()
    chunk = pattern * ((1 << 24) // len(pattern))
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, data in members.items():
            z.writestr(name, data)
        with z.open(bomb_name, "w", force_zip64=True) as f:
            left = size
            while left > 0:
                piece = chunk[: min(len(chunk), left)]
                f.write(piece)
                left -= len(piece)
    return buf.getvalue()


CONTENT_TYPES = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    b'<Default Extension="rels" '
    b'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    b'<Default Extension="xml" ContentType="application/xml"/>'
    b'<Override PartName="/word/document.xml" ContentType="application/'
    b'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
    b"</Types>"
)
RELS = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    b'<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    b'relationships/officeDocument" Target="word/document.xml"/>'
    b"</Relationships>"
)


def docx_bomb(size: int = 2 * GIB) -> bytes:
    """A DOCX whose document.xml inflates to ``size`` bytes of paragraphs."""
    members = {"[Content_Types].xml": CONTENT_TYPES, "_rels/.rels": RELS}
    return zip_with(members, "word/document.xml", b"<w:p><w:r><w:t>bomb</w:t></w:r></w:p>", size)


def xlsx_bomb(size: int = 2 * GIB) -> bytes:
    members = {
        "[Content_Types].xml": b"<Types/>",
        "xl/workbook.xml": b"<workbook/>",
    }
    return zip_with(members, "xl/worksheets/sheet1.xml", b"<row><c><v>1</v></c></row>", size)


def pptx_bomb(size: int = 2 * GIB) -> bytes:
    members = {
        "[Content_Types].xml": b"<Types/>",
        "ppt/presentation.xml": b"<presentation/>",
    }
    return zip_with(members, "ppt/slides/slide1.xml", b"<a:t>bomb</a:t>", size)


def pdf_bomb(size: int = 2 * GIB) -> bytes:
    """A one-page PDF whose content stream inflates to ``size`` bytes."""
    z = zlib.compressobj(1)
    chunk = b"BT ET\n" * ((1 << 24) // 6)
    parts = []
    left = size
    while left > 0:
        piece = chunk[: min(len(chunk), left)]
        parts.append(z.compress(piece))
        left -= len(piece)
    parts.append(z.flush())
    stream = b"".join(parts)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    return pdf_of(objects)


def gif_bomb(frames: int = 300, side: int = 10_000) -> bytes:
    """A GIF whose logical screen is ``side`` x ``side``, with ``frames`` frames of one
    pixel each: a few KB that decode to ``frames`` full screens."""
    out = bytearray(b"GIF89a")
    out += struct.pack("<HHBBB", side, side, 0x80, 0, 0)  # global colour table of 2
    out += b"\x00\x00\x00\xff\xff\xff"
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop
    for _ in range(frames):
        out += b"\x21\xf9\x04\x04\x00\x00\x00\x00"  # graphic control: do not dispose
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
        out += b"\x02\x02\x44\x01\x00"  # LZW min code size 2, one pixel
    out += b"\x3b"
    return bytes(out)


def epub_repeating(times: int = 160, chapter_mb: int = 1) -> bytes:
    """An EPUB whose spine names one chapter of ``chapter_mb`` MB ``times`` times."""
    chapter = b"<html><body><p>" + b"word " * (chapter_mb * (1 << 20) // 5) + b"</p></body></html>"
    refs = b"".join(b'<itemref idref="c"/>' for _ in range(times))
    opf = (
        b'<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
        b'<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Bomb</dc:title></metadata>'
        b'<manifest><item id="c" href="c.xhtml" media-type="application/xhtml+xml"/></manifest>'
        b"<spine>" + refs + b"</spine></package>"
    )
    container = (
        b'<?xml version="1.0"?><container xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
        b'version="1.0"><rootfiles><rootfile full-path="book.opf" '
        b'media-type="application/oebps-package+xml"/></rootfiles></container>'
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("mimetype", b"application/epub+zip", compress_type=zipfile.ZIP_STORED)
        z.writestr("META-INF/container.xml", container)
        z.writestr("book.opf", opf)
        z.writestr("c.xhtml", chapter)
    return buf.getvalue()
