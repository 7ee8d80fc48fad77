"""E-books (EPUB 2 and 3): the chapters in reading order (the package's spine), each
XHTML chapter read as HTML is. The title and author come from the package metadata.
Images, styles and the navigation document itself are not kept."""

from __future__ import annotations

import io
import posixpath
import zipfile
from xml.etree import ElementTree as ET

from shesha.errors import ParseError
from shesha.parser.bounds import DEFAULT, ParseBounds, check_pages, too_much
from shesha.parser.document import ParsedDocument
from shesha.parser.encoding import decode
from shesha.parser.html import html_to_text

DAMAGED_HINT = "Open it in an e-book reader or Calibre and save it again, then add it again."
MAX_XML = 16 << 20
MAX_CHAPTER = 64 << 20
_NS = {
    "c": "urn:oasis:names:tc:opendocument:xmlns:container",
    "opf": "http://www.idpf.org/2007/opf",
    "dc": "http://purl.org/dc/elements/1.1/",
}


def _member(z: zipfile.ZipFile, path: str, name: str, limit: int) -> bytes:
    """A member's bytes, refused past ``limit`` by its declared size and while reading
    (a zip bomb declares small and inflates large)."""
    try:
        info = z.getinfo(path)
    except KeyError as e:
        raise ParseError(f"{name}: the EPUB has no {path}.", hint=DAMAGED_HINT) from e
    if info.file_size > limit:
        raise ParseError(f"{name}: {path} is too large to read.", hint=DAMAGED_HINT)
    with z.open(info) as f:
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise ParseError(f"{name}: {path} is too large to read.", hint=DAMAGED_HINT)
    return raw


def _xml(z: zipfile.ZipFile, path: str, name: str) -> ET.Element:
    raw = _member(z, path, name, MAX_XML)
    if len(raw) > MAX_XML or (b"<!DOCTYPE" in raw[:2048] and b"<!ENTITY" in raw):
        raise ParseError(f"{name}: {path} is too large or declares entities.", hint=DAMAGED_HINT)
    try:
        return ET.fromstring(raw)  # noqa: S314 (entities refused above)
    except ET.ParseError as e:
        raise ParseError(f"{name}: {path} is not valid XML ({e}).", hint=DAMAGED_HINT) from e


def parse_epub(
    data: bytes, name: str, sha256: str, bounds: ParseBounds = DEFAULT
) -> ParsedDocument:
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise ParseError(
            f"{name}: the EPUB is damaged (not a zip archive).", hint=DAMAGED_HINT
        ) from e
    with z:
        root = _xml(z, "META-INF/container.xml", name).find(".//c:rootfile", _NS)
        if root is None or not root.get("full-path"):
            raise ParseError(f"{name}: the EPUB names no package file.", hint=DAMAGED_HINT)
        opf_path = str(root.get("full-path"))
        package = _xml(z, opf_path, name)
        base = posixpath.dirname(opf_path)
        items = {item.get("id"): item for item in package.findall(".//opf:manifest/opf:item", _NS)}
        title = package.findtext(".//dc:title", default="", namespaces=_NS).strip()
        author = package.findtext(".//dc:creator", default="", namespaces=_NS).strip()
        parts: list[str] = []
        warnings: list[str] = []
        spine = package.findall(".//opf:spine/opf:itemref", _NS)
        check_pages(len(spine), name, bounds, unit="chapters in its spine")
        produced = 0
        seen: set[str] = set()
        for ref in spine:
            idref = str(ref.get("idref"))
            if idref in seen:  # named again: its text is in already
                warnings.append(f"the spine names {idref!r} more than once; it is read once")
                continue
            seen.add(idref)
            item = items.get(idref)
            if item is None or (
                "properties" in item.attrib and "nav" in str(item.get("properties"))
            ):
                continue
            href = posixpath.normpath(posixpath.join(base, str(item.get("href"))))
            try:
                markup = decode(_member(z, href, name, MAX_CHAPTER)).text
            except (ParseError, zipfile.BadZipFile, OSError) as e:
                warnings.append(f"chapter {href} could not be read ({str(e).splitlines()[0]})")
                continue
            text = html_to_text(markup).strip()
            produced += len(text)
            if produced > bounds.chars:  # a spine may name one chapter many times
                raise too_much(
                    name,
                    f"its chapters give more than {bounds.chars:,} characters of text",
                    f"{bounds.chars:,} characters a file",
                    "chars",
                )
            if text:
                parts.append(f"--- Chapter {len(parts) + 1} ---\n{text}")
    if not parts:
        raise ParseError(f"{name}: the EPUB has no readable chapter.", hint=DAMAGED_HINT)
    head = "\n".join(
        x for x in (f"Title: {title}" if title else "", f"Author: {author}" if author else "") if x
    )
    text = (head + "\n\n" if head else "") + "\n\n".join(parts) + "\n"
    return ParsedDocument.of(
        text,
        data,
        sha256,
        fmt="epub",
        pages=len(parts),
        parser="epub:zipfile+beautifulsoup4",
        warnings=warnings,
    )
