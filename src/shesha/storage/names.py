"""Names from users (projects, documents) that can never escape the data directory."""

from __future__ import annotations

import unicodedata
from pathlib import PurePosixPath

from shesha.errors import InvalidName

MAX_PROJECT_NAME = 200
MAX_DOCUMENT_NAME = 1024
MAX_NAME_PART_BYTES = 255
"""A file system's limit on one name (a part of a document name between slashes)."""


def _bad_chars(name: str) -> list[str]:
    return [
        repr(ch)
        for ch in name
        if ch == "\x00" or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")
    ]


def validate_project_name(name: str) -> str:
    """A project name: one path component, printable, not hidden. Unicode is fine."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidName("A project name cannot be empty.", hint="Pick a name like 'contracts'.")
    problem = None
    if bad := _bad_chars(name):
        problem = f"it contains control characters ({', '.join(bad[:3])})"
    elif "/" in name or "\\" in name:
        problem = "it contains a path separator"
    elif name in (".", "..") or name.startswith("."):
        problem = "it starts with a dot"
    elif name != name.strip():
        problem = "it starts or ends with white space"
    elif len(name) > MAX_PROJECT_NAME:
        problem = f"it is longer than {MAX_PROJECT_NAME} characters"
    if problem:
        raise InvalidName(
            f"Invalid project name {name!r}: {problem}.",
            hint="Use letters, digits, '-', '_' or spaces (any script).",
        )
    return name


def validate_document_name(name: str) -> str:
    """A document name: a relative POSIX path with no '..', '.', or empty parts."""
    if not isinstance(name, str) or not name:
        raise InvalidName("A document name cannot be empty.")
    problem = None
    parts = name.split("/")
    if bad := _bad_chars(name):
        problem = f"it contains control characters ({', '.join(bad[:3])})"
    elif (
        name.startswith("/")
        or PurePosixPath(name).is_absolute()
        or (len(name) > 1 and name[1] == ":")
    ):
        problem = "it is an absolute path"
    elif "\\" in name:
        problem = "it contains a backslash"
    elif any(p in ("", ".", "..") for p in parts):
        problem = "it has an empty, '.' or '..' part"
    elif len(name) > MAX_DOCUMENT_NAME:
        problem = f"it is longer than {MAX_DOCUMENT_NAME} characters"
    elif any(len(p.encode("utf-8", "surrogatepass")) > MAX_NAME_PART_BYTES for p in parts):
        problem = f"a part of it is longer than {MAX_NAME_PART_BYTES} bytes"
    if problem:
        raise InvalidName(
            f"Invalid document name {name!r}: {problem}.",
            hint="Document names are relative paths such as 'reports/2024.pdf'.",
        )
    return name
