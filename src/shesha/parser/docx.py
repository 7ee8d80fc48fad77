"""DOCX text: body paragraphs and tables in order, list numbering, text boxes,
headers and footers, footnotes and endnotes.

python-docx opens the package; the XML is walked directly, since python-docx's API does
not reach footnotes, text boxes or content controls. A file python-docx cannot open
(Strict OOXML, broken parts) degrades to a plain XML text extraction, with a warning.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections import defaultdict
from typing import Any

import docx
from docx.opc.exceptions import PackageNotFoundError
from lxml import etree

from shesha.errors import ParseError
from shesha.parser.document import ParsedDocument

W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
MC = "http://schemas.openxmlformats.org/markup-compatibility/2006"
_w = f"{{{W}}}"
_HEADING = re.compile(r"^(?:Heading|heading)\s?(\d)$")
_BULLETS = {"bullet", "none"}


class _Numbering:
    """Numbering formats per (numId, level), and running counters for numbered lists."""

    def __init__(self, root: Any | None) -> None:
        self.formats: dict[tuple[str, str], str] = {}
        self.counters: dict[tuple[str, str], int] = defaultdict(int)
        if root is None:
            return
        abstract: dict[str, dict[str, str]] = {}
        for a in root.iter(f"{_w}abstractNum"):
            levels = {}
            for lvl in a.iter(f"{_w}lvl"):
                fmt = lvl.find(f"{_w}numFmt")
                levels[lvl.get(f"{_w}ilvl", "0")] = (
                    fmt.get(f"{_w}val", "decimal") if fmt is not None else "decimal"
                )
            abstract[a.get(f"{_w}abstractNumId", "")] = levels
        for num in root.iter(f"{_w}num"):
            ref = num.find(f"{_w}abstractNumId")
            if ref is None:
                continue
            for ilvl, fmt in abstract.get(ref.get(f"{_w}val", ""), {}).items():
                self.formats[(num.get(f"{_w}numId", ""), ilvl)] = fmt

    def prefix(self, num_id: str, ilvl: str) -> str:
        fmt = self.formats.get((num_id, ilvl), "bullet")
        indent = "  " * int(ilvl) if ilvl.isdigit() else ""
        if fmt in _BULLETS:
            return f"{indent}- "
        self.counters[(num_id, ilvl)] += 1
        return f"{indent}{self.counters[(num_id, ilvl)]}. "


class _Walker:
    def __init__(
        self,
        numbering: _Numbering,
        styles: dict[str, str],
        style_numbering: dict[str, tuple[str, str]],
    ) -> None:
        self.numbering = numbering
        self.styles = styles  # style id -> style name
        self.style_numbering = style_numbering  # style id -> (numId, ilvl)

    def runs_text(self, p: Any) -> str:
        """A paragraph's own text: runs, tabs and breaks, not its text boxes."""
        out: list[str] = []
        for el in p.iter():
            tag = el.tag
            if not isinstance(tag, str):
                continue
            if _inside(el, p, ("txbxContent", "Fallback")):
                continue
            if tag == f"{_w}t":
                out.append(el.text or "")
            elif tag == f"{_w}tab":
                out.append("\t")
            elif tag in (f"{_w}br", f"{_w}cr"):
                out.append("\n")
            elif tag == f"{_w}noBreakHyphen":
                out.append("-")
        return "".join(out)

    def paragraph(self, p: Any) -> list[str]:
        text = self.runs_text(p).strip()
        lines: list[str] = []
        if text:
            ppr = p.find(f"{_w}pPr")
            prefix = ""
            if ppr is not None:
                style = ppr.find(f"{_w}pStyle")
                name = self.styles.get(style.get(f"{_w}val", ""), "") if style is not None else ""
                m = _HEADING.match(name) or (
                    _HEADING.match(style.get(f"{_w}val", "")) if style is not None else None
                )
                if m:
                    prefix = "#" * int(m.group(1)) + " "
                num = ppr.find(f"{_w}numPr")
                nid, level = "", "0"
                if num is not None:
                    num_id = num.find(f"{_w}numId")
                    ilvl = num.find(f"{_w}ilvl")
                    nid = num_id.get(f"{_w}val", "") if num_id is not None else ""
                    level = ilvl.get(f"{_w}val", "0") if ilvl is not None else "0"
                elif style is not None:
                    nid, level = self.style_numbering.get(style.get(f"{_w}val", ""), ("", "0"))
                if nid and nid != "0" and not prefix:
                    prefix = self.numbering.prefix(nid, level)
            lines.append(prefix + text)
        for box in p.iter(f"{_w}txbxContent"):
            if _inside(box, p, ("Fallback",)) or _inside(box, p, ("txbxContent",)):
                continue
            lines.extend(self.block(box))
        return lines

    def table(self, tbl: Any) -> list[str]:
        rows: list[str] = []
        for tr in tbl.iterchildren(f"{_w}tr"):
            cells: list[str] = []
            for tc in tr.iterchildren(f"{_w}tc"):
                tcpr = tc.find(f"{_w}tcPr")
                vmerge = tcpr.find(f"{_w}vMerge") if tcpr is not None else None
                if vmerge is not None and vmerge.get(f"{_w}val") != "restart":
                    continue  # a continuation of a vertically merged cell: counted once
                cells.append(" ".join(line.strip() for line in self.block(tc)).strip())
            if any(cells):
                rows.append(" | ".join(cells))
        return rows

    def block(self, container: Any) -> list[str]:
        lines: list[str] = []
        for child in container.iterchildren():
            tag = child.tag
            if tag == f"{_w}p":
                lines.extend(self.paragraph(child))
            elif tag == f"{_w}tbl":
                lines.extend(self.table(child))
                lines.append("")
            elif tag in (f"{_w}sdt", f"{_w}customXml", f"{_w}smartTag"):
                content = child.find(f"{_w}sdtContent") if tag == f"{_w}sdt" else child
                if content is not None:
                    lines.extend(self.block(content))
            elif tag == f"{{{MC}}}AlternateContent":
                choice = child.find(f"{{{MC}}}Choice")
                if choice is not None:
                    lines.extend(self.block(choice))
        return lines


def _inside(el: Any, stop: Any, names: tuple[str, ...]) -> bool:
    """Whether el sits inside an element with one of these local names, below stop."""
    parent = el.getparent()
    while parent is not None and parent is not stop:
        if etree.QName(parent).localname in names:
            return True
        parent = parent.getparent()
    return False


def _notes(part: Any, kind: str, walker: _Walker) -> list[str]:
    lines: list[str] = []
    root = getattr(part, "element", None)
    if root is None:  # python-docx keeps foot/endnotes as plain parts: parse their XML
        root = etree.fromstring(part.blob, parser=etree.XMLParser(resolve_entities=False))
    for note in root.iter(f"{_w}{kind}"):
        if note.get(f"{_w}type") in ("separator", "continuationSeparator", "continuationNotice"):
            continue
        text = " ".join(line for line in walker.block(note) if line).strip()
        if text:
            lines.append(f"[^{note.get(f'{_w}id')}]: {text}")
    return lines


def _structured(data: bytes) -> tuple[str, list[str]]:  # noqa: PLR0912
    document = docx.Document(io.BytesIO(data))
    part = document.part
    try:
        numbering_root = part.numbering_part.element
    except (KeyError, NotImplementedError):
        numbering_root = None
    styles: dict[str, str] = {}
    style_numbering: dict[str, tuple[str, str]] = {}
    try:
        for s in part.styles.element.iter(f"{_w}style"):
            sid = s.get(f"{_w}styleId", "")
            name = s.find(f"{_w}name")
            if name is not None:
                styles[sid] = name.get(f"{_w}val", "")
            num_id = s.find(f"{_w}pPr/{_w}numPr/{_w}numId")
            if num_id is not None:
                ilvl = s.find(f"{_w}pPr/{_w}numPr/{_w}ilvl")
                level = ilvl.get(f"{_w}val", "0") if ilvl is not None else "0"
                style_numbering[sid] = (num_id.get(f"{_w}val", ""), level)
    except (KeyError, NotImplementedError):
        styles = {}
    walker = _Walker(_Numbering(numbering_root), styles, style_numbering)
    headers: list[str] = []
    footers: list[str] = []
    seen: set[str] = set()
    for section in document.sections:
        for attr, sink in (
            ("header", headers),
            ("first_page_header", headers),
            ("even_page_header", headers),
            ("footer", footers),
            ("first_page_footer", footers),
            ("even_page_footer", footers),
        ):
            hf = getattr(section, attr)
            if hf.is_linked_to_previous:
                continue
            text = "\n".join(line for line in walker.block(hf._element) if line).strip()
            if text and text not in seen:
                seen.add(text)
                sink.append(text)
    body = walker.block(document.element.body)
    notes: list[str] = []
    for rel in part.rels.values():
        if rel.is_external:
            continue
        if rel.reltype.endswith("/footnotes"):
            notes += _notes(rel.target_part, "footnote", walker)
        elif rel.reltype.endswith("/endnotes"):
            notes += _notes(rel.target_part, "endnote", walker)
    sections: list[str] = []
    if headers:
        sections.append("--- Header ---\n" + "\n".join(headers))
    sections.append(_tidy("\n".join(body)))
    if notes:
        sections.append("--- Notes ---\n" + "\n".join(notes))
    if footers:
        sections.append("--- Footer ---\n" + "\n".join(footers))
    return "\n\n".join(s for s in sections if s.strip()), []


_ANY_T = re.compile(r"<(?:\w+:)?t(?:\s[^>]*)?>([^<]*)</(?:\w+:)?t>")
_ANY_P_END = re.compile(r"</(?:\w+:)?p>")


def _raw_xml(data: bytes, reason: str) -> tuple[str, list[str]]:
    """Any WordprocessingML namespace (Strict too): text of w:t, a line per paragraph."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = [
            n
            for n in z.namelist()
            if re.fullmatch(r"word/(document|header\d*|footer\d*|footnotes|endnotes)\.xml", n)
        ]
        if "word/document.xml" not in names:
            raise ParseError("no word/document.xml inside")
        names.sort(key=lambda n: n != "word/document.xml")
        chunks = []
        for n in names:
            xml = z.read(n).decode("utf-8", errors="replace")
            paragraphs = _ANY_P_END.split(xml)
            chunks.append(
                "\n".join(t for t in ("".join(_ANY_T.findall(p)).strip() for p in paragraphs) if t)
            )
    warning = f"python-docx could not open this file ({reason}); text was read from the raw XML"
    return "\n\n".join(c for c in chunks if c), [warning]


def _tidy(text: str) -> str:
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def parse_docx(data: bytes, name: str, sha256: str) -> ParsedDocument:
    if not data:
        raise ParseError(f"{name}: the file is empty (0 bytes).", hint="Check the file.")
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise ParseError(
            f"{name}: not a valid DOCX: the zip archive is damaged or truncated.",
            hint="Open and re-save it in Word or LibreOffice, then add it again.",
        )
    parser = "docx:python-docx"
    try:
        text, warnings = _structured(data)
    except (PackageNotFoundError, KeyError, ValueError, etree.XMLSyntaxError) as e:
        try:
            text, warnings = _raw_xml(data, f"{type(e).__name__}: {e}")
        except (zipfile.BadZipFile, ParseError, KeyError) as raw_error:
            raise ParseError(
                f"{name}: not a readable DOCX ({e}; {raw_error}).",
                hint="Open and re-save it in Word or LibreOffice, then add it again.",
            ) from e
        parser = "docx:xml-fallback"
    if not text.strip():
        warnings.append("the document has no text (images only, or empty)")
    text = text.strip() + "\n" if text.strip() else ""
    return ParsedDocument.of(
        text,
        data,
        sha256,
        fmt="docx",
        parser=parser,
        warnings=warnings,
    )
