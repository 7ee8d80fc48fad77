"""Reading the root model's reply: code blocks, and a bare FINAL outside code."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

CODE_BLOCK = re.compile(r"```(?:repl|python|py)[ \t]*\r?\n(.*?)```", re.S)
_BARE_FINAL = re.compile(r"^[ \t]*(FINAL_VAR|FINAL)\((.*)\)[ \t]*$", re.M | re.S)
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")


def _only_expression(code: str) -> ast.expr | None:
    """The expression, when a block is one expression statement and nothing else."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr):
        return None
    return tree.body[0].value


def is_literal_final(code: str) -> bool:
    """A block that only calls FINAL on a constant: an answer typed, not computed."""
    call = _only_expression(code)
    return (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id == "FINAL"
        and all(isinstance(a, ast.Constant) for a in call.args)
    )


def literal_block(code: str) -> str | None:
    """A block that is only a number or a string: an answer typed as code, not a computation."""
    node = _only_expression(code)
    sign = ""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node, sign = node.operand, "-"
    if not isinstance(node, ast.Constant) or isinstance(node.value, bool):
        return None
    if isinstance(node.value, int | float):
        return sign + repr(node.value)
    if isinstance(node.value, str) and not sign:
        return node.value
    return None


def code_blocks(reply: str) -> list[str]:
    """Fenced ```repl and ```python blocks, in order."""
    return [m.group(1).strip("\n") for m in CODE_BLOCK.finditer(reply) if m.group(1).strip()]


def through_block(reply: str, count: int) -> str:
    """The reply up to the end of its ``count``-th code block (as ``code_blocks`` counts).

    What follows was never run: made-up output, a typed FINAL, blocks after a failure.
    """
    seen = 0
    for m in CODE_BLOCK.finditer(reply):
        if m.group(1).strip():
            seen += 1
            if seen == count:
                return reply[: m.end()]
    return reply


def short_answer(reply: str, max_chars: int = 100) -> str | None:
    """A reply that is just an answer (one short line, no code): what FINAL should hold."""
    text = reply.strip().strip("`").strip()
    if not text or "\n" in text or len(text) > max_chars or "```" in reply:
        return None
    return text


@dataclass(frozen=True)
class BareFinal:
    kind: str  # "value" for FINAL(...), "var" for FINAL_VAR(...)
    text: str


def bare_final(reply: str) -> BareFinal | None:
    """A FINAL(...) or FINAL_VAR(...) written on its own line, outside code.

    Only meaningful when the reply has no code block: a FINAL next to code that has not
    run yet is ignored by the engine.
    """
    outside = CODE_BLOCK.sub("", reply)
    matches = list(_BARE_FINAL.finditer(outside))
    if not matches:
        return None
    m = matches[0]
    kind, inner = m.group(1), m.group(2).strip()
    # The answer runs to the last ')' of the reply, so it may span lines.
    if kind == "FINAL_VAR":
        name = inner.strip("'\" ")
        return BareFinal("var", name) if _IDENTIFIER.fullmatch(name) else None
    try:
        value = ast.literal_eval(inner)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return BareFinal("value", inner)  # plain words: FINAL(The answer is 42)
    return BareFinal("value", str(value))
