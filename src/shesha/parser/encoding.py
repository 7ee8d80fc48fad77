"""Decoding bytes to text, decided the way browsers decide (the WHATWG Encoding
Standard), and saying how it was decided.

The rule, in order; the first step that gives an answer wins:

1. **BOM**: a UTF-8, UTF-16 or UTF-32 byte-order mark.
2. **Declared** (HTML only): a ``<meta charset>``, ``http-equiv`` Content-Type or XML
   declaration in the first bytes, its label read through the WHATWG label table
   (``iso-8859-1``, ``latin1`` and ``ascii`` all mean windows-1252; ``utf-16`` in a meta
   means UTF-8). Pages lie, so two checks come first: bytes that are valid UTF-8 with
   non-ASCII text are UTF-8 whatever a legacy label says, and a declaration the bytes do
   not fit is set aside (both with a warning).
3. **Detected**:
   - valid UTF-8 is UTF-8 (confidence 1);
   - NUL bytes all on one side of each byte pair, decoding cleanly, are UTF-16 without
     a BOM (little or big endian by that side);
   - otherwise charset-normalizer ranks the legacy code pages. When its pick is a Latin
     single-byte page, a second judge decides between the Latin pages that would read the
     bytes differently: the share of non-ASCII letters that belong to one language's
     alphabet, less symbols stuck inside words (``s½ur``, ``Łód¼``). Ties go to
     windows-1252, as a browser's Latin default does, so "très" never comes back "trčs".
4. **Default**: windows-1252 (every byte maps to something), with a warning.

``Decoded`` carries the text, the WHATWG name of the encoding, the step that decided
(``bom``, ``declared``, ``detected``, ``default``) and a confidence between 0 and 1. A
detected encoding below ``LOW_CONFIDENCE``, or one that another page would read
differently and as well, comes with a warning naming the alternative.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Literal

import webencodings
from charset_normalizer import from_bytes

EncodingSource = Literal["bom", "declared", "detected", "default"]
LOW_CONFIDENCE = 0.8
EVIDENCE_BYTES = 64
"""Non-ASCII bytes a legacy multi-byte or non-Latin guess needs to be sure."""
DETECT_BYTES = 1 << 20
"""Detection reads at most this much of a file."""

_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32le", "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32be", "utf-32"),
    (codecs.BOM_UTF8, "utf-8", "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16le", "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16be", "utf-16"),
]  # UTF-32 LE starts with the UTF-16 LE BOM: test it first

# WHATWG names whose Python codec differs (the web's versions are supersets).
_PYTHON_CODEC = {
    "shift_jis": "cp932",
    "euc-kr": "cp949",
    "big5": "big5hkscs",
    "gbk": "gb18030",
    "iso-8859-8-i": "iso8859_8",
    "windows-874": "cp874",
    "macintosh": "mac_roman",
    "x-mac-cyrillic": "mac_cyrillic",
}
_SINGLE_BYTE_LATIN = {
    "windows-1252": "cp1252",
    "iso-8859-15": "iso8859_15",
    "windows-1250": "cp1250",
    "iso-8859-2": "iso8859_2",
    "windows-1254": "cp1254",
    "windows-1257": "cp1257",
    "iso-8859-13": "iso8859_13",
    "iso-8859-16": "iso8859_16",
    "iso-8859-4": "iso8859_4",
    "iso-8859-3": "iso8859_3",
    "iso-8859-10": "iso8859_10",
    "iso-8859-14": "iso8859_14",
    "windows-1258": "cp1258",
}
"""The Latin pages the second judge weighs; windows-1252 first, as a browser would."""
_ALPHABETS = [
    "áéíóúñü",  # Spanish
    "àâæçéèêëîïôœùûüÿ",  # French
    "äöüß",  # German
    "ãõáâàçéêíóôú",  # Portuguese
    "àèéìíîòóùú",  # Italian
    "àçèéíïòóúü·",  # Catalan
    "éëïóöüèáíú",  # Dutch, Afrikaans
    "åæøäöéü",  # Danish, Norwegian, Swedish
    "áðéíóúýþæö",  # Icelandic, Faroese
    "äöåšž",  # Finnish
    "ąćęłńóśźż",  # Polish
    "áčďéěíňóřšťúůýž",  # Czech
    "áäčďéíĺľňóôŕšťúýž",  # Slovak
    "áéíóöőúüű",  # Hungarian
    "ăâîșțşţ",  # Romanian
    "čćđšž",  # Croatian, Bosnian, Serbian (Latin), Slovenian
    "çğıöşüâîûi̇",  # noqa: RUF001  Turkish (İ lowercases to i + a combining dot)
    "ąčęėįšųūž",  # Lithuanian
    "āčēģīķļņšūž",  # Latvian
    "äöõüšž",  # Estonian
    "çëáéíóú",  # Albanian
    "ŵŷâêîôûáéíóúẁẃẅ",  # Welsh
    "áéíóúàèìòù",  # Irish, Scottish Gaelic
    "ĉĝĥĵŝŭ",  # Esperanto
    "ċġħż",  # Maltese
]
_ALPHABETS.append("ßàáâãäåæçèéêëìíîïñòóôõöøùúûüÿœ·")
"""Western European (the first eight above, and Finnish) as one alphabet: a page in
windows-1252 mixes its languages' letters ("très" and "niño" in one text), which no single
language's alphabet covers, while a Baltic or Central page may cover such a mix by chance
("trčs", "niņo")."""


def _c1_controls(error: UnicodeError) -> tuple[str, int]:
    """windows-1252's five unassigned bytes map to the C1 controls, as in WHATWG."""
    assert isinstance(error, UnicodeDecodeError)
    return "".join(chr(b) for b in error.object[error.start : error.end]), error.end


codecs.register_error("shesha-c1", _c1_controls)


@dataclass
class Decoded:
    text: str
    encoding: str
    """The WHATWG name: utf-8, utf-16le, windows-1252, shift_jis..."""
    source: EncodingSource
    confidence: float
    warnings: list[str] = field(default_factory=list)


def bom_encoding(data: bytes) -> str | None:
    """The WHATWG name of the encoding a byte-order mark announces, if any."""
    for bom, name, _ in _BOMS:
        if data.startswith(bom):
            return name
    return None


def whatwg_name(label: str) -> str | None:
    """The encoding a label means on the web (``latin1`` -> ``windows-1252``), or None
    for a label the web does not know."""
    found = webencodings.lookup(label.strip())
    return found.name if found is not None else None


def _codec(name: str) -> str:
    return _PYTHON_CODEC.get(name, _SINGLE_BYTE_LATIN.get(name, name))


def _decode_as(data: bytes, name: str, errors: str = "strict") -> str:
    if name == "windows-1252":
        return data.decode("cp1252", errors="shesha-c1")  # total, as the web's is
    return data.decode(_codec(name), errors=errors)


def _fits(data: bytes, name: str) -> bool:
    try:
        _decode_as(data, name)
    except (UnicodeDecodeError, LookupError):
        return False
    return True


def _utf8_with_non_ascii(data: bytes) -> bool:
    if data.isascii():
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def decode(data: bytes, declared: str | None = None) -> Decoded:
    """Decode ``data`` by the rule above. ``declared`` is an HTML page's declared label
    (None for other formats). Never raises for odd bytes: the last resort decodes as
    windows-1252 and says so."""
    for bom, name, codec in _BOMS:
        if data.startswith(bom):
            return Decoded(data.decode(codec, errors="replace"), name, "bom", 1.0)
    warnings: list[str] = []
    if declared:
        said = _declared(data, declared, warnings)
        if said is not None:
            return said
    return _detect(data, warnings)


def _declared(data: bytes, label: str, warnings: list[str]) -> Decoded | None:
    name = whatwg_name(label)
    if name is None or name == "replacement":
        warnings.append(f"unknown declared charset {label!r} ignored")
        return None
    if name in ("utf-16le", "utf-16be"):
        name = "utf-8"  # a page that can declare itself in ASCII is not UTF-16 (WHATWG)
    elif name == "x-user-defined":
        name = "windows-1252"
    if name != "utf-8" and _utf8_with_non_ascii(data):
        warnings.append(f"declared charset {label!r}, but the bytes are UTF-8: read as UTF-8")
        return Decoded(data.decode("utf-8"), "utf-8", "detected", 1.0, warnings)
    if _fits(data, name):
        return Decoded(_decode_as(data, name), name, "declared", 1.0, warnings)
    warnings.append(f"declared charset {label!r} does not fit the bytes: detected instead")
    return None


def _detect(data: bytes, warnings: list[str]) -> Decoded:
    # UTF-16 first: Cyrillic or Greek in UTF-16 is all bytes below 0x80, valid "UTF-8".
    utf16 = utf16_without_bom(data)
    if utf16 is not None:
        return Decoded(data.decode(utf16, errors="replace"), utf16, "detected", 1.0, warnings)
    iso2022 = _iso2022(data)
    if iso2022 is not None:  # 7-bit, so also valid UTF-8: its escapes give it away
        return Decoded(data.decode(iso2022, errors="replace"), iso2022, "detected", 1.0, warnings)
    try:
        return Decoded(data.decode("utf-8"), "utf-8", "detected", 1.0, warnings)
    except UnicodeDecodeError:
        pass  # not UTF-8: the legacy code pages follow
    # UTF-16 and UTF-32 without NULs are charset-normalizer's guesses for short odd
    # bytes ("très" as two CJK characters); UTF-16 is decided above, so skip them.
    best = next(
        (m for m in from_bytes(data[:DETECT_BYTES]) if not m.encoding.startswith("utf_")),
        None,
    )
    if best is None or not best.encoding:
        warnings.append(
            "encoding not recognised: read as windows-1252; save the file as UTF-8 if the "
            "text looks wrong"
        )
        return Decoded(_decode_as(data, "windows-1252"), "windows-1252", "default", 0.0, warnings)
    name = _web_name(best.encoding)
    reading = str(best)
    if (
        name in _SINGLE_BYTE_LATIN
        or _mostly_latin(reading)
        or _glued_share(reading) > 0.5
        or _latin_with_few_accents(data)
    ):
        return _latin(data, warnings)
    # A short sample says little, whatever the detector's own measure: a single word
    # of Cyrillic reads as well as two CJK characters.
    evidence = min(1.0, sum(b > 0x7F for b in data[:DETECT_BYTES]) / EVIDENCE_BYTES)
    confidence = round(max(0.0, 1.0 - best.chaos * 2) * evidence, 2)
    text = data.decode(best.encoding, errors="replace")
    if confidence < LOW_CONFIDENCE:
        warnings.append(_guess_warning(name, confidence, None))
    return Decoded(text, name, "detected", confidence, warnings)


_ISO2022 = [(b"\x1b$B", "iso-2022-jp"), (b"\x1b$@", "iso-2022-jp"), (b"\x1b$)C", "iso-2022-kr")]


def _iso2022(data: bytes) -> str | None:
    head = data[:DETECT_BYTES]
    if b"\x1b" not in head or not head.isascii():
        return None
    return next((name for escape, name in _ISO2022 if escape in head), None)


_FROM_PYTHON = {"cp932": "shift_jis", "cp949": "euc-kr", "big5hkscs": "big5"}
"""Python codecs that are the web's encoding of another name (supersets of the old ones)."""


def _web_name(python_codec: str) -> str:
    canonical = codecs.lookup(python_codec).name  # e.g. cp1251, koi8-r, iso8859-5
    if canonical in _FROM_PYTHON:
        return _FROM_PYTHON[canonical]
    for label in (canonical, canonical.replace("_", "-"), canonical.replace("iso8859", "iso-8859")):
        name = whatwg_name(label)
        if name is not None:
            return name
    return canonical


def _mostly_latin(text: str) -> bool:
    """Whether the non-ASCII letters of a reading are Latin (so the Latin judge decides)."""
    letters = [c for c in text if c > "\x7f" and c.isalpha()]
    return bool(letters) and sum(c < "\u0250" for c in letters) / len(letters) > 0.9


def _latin_with_few_accents(data: bytes) -> bool:
    """Mostly ASCII words with a handful of other bytes: the web's Latin default applies
    (a detector reads "1 250 \\x80 net" as anything)."""
    sample = data[:DETECT_BYTES]
    high = sum(b > 0x7F for b in sample)
    letters = sum(1 for b in sample if b < 0x80 and chr(b).isalpha())
    return high < 16 and letters >= 3 * high


def _glued_share(reading: str) -> float:
    """The share of non-ASCII letters stuck to an ASCII letter ("tr鋊", "trиs"): how a
    Latin text with a few accents looks when read as CJK, Cyrillic or Greek. Real text in
    those scripts keeps its letters apart from Latin ones."""
    glued = total = 0
    for i, c in enumerate(reading):
        if c > "\x7f" and c.isalpha():
            total += 1
            around = reading[max(0, i - 1) : i] + reading[i + 1 : i + 2]
            glued += any(a.isascii() and a.isalpha() for a in around)
    return glued / total if total else 0.0


def _latin(data: bytes, warnings: list[str]) -> Decoded:
    """Choose among the Latin single-byte pages by the letters each one produces."""
    sample = data[:DETECT_BYTES]
    scored: list[tuple[float, str, str]] = []
    for name in _SINGLE_BYTE_LATIN:
        try:
            reading = _decode_as(sample, name)
        except UnicodeDecodeError:
            continue
        scored.append((_latin_score(reading), name, reading))
    top = max(score for score, _, _ in scored)  # windows-1252 always reads: never empty
    score, name, reading = next(s for s in scored if s[0] >= top - 1e-9)  # 1252 first
    rival = next(
        (n for s, n, r in scored if n != name and r != reading and s >= score - 0.05), None
    )
    confidence = round(max(0.0, min(1.0, score)) * (0.5 if rival else 1.0), 2)
    if confidence < LOW_CONFIDENCE:
        warnings.append(_guess_warning(name, confidence, rival))
    text = reading if len(sample) == len(data) else _decode_as(data, name, errors="replace")
    return Decoded(text, name, "detected", confidence, warnings)


def _latin_score(text: str) -> float:
    """The share of non-ASCII letters that fit the best-fitting alphabet, less the
    symbols and C1 controls that a wrong code page leaves inside words."""
    letters = [c.lower() for c in text if c > "\x7f" and c.isalpha()]
    odd = sum(
        1
        for a, b, c in zip(text, text[1:], text[2:], strict=False)
        if b > "\x7f"
        and a.isalpha()
        and c.isalpha()
        and not b.isalpha()
        and b not in "\u2019\u2018\u00b4\u00b7"
    )
    controls = sum(1 for c in text if "\x80" <= c < "\xa0")
    if not letters:
        return 1.0 - 10 * (odd + controls) / max(1, len(text))
    fit = max(sum(c in alphabet for c in letters) / len(letters) for alphabet in _ALPHABETS)
    return fit - (odd + controls) / len(letters)


def _guess_warning(name: str, confidence: float, rival: str | None) -> str:
    also = f"; {rival} reads it as well" if rival else ""
    return (
        f"encoding guessed as {name} (confidence {confidence:.2f}{also}): if the text looks "
        "wrong, save the file as UTF-8 or declare its charset"
    )


def utf16_without_bom(data: bytes) -> str | None:
    """``utf-16le`` or ``utf-16be`` when the bytes are UTF-16 without a byte-order mark.

    Text in UTF-16 has NUL bytes (the high byte of every space, line break and digit,
    and now and then of a letter) and reads cleanly one way round: no control characters
    but tabs and line breaks, and no unassigned, private-use or lone surrogate code
    points. Binary data read as UTF-16 is full of both, and so is UTF-16 read the wrong
    way round."""
    sample = data[: DETECT_BYTES & ~1]
    if len(data) % 2 or b"\x00" not in sample:
        return None
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    # NULs are high bytes (of spaces, line breaks, digits): that side gives the byte
    # order; only a tie lets both be tried.
    if odd == even:
        order = ["utf-16le", "utf-16be"]
    else:
        order = ["utf-16le"] if odd > even else ["utf-16be"]
    for name in order:
        try:
            text = sample.decode(name)
        except UnicodeDecodeError:
            continue
        # NULs on both sides (CJK has characters whose low byte is 0) ask for more: the
        # letters must also keep to one script, as text does and noise does not.
        if _reads_as_text(text) and (not (even and odd) or _one_script(text)):
            return name
    return None


def _reads_as_text(text: str) -> bool:
    if any(c < " " and c not in "\t\n\r\f" for c in text):
        return False
    strange = sum(1 for c in text if unicodedata.category(c) in ("Cn", "Co", "Cs"))
    return strange <= len(text) * 0.002


_SCRIPT_FAMILY = {"HIRAGANA": "CJK", "KATAKANA": "CJK", "IDEOGRAPHIC": "CJK", "HALFWIDTH": "CJK"}


def _one_script(text: str) -> bool:
    scripts: dict[str, int] = {}
    for c in text:
        if c.isalpha():
            script = unicodedata.name(c, "?").split(" ")[0]
            script = _SCRIPT_FAMILY.get(script, script)
            scripts[script] = scripts.get(script, 0) + 1
    total = sum(scripts.values())
    return total > 0 and max(scripts.values()) >= 0.9 * total


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]+)""", re.I)
_XML_ENCODING = re.compile(rb"""<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9_\-.]+)""", re.I)


def declared_charset(data: bytes) -> str | None:
    """The charset an HTML or XML document declares in its first bytes, if any."""
    head = data[:8192]
    m = _META_CHARSET.search(head) or _XML_ENCODING.search(head)
    return m.group(1).decode("ascii") if m else None


def looks_binary(data: bytes) -> bool:
    """NUL bytes (outside UTF-16 or UTF-32 text) or mostly control bytes mean binary."""
    if bom_encoding(data) or utf16_without_bom(data):
        return False
    sample = data[:8192]
    if b"\x00" in sample:
        return True
    if not sample:
        return False
    controls = sum(1 for b in sample if b < 9 or 13 < b < 32)
    return controls / len(sample) > 0.1
