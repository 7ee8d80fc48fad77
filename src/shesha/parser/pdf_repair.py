"""Rebuilding a damaged PDF from the objects that survive in it.

A PDF cut off mid-download loses its end: the cross-reference table or stream, the
trailer, and with them the way to the catalog and the page tree. pdfium's own recovery
then fails on most files, and so do pypdf (non-strict) and qpdf: on truncated copies of
the real PDFs in ``../shared/corpus`` (cut at 30, 60, 90 and 99 %) they read 144, 97 and
96 of 2,996 pages; this rebuild reads 2,183 (``tests/shared/test_damaged_pdfs.py``
measures it). Most pages before the cut are intact; only the index to them is gone.

How: scan the bytes for every complete ``N G obj ... endobj``; open the complete object
streams (``/Type /ObjStm``, where PDF 1.5+ files keep most of their objects) to get the
objects inside; keep every object that is a page (``/Type /Page``), giving it what it
inherited from the page tree (resources, boxes, rotation); and write a new, small PDF:
the objects, a fresh page tree of the pages found, a catalog and a cross-reference
table. pdfium reads that one. Streams get their real length, since a ``/Length`` that
points to a lost object would otherwise lose the stream.

Page order and numbers come from the old page tree when it survived whole (then the
pages lost are named); otherwise pages are in file order and their numbers unknown.

What cannot be saved: pages whose objects sit in an object stream the cut went through,
or after it; encrypted files (their key was in the lost trailer); pages whose fonts were
lost show no text, or garbage, which ``parse_pdf`` drops.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

_OBJ_HEAD = re.compile(rb"(?<![0-9])(\d{1,10})\s+(\d{1,5})\s+obj\b")
_ENDOBJ = re.compile(rb"\bendobj\b")
_STREAM = re.compile(rb"\bstream(?:\r\n|\n|\r)")
_REF = re.compile(rb"(\d{1,10})\s+\d{1,5}\s+R\b")
_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z0-9])")
_PAGES = re.compile(rb"/Type\s*/Pages(?![A-Za-z0-9])")
_SKIP = re.compile(rb"/Type\s*/(?:ObjStm|XRef)(?![A-Za-z0-9])")
_LENGTH = re.compile(rb"/Length(?![A-Za-z0-9])\s*\d+(?:\s+\d+\s+R)?")
_INHERITED = (b"Resources", b"MediaBox", b"CropBox", b"Rotate")
_LETTER_SIZE = b"[0 0 612 792]"
MAX_OBJECT_STREAM = 64 << 20
"""An object stream that inflates past this is not opened (a zip bomb guard)."""


@dataclass(frozen=True)
class PdfObject:
    body: bytes
    """The object's dictionary (or other value), without ``obj`` / ``endobj``."""
    stream: bytes | None = None


@dataclass(frozen=True)
class Rebuilt:
    data: bytes
    """A new PDF holding the pages that survive."""
    pages: int
    """How many pages ``data`` holds."""
    page_numbers: list[int] | None
    """Each page's number in the original, when its page tree survived whole."""
    original_pages: int | None
    """How many pages the original had, when its page tree says so."""
    fonts_lost: list[int]
    """Pages (by position in ``data``, from 0) that use a font whose objects are lost:
    their text may come out as glyph numbers or in the wrong code page."""


def surviving_objects(data: bytes) -> tuple[dict[int, PdfObject], int]:
    """The complete objects in ``data``, with those inside complete object streams; and
    how many object streams were cut or could not be opened."""
    found: dict[int, PdfObject] = {}
    heads = list(_OBJ_HEAD.finditer(data))
    broken_streams = 0
    for i, head in enumerate(heads):
        start = head.end()
        limit = heads[i + 1].start() if i + 1 < len(heads) else len(data)
        stream = _STREAM.search(data, start, limit)
        end = _ENDOBJ.search(data, start, limit)
        if stream is not None and (end is None or stream.start() < end.start()):
            close = data.rfind(b"endstream", stream.end(), limit)
            if close < 0:  # the cut went through this stream
                broken_streams += b"/ObjStm" in data[start : stream.start()]
                continue
            body = data[start : stream.start()]
            found[int(head.group(1))] = PdfObject(body, data[stream.end() : close].rstrip(b"\r\n"))
        elif end is not None:
            found[int(head.group(1))] = PdfObject(data[start : end.start()])
    for number, obj in list(found.items()):
        if obj.stream is not None and re.search(rb"/Type\s*/ObjStm", obj.body):
            inner = _open_object_stream(obj)
            if inner is None:
                broken_streams += 1
                continue
            for inner_number, body in inner.items():
                found.setdefault(inner_number, PdfObject(body))
            del found[number]
    return found, broken_streams


def _open_object_stream(obj: PdfObject) -> dict[int, bytes] | None:
    assert obj.stream is not None
    count, first = _int(obj.body, b"N"), _int(obj.body, b"First")
    if count is None or first is None:
        return None
    raw = obj.stream
    if b"/FlateDecode" in obj.body:
        try:
            inflater = zlib.decompressobj()
            raw = inflater.decompress(obj.stream, MAX_OBJECT_STREAM)
        except zlib.error:
            return None
    elif b"/Filter" in obj.body:
        return None  # another filter: not worth our own decoder
    numbers = raw[:first].split()
    if not all(n.isdigit() for n in numbers):
        return None  # a damaged header: the stream cannot be opened
    pairs = [(int(numbers[2 * k]), int(numbers[2 * k + 1])) for k in range(len(numbers) // 2)]
    pairs = pairs[:count]
    inner: dict[int, bytes] = {}
    for k, (number, offset) in enumerate(pairs):
        end = pairs[k + 1][1] if k + 1 < len(pairs) else len(raw) - first
        inner[number] = raw[first + offset : first + end].strip()
    return inner


def _int(body: bytes, key: bytes) -> int | None:
    m = re.search(rb"/" + key + rb"(?![A-Za-z0-9])\s*(\d+)", body)
    return int(m.group(1)) if m else None


def dict_value(body: bytes, key: bytes) -> bytes | None:
    """The value of ``/key`` in a dictionary's bytes: a reference, a nested dictionary or
    array (balanced), or a single token."""
    m = re.search(rb"/" + key + rb"(?![A-Za-z0-9])\s*", body)
    if m is None:
        return None
    at = m.end()
    ref = re.compile(rb"\d+\s+\d+\s+R\b").match(body, at)
    if ref:
        return ref.group(0)
    for opening, closing in ((b"<<", b">>"), (b"[", b"]")):
        if body.startswith(opening, at):
            depth, i = 0, at
            while i < len(body):
                if body.startswith(opening, i):
                    depth, i = depth + 1, i + len(opening)
                elif body.startswith(closing, i):
                    depth, i = depth - 1, i + len(closing)
                    if depth == 0:
                        return body[at:i]
                else:
                    i += 1
            return None
    token = re.compile(rb"[^\s/<>\[\]()]+|/[^\s/<>\[\]()]+").match(body, at)
    return token.group(0) if token else None


def _refs(value: bytes | None) -> list[int]:
    return [int(n) for n in _REF.findall(value or b"")]


def rebuild(data: bytes) -> Rebuilt | None:
    """A new PDF of the pages that survive in ``data``, or None when none does (or the
    file is encrypted, whose key was in the lost trailer)."""
    objects, _ = surviving_objects(data)
    if any(
        b"/Standard" in o.body and b"/O" in o.body and b"/U" in o.body for o in objects.values()
    ):
        return None
    pages = [n for n, o in objects.items() if _PAGE.search(o.body)]
    if not pages:
        return None
    order, numbers, original = _page_order(objects, pages)
    top = max(objects) + 1
    tree, catalog = top, top + 1
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets: dict[int, int] = {}
    page_bodies = {n: _as_page(objects, n, tree) for n in order}
    for number in sorted(objects):
        obj = objects[number]
        if _SKIP.search(obj.body):
            continue
        body = page_bodies.get(number, obj.body)
        offsets[number] = len(out)
        out += b"%d 0 obj\n" % number
        if obj.stream is None:
            out += body + b"\nendobj\n"
        else:
            body = _LENGTH.sub(b"/Length %d" % len(obj.stream), body, count=1)
            out += body + b"\nstream\n" + obj.stream + b"\nendstream\nendobj\n"
    kids = b" ".join(b"%d 0 R" % n for n in order)
    offsets[tree] = len(out)
    out += b"%d 0 obj\n<< /Type /Pages /Kids [%s] /Count %d >>\nendobj\n" % (
        tree,
        kids,
        len(order),
    )
    offsets[catalog] = len(out)
    out += b"%d 0 obj\n<< /Type /Catalog /Pages %d 0 R >>\nendobj\n" % (catalog, tree)
    xref = len(out)
    out += b"xref\n0 1\n0000000000 65535 f \n"
    # one subsection per stretch of consecutive numbers: a file that numbers its objects in the
    # billions gets a table as long as its objects, not as long as its largest number
    for first, stretch in _stretches(sorted(offsets)):
        out += b"%d %d\n" % (first, len(stretch))
        out += b"".join(b"%010d 00000 n \n" % offsets[n] for n in stretch)
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        catalog + 1,
        catalog,
        xref,
    )
    lost = [i for i, n in enumerate(order) if _fonts_lost(objects, page_bodies[n])]
    return Rebuilt(bytes(out), len(order), numbers, original, lost)


_FONT_PARTS = (b"ToUnicode", b"FontDescriptor", b"DescendantFonts", b"Encoding", b"Widths")


def _fonts_lost(objects: dict[int, PdfObject], page: bytes) -> bool:
    """Whether a font the page uses (or what maps its glyphs to text) is lost."""
    resources = _resolve(objects, dict_value(page, b"Resources"))
    if resources is None:
        return True
    fonts = _resolve(objects, dict_value(resources, b"Font"))
    if fonts is None:
        return b"/Font" in resources
    for font in _refs(fonts):
        if font not in objects:
            return True
        for part in _FONT_PARTS:
            if any(ref not in objects for ref in _refs(dict_value(objects[font].body, part))):
                return True
    return False


def _resolve(objects: dict[int, PdfObject], value: bytes | None) -> bytes | None:
    """A value, or the object a reference points to (None when it is lost)."""
    if value is None:
        return None
    ref = re.fullmatch(rb"(\d+)\s+\d+\s+R", value.strip())
    if ref is None:
        return value
    target = objects.get(int(ref.group(1)))
    return target.body if target is not None else None


def _stretches(numbers: list[int]) -> list[tuple[int, list[int]]]:
    stretches: list[tuple[int, list[int]]] = []
    for n in numbers:
        if stretches and stretches[-1][1][-1] == n - 1:
            stretches[-1][1].append(n)
        else:
            stretches.append((n, [n]))
    return stretches


def _as_page(objects: dict[int, PdfObject], number: int, tree: int) -> bytes:
    """A page's dictionary, pointed at the new tree, with what it inherited written in."""
    body = objects[number].body.strip()
    added = b""
    for key in _INHERITED:
        if dict_value(body, key) is not None:
            continue
        value = _inherited(objects, body, key)
        if value is None and key == b"MediaBox":
            value = _LETTER_SIZE  # the old tree's box is lost: letter size, as readers do
        if value is not None:
            added += b" /" + key + b" " + value
    body = re.sub(rb"/Parent\s+\d+\s+\d+\s+R", b"", body)
    if body.endswith(b">>"):
        body = body[:-2] + added + b" /Parent %d 0 R >>" % tree
    return body


def _inherited(objects: dict[int, PdfObject], body: bytes, key: bytes) -> bytes | None:
    seen: set[int] = set()
    parent = _refs(dict_value(body, b"Parent"))
    while parent and parent[0] in objects and parent[0] not in seen:
        seen.add(parent[0])
        node = objects[parent[0]].body
        value = dict_value(node, key)
        if value is not None:
            return value
        parent = _refs(dict_value(node, b"Parent"))
    return None


def _page_order(
    objects: dict[int, PdfObject], pages: list[int]
) -> tuple[list[int], list[int] | None, int | None]:
    """The pages in the old tree's order when it survived whole (and their numbers),
    else in file order; and the old page count when the tree's root says it."""
    nodes = {n: o.body for n, o in objects.items() if _PAGES.search(o.body)}
    roots = [
        n for n, body in nodes.items() if not (set(_refs(dict_value(body, b"Parent"))) & set(nodes))
    ]
    if not roots:
        return pages, None, None
    root = max(roots, key=lambda n: _int(nodes[n], b"Count") or 0)
    original = _int(nodes[root], b"Count")
    walked: list[int] = []
    whole = True
    seen: set[int] = set()
    stack = [iter(_refs(dict_value(nodes[root], b"Kids")))]
    while stack:  # depth first, without recursion: trees can be deep in hostile files
        kid = next(stack[-1], None)
        if kid is None:
            stack.pop()
            continue
        if kid in seen:
            continue
        seen.add(kid)
        if kid in nodes:
            stack.append(iter(_refs(dict_value(nodes[kid], b"Kids"))))
        elif kid in objects and _PAGE.search(objects[kid].body):
            walked.append(kid)
        else:
            whole = False
            walked.append(-1)  # a page (or a subtree) that is lost
    page_set = set(pages)
    kept = [n for n in walked if n in page_set]
    rest = [n for n in pages if n not in set(kept)]
    if whole or (original is not None and len(walked) == original):
        numbers = [i + 1 for i, n in enumerate(walked) if n in page_set]
        return kept + rest, (numbers if not rest else None), original
    return kept + rest, None, original
