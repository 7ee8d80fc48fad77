"""HTML text in reading order, without scripts, styles, navigation and other noise.

The bytes are decoded here first, by the WHATWG rule in ``encoding.py`` (BOM, declared
charset checked against the bytes, detection), because pages lie about their charset.
"""

from __future__ import annotations

import re
import sys
import warnings

from bs4 import BeautifulSoup, Comment, Tag, XMLParsedAsHTMLWarning
from bs4.element import NavigableString

from shesha.parser.document import ParsedDocument
from shesha.parser.encoding import declared_charset, decode

NOISE = {
    "script", "style", "noscript", "template", "svg", "canvas", "iframe", "object",
    "embed", "nav", "aside", "footer", "form", "button", "select", "input", "textarea",
    "head", "meta", "link",
}  # fmt: skip
BLOCK = {
    "p", "div", "section", "article", "main", "header", "blockquote", "pre", "address",
    "figure", "figcaption", "dl", "dt", "dd", "ul", "ol", "table", "thead", "tbody",
    "tfoot", "caption", "hr", "details", "summary", "center", "body", "html",
}  # fmt: skip
HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}


def _hidden(tag: Tag) -> bool:
    style = str(tag.get("style") or "").replace(" ", "").lower()
    return (
        tag.has_attr("hidden")
        or tag.get("aria-hidden") == "true"
        or tag.get("role") in ("navigation", "banner", "contentinfo", "search")
        or "display:none" in style
    )


class _Text:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.current: list[str] = []

    def inline(self, s: str) -> None:
        self.current.append(s)

    def newline(self) -> None:
        line = re.sub(r"[ \t\r\f\v\xa0]+", " ", "".join(self.current)).strip()
        if line:
            self.lines.append(line)
        self.current = []


def _walk(node: Tag, out: _Text) -> None:
    for child in node.children:
        if isinstance(child, Comment):
            continue
        if isinstance(child, NavigableString):
            out.inline(str(child))
            continue
        if not isinstance(child, Tag):
            continue
        name = child.name.lower() if child.name else ""
        if name in NOISE or _hidden(child):
            continue
        if name == "br":
            out.newline()
            continue
        if name in HEADINGS:
            out.newline()
            out.inline("#" * HEADINGS[name] + " ")
            _walk(child, out)
            out.newline()
        elif name == "li":
            out.newline()
            out.inline("- ")
            _walk(child, out)
            out.newline()
        elif name == "tr":
            out.newline()
            cells = [
                " ".join(c.get_text(" ", strip=True).split())
                for c in child.find_all(["td", "th"], recursive=False)
            ]
            out.inline(" | ".join(c for c in cells))
            out.newline()
        elif name in BLOCK:
            out.newline()
            _walk(child, out)
            out.newline()
        else:
            _walk(child, out)


def html_to_text(markup: str) -> str:
    with warnings.catch_warnings():
        # XHTML (e.g. SEC filings) is parsed as HTML on purpose: it is read for its text.
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(markup, "lxml")
    out = _Text()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if title:
        out.lines.append(f"Title: {title}")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))  # real pages nest deeply
    try:
        _walk(soup.body or soup, out)
    finally:
        sys.setrecursionlimit(limit)
    out.newline()
    return "\n".join(out.lines)


def parse_html(data: bytes, name: str, sha256: str) -> ParsedDocument:
    decoded = decode(data, declared_charset(data))
    notes = decoded.warnings
    text = html_to_text(decoded.text)
    if not text.strip():
        notes.append("the page has no visible text")
    text = text + "\n" if text else ""
    return ParsedDocument.of(
        text,
        data,
        sha256,
        fmt="html",
        parser="html:beautifulsoup4",
        encoding=decoded.encoding,
        encoding_source=decoded.source,
        encoding_confidence=decoded.confidence,
        warnings=notes,
    )
