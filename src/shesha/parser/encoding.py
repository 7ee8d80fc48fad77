"""Decoding bytes to text: BOM, then strict UTF-8, then a declared charset that the
bytes actually satisfy, then detection (charset-normalizer)."""

from __future__ import annotations

import codecs
import re

from charset_normalizer import from_bytes

_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
]


def bom_encoding(data: bytes) -> str | None:
    for bom, name in _BOMS:  # UTF-32 LE starts with the UTF-16 LE BOM: test it first
        if data.startswith(bom):
            return name
    return None


def _normalise(name: str) -> str | None:
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def decode(data: bytes, declared: str | None = None) -> tuple[str, str, list[str]]:
    """Return (text, encoding, warnings). Never raises for odd bytes: the last resort
    decodes with replacement characters and says so."""
    warnings: list[str] = []
    bom = bom_encoding(data)
    if bom:
        return data.decode(bom, errors="replace"), bom.replace("-sig", ""), warnings
    try:
        return data.decode("utf-8"), "utf-8", warnings
    except UnicodeDecodeError:
        pass  # not UTF-8: try what the document declares, then detection
    if declared:
        name = _normalise(declared)
        if name is None:
            warnings.append(f"unknown declared charset {declared!r} ignored")
        else:
            # Real pages lie about their charset: use the declaration only if it fits.
            try:
                return data.decode(name), name, warnings
            except UnicodeDecodeError:
                warnings.append(f"declared charset {declared!r} does not fit the bytes; detected")
    best = from_bytes(data[: 1 << 20]).best()
    if best is not None and best.encoding:
        name = best.encoding
        return data.decode(name, errors="replace"), name, warnings
    warnings.append("encoding not recognised: decoded as cp1252 with replacements")
    return data.decode("cp1252", errors="replace"), "cp1252", warnings


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]+)""", re.I)
_XML_ENCODING = re.compile(rb"""<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9_\-.]+)""", re.I)


def declared_charset(data: bytes) -> str | None:
    """The charset an HTML or XML document declares in its first bytes, if any."""
    head = data[:8192]
    m = _META_CHARSET.search(head) or _XML_ENCODING.search(head)
    return m.group(1).decode("ascii") if m else None


def looks_binary(data: bytes) -> bool:
    """NUL bytes (outside a UTF-16/32 BOM) or mostly control bytes mean binary."""
    if bom_encoding(data):
        return False
    sample = data[:8192]
    if b"\x00" in sample:
        return True
    if not sample:
        return False
    controls = sum(1 for b in sample if b < 9 or 13 < b < 32)
    return controls / len(sample) > 0.1
