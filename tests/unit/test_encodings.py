# ruff: noqa: RUF001  (the texts are in many scripts on purpose)
"""Encodings decided as browsers decide them (WHATWG), on a matrix of real languages:
each text comes back exactly from UTF-8, UTF-16 with and without a BOM, and its legacy
code pages; HTML declarations read through the web's label table; guesses that could go
either way say so."""

from __future__ import annotations

import codecs
import io
import json
import random
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shesha.cli import app
from shesha.parser import parse_bytes
from shesha.parser.encoding import decode, looks_binary

TEXTS = {
    "spanish": "El niño comió una manzana por la mañana. ¿Dónde está la estación? Mañana "
    "iremos al río con los señores Núñez y Peña, que viven cerca de la montaña.\n",
    "french": "Il était très tôt quand nous sommes arrivés à la gare. Le garçon a reçu une "
    "lettre de sa sœur, qui habite près de Besançon. Où êtes-vous allés cet été ?\n",
    "german": "Die Straße war nass, als wir über die Brücke gingen. Größere Häuser stehen am "
    "Fluss, und die Bäume blühen früh. Schöne Grüße aus München.\n",
    "polish": "Zażółć gęślą jaźń. W Łodzi i w Krakowie ludzie często chodzą do kawiarni. "
    "Świeże pieczywo kupuję codziennie rano. Źródło rzeki leży w górach.\n",
    "czech": "Příliš žluťoučký kůň úpěl ďábelské ódy. V Praze je mnoho krásných mostů a "
    "kostelů. Večer jsme šli do divadla a potom na večeři s přáteli.\n",
    "russian": "Съешь же ещё этих мягких французских булок, да выпей чаю. Москва - столица "
    "России. Вечером мы пошли в театр, а потом гуляли по набережной.\n",
    "ukrainian": "Жовтий пес їсть ґаву, а їжак біжить у поле. Київ є столицею України. "
    "Увечері ми читали книжки й пили чай з медом.\n",
    "greek": "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο. Η Αθήνα είναι η "
    "πρωτεύουσα της Ελλάδας. Το βράδυ πήγαμε στο θέατρο.\n",
    "turkish": "Pijamalı hasta yağız şoföre çabucak güvendi. İstanbul büyük ve güzel bir "
    "şehirdir. Akşam çay içtik ve sahilde yürüdük.\n",
    "japanese": "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。"
    "何でも薄暗いじめじめした所で泣いていた事だけは記憶している。\n東京は日本の首都です。\n",
    "chinese": "我们今天去公园散步，天气很好。北京是中国的首都，有很多历史悠久的建筑。"
    "晚上我们一起吃饭，聊了很多有趣的事情。\n",
    "chinese-traditional": "我們今天去公園散步，天氣很好。臺北有很多歷史悠久的建築。"
    "晚上我們一起吃飯，聊了很多有趣的事情。\n",
    "korean": "다람쥐 헌 쳇바퀴에 타고파. 서울은 한국의 수도이며 많은 사람들이 살고 있습니다. "
    "저녁에 우리는 함께 밥을 먹고 이야기를 나누었습니다.\n",
}
LEGACY = {
    "spanish": ["windows-1252", "iso-8859-1"],
    "french": ["windows-1252", "iso-8859-15"],
    "german": ["windows-1252", "iso-8859-1"],
    "polish": ["windows-1250", "iso-8859-2"],
    "czech": ["windows-1250", "iso-8859-2"],
    "russian": ["windows-1251", "koi8-r", "cp866", "iso-8859-5"],
    "ukrainian": ["windows-1251", "koi8-u"],
    "greek": ["windows-1253", "iso-8859-7"],
    "turkish": ["windows-1254", "iso-8859-9"],
    "japanese": ["shift_jis", "euc-jp", "iso-2022-jp"],
    "chinese": ["gb18030", "gbk"],
    "chinese-traditional": ["big5"],
    "korean": ["euc-kr"],
}
UNICODE = {
    "utf-8": lambda t: t.encode("utf-8"),
    "utf-8 with BOM": lambda t: codecs.BOM_UTF8 + t.encode("utf-8"),
    "utf-16le with BOM": lambda t: codecs.BOM_UTF16_LE + t.encode("utf-16-le"),
    "utf-16be with BOM": lambda t: codecs.BOM_UTF16_BE + t.encode("utf-16-be"),
    "utf-16le": lambda t: t.encode("utf-16-le"),
    "utf-16be": lambda t: t.encode("utf-16-be"),
}
CASES = [(lang, page) for lang, pages in LEGACY.items() for page in pages] + [
    (lang, form) for lang in TEXTS for form in UNICODE
]


@pytest.mark.parametrize(("language", "encoding"), CASES)
def test_every_language_comes_back_exactly(language: str, encoding: str) -> None:
    text = TEXTS[language]
    data = UNICODE[encoding](text) if encoding in UNICODE else text.encode(encoding)
    decoded = decode(data)
    assert decoded.text == text
    assert decoded.source == ("bom" if "BOM" in encoding else "detected")
    assert not looks_binary(data)


@pytest.mark.parametrize(("language", "encoding"), CASES)
def test_every_language_comes_back_exactly_as_a_text_document(language: str, encoding: str) -> None:
    text = TEXTS[language]
    data = UNICODE[encoding](text) if encoding in UNICODE else text.encode(encoding)
    assert parse_bytes(data, f"{language}.txt").text == text


def test_an_undeclared_windows_1252_page_is_not_read_as_windows_1250() -> None:
    page = "<html><body><p>El niño está aquí. C'est très bien, merci.</p></body></html>"
    doc = parse_bytes(page.encode("windows-1252"), "page.html")
    assert "El niño está aquí. C'est très bien, merci." in doc.text
    assert doc.meta.encoding == "windows-1252"
    assert doc.meta.encoding_source == "detected"


def test_a_declared_label_means_what_it_means_on_the_web() -> None:
    # latin1 / iso-8859-1 is windows-1252 on the web: 0x80 is the euro sign, 0x93 a quote
    page = b'<meta charset="ISO-8859-1"><p>Price: \x80 12, \x93quoted\x94</p>'
    doc = parse_bytes(page, "price.html")
    assert "Price: € 12, “quoted”" in doc.text
    assert (doc.meta.encoding, doc.meta.encoding_source) == ("windows-1252", "declared")
    assert doc.meta.encoding_confidence == 1.0


def test_a_meta_declaring_utf_16_in_ascii_means_utf_8() -> None:
    page = '<meta charset="utf-16"><p>naïve café</p>'.encode()
    doc = parse_bytes(page, "u.html")
    assert "naïve café" in doc.text
    assert doc.meta.encoding == "utf-8"


def test_a_legacy_label_on_utf_8_bytes_is_overruled_and_said() -> None:
    page = '<meta charset="windows-1252"><p>Ünïcödé — naïve</p>'.encode()
    doc = parse_bytes(page, "lies.html")
    assert "Ünïcödé — naïve" in doc.text
    assert doc.meta.encoding == "utf-8"
    assert any("the bytes are UTF-8" in w for w in doc.meta.warnings)


def test_a_declaration_the_bytes_do_not_fit_is_set_aside() -> None:
    page = '<meta charset="utf-8"><p>Größe</p>'.encode("windows-1252")
    doc = parse_bytes(page, "bad.html")
    assert "Größe" in doc.text
    assert doc.meta.encoding_source == "detected"
    assert any("does not fit the bytes" in w for w in doc.meta.warnings)


def test_an_unknown_label_is_ignored_with_a_warning() -> None:
    doc = parse_bytes(b'<meta charset="klingon"><p>plain</p>', "k.html")
    assert "plain" in doc.text
    assert any("unknown declared charset 'klingon'" in w for w in doc.meta.warnings)


def test_a_guess_that_could_go_either_way_is_a_warning() -> None:
    # one accented letter: "très" (windows-1252) or "trčs" (windows-1250)
    decoded = decode("très".encode("windows-1252"))
    assert decoded.text == "très"  # the web's Latin default
    assert decoded.confidence < 0.8
    assert "windows-1250" in decoded.warnings[0]


def test_bytes_no_detector_knows_fall_back_to_windows_1252_and_say_so() -> None:
    decoded = decode(bytes(range(0x80, 0x100)) * 2)
    assert len(decoded.text) == 256  # every byte maps to something; nothing is lost
    assert decoded.encoding == "windows-1252"
    assert decoded.warnings


def test_binary_bytes_are_still_binary() -> None:
    noise = random.Random(7)
    assert looks_binary(bytes(noise.randrange(256) for _ in range(4096)))
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.txt", TEXTS["german"] * 20)
    assert looks_binary(packed.getvalue() + (b"" if len(packed.getvalue()) % 2 else b"\x00"))


def test_docs_and_add_json_show_the_encoding_and_a_low_confidence_warning(
    tmp_path: Path,
) -> None:
    (tmp_path / "sure.txt").write_bytes(TEXTS["polish"].encode("windows-1250"))
    (tmp_path / "unsure.txt").write_bytes("très".encode("windows-1252"))
    env = {"SHESHA_HOME": str(tmp_path / "home")}
    added = CliRunner().invoke(app, ["add", "p", str(tmp_path), "--json"], env=env)
    assert added.exit_code == 0, added.stderr
    stored = {d["name"]: d for d in json.loads(added.stdout)["stored"]}
    assert stored["sure.txt"]["encoding"] == "windows-1250"
    assert stored["sure.txt"]["encoding_source"] == "detected"
    assert stored["sure.txt"]["warnings"] == []
    assert stored["unsure.txt"]["encoding_confidence"] < 0.8
    assert "encoding guessed as windows-1252" in stored["unsure.txt"]["warnings"][0]
    listed = CliRunner().invoke(app, ["docs", "p"], env={**env, "COLUMNS": "200"})
    assert "windows-1250 (detected)" in listed.stdout
    assert "encoding guessed" in listed.stdout


def test_a_page_mixing_western_languages_is_read_as_windows_1252() -> None:
    # French and Spanish in one page: no single language's alphabet covers è, ñ and à,
    # and a Baltic page reads them as č, ņ and ā, which Latvian's does (found by hand)
    page = "<html><body><p>C'est très bien, le niño est là.</p></body></html>"
    doc = parse_bytes(page.encode("windows-1252"), "mixed.html")
    assert "C'est très bien, le niño est là." in doc.text
    assert doc.meta.encoding == "windows-1252"
