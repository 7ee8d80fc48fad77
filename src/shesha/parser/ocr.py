"""OCR with Tesseract, for scanned PDF pages and images.

Tesseract is a program (Debian's ``tesseract-ocr`` and its language packs; ``make ocr``),
run once per page image with the image on stdin and the text on stdout. Pages are read
in parallel, each Tesseract on one thread (``OMP_THREAD_LIMIT=1``: its own threads only
slow a machine that already runs one per core). Each page's text is cached on disk by
the hash of the image, the languages and Tesseract's version, so a page is read once,
whichever file or project it comes back in.

``OcrSettings`` says whether to OCR, in which languages, where the cache is, and whom
to tell about each page read. ``ocr_problem()`` says why OCR cannot run here, if it
cannot: the page is then kept empty, with a warning saying how to install it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

INSTALL_HINT = (
    "install Tesseract (Debian/Ubuntu: apt install tesseract-ocr tesseract-ocr-eng; "
    "`make ocr` in a shesha checkout), or add with --no-ocr"
)
OCR_DPI = 300
PAGE_TIMEOUT_S = 180

PageDone = Callable[[int, int], None]
"""Told (pages read, pages to read) as OCR goes."""


@dataclass(frozen=True)
class OcrSettings:
    enabled: bool = True
    languages: str = "eng"
    """Tesseract's language codes joined by ``+``: ``eng``, ``deu+eng``."""
    cache_dir: Path | None = None
    workers: int = 0
    """Pages read at once (0: one per core)."""
    on_page: PageDone | None = None


class OcrUnavailable(Exception):
    """Tesseract, or a language asked for, is not installed."""


def tesseract_path() -> str | None:
    return shutil.which("tesseract")


@cache
def _version() -> str:
    path = tesseract_path()
    if path is None:
        return ""
    done = subprocess.run([path, "--version"], capture_output=True, timeout=30, check=False)
    return (done.stdout or done.stderr).decode(errors="replace").splitlines()[0]


@cache
def installed_languages() -> frozenset[str]:
    path = tesseract_path()
    if path is None:
        return frozenset()
    done = subprocess.run([path, "--list-langs"], capture_output=True, timeout=30, check=False)
    lines = done.stdout.decode(errors="replace").splitlines()
    return frozenset(line.strip() for line in lines[1:] if line.strip())


def ocr_problem(languages: str) -> str | None:
    """None when Tesseract can read ``languages`` here; else what is missing."""
    if tesseract_path() is None:
        return f"Tesseract is not installed: {INSTALL_HINT}"
    missing = [code for code in languages.split("+") if code not in installed_languages()]
    if missing:
        packs = " ".join(f"tesseract-ocr-{code}" for code in missing)
        return f"Tesseract has no {', '.join(missing)} language data: apt install {packs}"
    return None


def read_pages(images: Sequence[bytes], settings: OcrSettings) -> list[str]:
    """The text of each page image (PNG bytes), in order. Raises ``OcrUnavailable``."""
    problem = ocr_problem(settings.languages)
    if problem is not None:
        raise OcrUnavailable(problem)
    done = 0
    counting = threading.Lock()

    def one(image: bytes) -> str:
        nonlocal done
        text = _cached_or_read(image, settings)
        with counting:
            done += 1
            if settings.on_page is not None:
                settings.on_page(done, len(images))
        return text

    workers = settings.workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max(1, min(workers, len(images)))) as pool:
        return list(pool.map(one, images))


def _cached_or_read(image: bytes, settings: OcrSettings) -> str:
    if not image:
        return ""
    key = hashlib.sha256(
        b"%s\0%s\0" % (_version().encode(), settings.languages.encode()) + image
    ).hexdigest()
    path = settings.cache_dir / key[:2] / f"{key}.txt" if settings.cache_dir else None
    if path is not None and path.is_file():
        return path.read_text(encoding="utf-8")
    text = _tesseract(image, settings.languages)
    if text is None:
        return ""  # a timeout or a crash: not cached, so a later add tries again
    if path is not None:
        _write_atomically(path, text)
    return text


def _write_atomically(path: Path, text: str) -> None:
    """A cache entry appears whole or not at all (readers never see half a page)."""
    temporary: str | None = None
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".ocr-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temporary, path)
    except OSError:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        # The cache is an optimisation: a page that cannot be cached is read again next time.


def _tesseract(image: bytes, languages: str) -> str | None:
    """The page's text; None when Tesseract timed out or failed on it."""
    path = tesseract_path()
    if path is None:
        raise OcrUnavailable(f"Tesseract is not installed: {INSTALL_HINT}")
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    try:
        done = subprocess.run(
            [path, "stdin", "stdout", "-l", languages, "--dpi", str(OCR_DPI)],
            input=image,
            capture_output=True,
            timeout=PAGE_TIMEOUT_S,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        return None
    return done.stdout.decode("utf-8", errors="replace").replace("\f", "").strip()
