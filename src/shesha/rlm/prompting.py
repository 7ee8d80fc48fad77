"""Prompt templates: versioned files in the package, overridable from a directory.

Templates use ``{{name}}`` placeholders. Each template's placeholders are checked
against what the engine fills in, so an override cannot silently drop the question or
the context description, nor ask for a value that does not exist.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from shesha.errors import ConfigError

PROMPT_VERSION = "6"
PromptStyle = Literal["full", "compact"]
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
EXPECTED: dict[str, frozenset[str]] = {
    "system": frozenset(
        {"doc_count", "total_chars", "doc_list", "subcall_chars", "max_output_chars"}
    ),
    "user": frozenset({"question"}),
    "nudge": frozenset(),
    "answer_nudge": frozenset({"answer"}),
    "final": frozenset({"max_iterations"}),
    "repeat_nudge": frozenset({"failure", "advice"}),
    "stalled": frozenset({"repeats"}),
    "unseen_answer": frozenset({"answer"}),
    "subcall_system": frozenset(),
    "output_note": frozenset({"nonce"}),
    "read_system": frozenset({"doc_count", "total_chars"}),
    "read_user": frozenset({"documents", "question"}),
    "earlier": frozenset({"exchanges"}),
    "direct_system": frozenset(),
    "direct_user": frozenset({"documents", "question"}),
    "passages_system": frozenset(),
    "passages_user": frozenset({"passages", "question"}),
    "route": frozenset({"question"}),
    "route_records": frozenset({"question", "records", "fields"}),
    "phrase": frozenset({"question"}),
    "labels": frozenset({"question", "fields", "records", "sample", "max"}),
    "labels_again": frozenset(),
    "label_record": frozenset({"labels"}),
    "tally_system": frozenset(),
    "tally_user": frozenset({"table", "question"}),
}


@dataclass(frozen=True)
class PromptSet:
    templates: dict[str, str]
    source: str

    @classmethod
    def load(cls, directory: str | Path | None = None, style: PromptStyle = "full") -> PromptSet:
        """The packaged prompts (``style="compact"``: the short ones for small local
        models), with any ``<name>.md`` in ``directory`` replacing its own."""
        package = resources.files("shesha.rlm.prompts")
        templates = {name: (package / f"{name}.md").read_text("utf-8") for name in EXPECTED}
        source = f"shesha v{PROMPT_VERSION}"
        if style == "compact":
            compact = package / "compact"
            for name in EXPECTED:
                if (compact / f"{name}.md").is_file():
                    templates[name] = (compact / f"{name}.md").read_text("utf-8")
            source += " compact"
        if directory is not None:
            d = Path(directory).expanduser()
            if not d.is_dir():
                raise ConfigError(f"The prompts directory {d} does not exist.")
            overridden = []
            for name in EXPECTED:
                f = d / f"{name}.md"
                if f.is_file():
                    templates[name] = f.read_text("utf-8")
                    overridden.append(name)
            unknown = sorted(p.stem for p in d.glob("*.md") if p.stem not in EXPECTED)
            if unknown:
                raise ConfigError(
                    f"Unknown prompt files in {d}: {', '.join(unknown)}.",
                    hint=f"Prompts are named {', '.join(sorted(EXPECTED))} (.md).",
                )
            source += f" + {d} ({', '.join(overridden) or 'nothing'})"
        for name, text in templates.items():
            found = set(PLACEHOLDER.findall(text))
            missing, extra = EXPECTED[name] - found, found - EXPECTED[name]
            if missing or extra:
                raise ConfigError(
                    f"The prompt {name!r} ({source}) has the wrong placeholders: "
                    f"missing {sorted(missing)}, unknown {sorted(extra)}.",
                    hint=f"{name}.md must use exactly {sorted(EXPECTED[name])}.",
                )
        return cls(templates, source)

    @property
    def hash(self) -> str:
        h = hashlib.sha256()
        for name in sorted(self.templates):
            h.update(name.encode() + b"\0" + self.templates[name].encode() + b"\0")
        return h.hexdigest()[:16]

    def render(self, name: str, **values: object) -> str:
        if set(values) != EXPECTED[name]:
            raise ConfigError(f"prompt {name!r} needs {sorted(EXPECTED[name])}")
        return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), self.templates[name]).strip()
