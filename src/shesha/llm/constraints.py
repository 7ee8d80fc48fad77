"""An output constraint, as each kind of endpoint is told it.

- **llama.cpp** (the local servers): a fixed set of choices (bare, or after a note) or a
  grammar becomes the request's ``grammar`` (GBNF); a JSON schema becomes
  ``response_format`` with the schema, which llama.cpp compiles to a grammar. Decoding
  then cannot leave it.
- **response_format** (hosted providers): a JSON schema becomes OpenAI-style structured
  output where LiteLLM says the model supports it. Choices and grammars are not sent:
  the prompt names the choices (and the note's format), and the caller checks the reply.
- **none**: nothing is sent.

Whatever the endpoint did, a reply to a choice is trimmed to the choice it names.
"""

from __future__ import annotations

from typing import Any

from shesha.llm.types import (
    LABEL_PREFIX,
    MAX_NOTE_CHARS,
    NOTE_PREFIX,
    Choices,
    ConstraintDialect,
    Grammar,
    JsonSchema,
    NotedChoice,
    OutputConstraint,
)

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def choices_grammar(choices: Choices) -> str:
    """A grammar whose only sentences are the choices."""
    return "root ::= " + " | ".join(gbnf_literal(o) for o in dict.fromkeys(choices.options))


def noted_choice_grammar(choice: NotedChoice) -> str:
    """A grammar whose sentences are a note of one line, then one of the options."""
    options = " | ".join(gbnf_literal(o) for o in dict.fromkeys(choice.options))
    return (
        f"root ::= {gbnf_literal(NOTE_PREFIX)} [^\\n]{{1,{MAX_NOTE_CHARS}}} "
        f"{gbnf_literal(chr(10) + LABEL_PREFIX)} ({options})"
    )


def _grammar(constraint: Choices | NotedChoice | Grammar) -> str:
    """The GBNF a llama.cpp server is sent for ``constraint``."""
    if isinstance(constraint, Choices):
        return choices_grammar(constraint)
    if isinstance(constraint, NotedChoice):
        return noted_choice_grammar(constraint)
    return constraint.gbnf


def request_fields(
    constraint: OutputConstraint | None,
    dialect: ConstraintDialect,
    *,
    supports_schema: bool,
) -> dict[str, Any]:
    """The keyword arguments that tell LiteLLM's call about ``constraint``.
    ``supports_schema``: the model takes ``response_format`` with a JSON schema."""
    if constraint is None or dialect == "none":
        return {}
    if dialect == "llama.cpp":
        if isinstance(constraint, JsonSchema):
            return {"response_format": {"type": "json_object", "schema": dict(constraint.schema)}}
        return {"extra_body": {"grammar": _grammar(constraint)}}
    if isinstance(constraint, JsonSchema) and supports_schema:
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": constraint.name, "schema": dict(constraint.schema)},
            }
        }
    return {}


def conform(text: str, constraint: OutputConstraint | None) -> str:
    """A reply to a choice, as the choice it is when it is one (any case, any space
    around); every other reply as it came."""
    if isinstance(constraint, Choices):
        bare = text.strip()
        for option in constraint.options:
            if bare.casefold() == option.strip().casefold():
                return option
        return bare
    return text
