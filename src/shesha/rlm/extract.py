"""Reading the root model's reply: the code to run, and the answer if it gives one.

The rule
--------
A reply holds *code* and *FINAL lines*.

**Code** is every fenced block in order: ```` ```repl ````, ```` ```python ````,
```` ```py ```` (any case, ``~~~`` fences too), and a fence with no language when what it
holds is Python. A reply with no fence at all that is Python as a whole, and does more
than name a value, is one block: small local models often leave the fence out.

**A FINAL line** is ``FINAL(<argument>)`` or ``FINAL_VAR(<argument>)`` standing on a line
of its own, or ending a line of prose such as ``Answer: FINAL(...)``, in any case
(``Final(...)`` is rewritten as ``FINAL(...)`` in code). Markdown around it
(``**bold**``, ``` `code` ```, a list or quote marker, a trailing full stop) is ignored, and
the argument runs to the matching parenthesis, across lines if need be. The argument is
one of two things:

- **Python**, when it is a valid expression that does more than combine literals:
  ``FINAL(answer)``, ``FINAL(f"{n} rows")``, ``FINAL(len(hits))``, ``FINAL("Paris")``,
  ``FINAL(42)``. The call keeps its Python meaning and runs in the sandbox.
- **Text**, otherwise: ``FINAL(Maria Lopez)``, ``FINAL(Acme (Pty) Ltd)``,
  ``FINAL($1,577 million)``, and also literals joined by operators or commas, which are
  dates and numbers as people write them, not arithmetic: ``FINAL(2023-12-31)``,
  ``FINAL(1,577)``. The text is the answer itself, with surrounding quotes stripped.
  Inside a block the line is rewritten as ``FINAL("<text>")``, so the block still runs.

``FINAL_VAR(name)`` always names a variable, quoted or not.

When a reply gives several FINAL lines, the last one counts (models revise). A line
``FINAL: <text>`` or ``Final answer: <text>`` is text too. ``<think>`` sections and
chat-template tokens (``<|im_end|>``) are dropped first. Never an answer: the placeholder
a prompt shows (``FINAL(your final answer here)``), and FINAL inside a sentence ("I will
call FINAL(x) once...": ``ParsedReply.mentioned``, which the engine asks the model to confirm).

A FINAL line outside code counts only when the reply has no code; next to code that has
not run yet it is a guess (``ParsedReply.ignored`` says so). One case needs the sandbox: an
argument that is Python but names nothing defined, like ``FINAL(Paris)`` or ``FINAL(10-K)``.
It runs as Python; when that fails with a NameError, the engine takes the argument as text
if earlier output showed it (``final_source``), and otherwise returns the error.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

_FENCE = re.compile(
    r"^[ \t]*(?P<fence>```|~~~)[ \t]*(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)(?P=fence)[ \t]*$",
    re.S | re.M,
)
_INNER_OPENING = re.compile(r"\A[ \t]*(?:```|~~~)[ \t]*(?P<lang>[\w+-]+)[^\n]*\n")
_SPECIAL_TOKEN = re.compile(r"<\|[\w-]{1,40}\|>")
_COLON_FINAL = re.compile(
    r"^[ \t*_>#-]*(?:FINAL|final answer|FINAL ANSWER|Final answer)[ \t*_]*:"
    r"[ \t*_]*(?P<text>\S.*?)[ \t*_.]*$",
    re.M,
)
PLACEHOLDERS = frozenset(
    {"answer", "your answer", "the answer", "final answer", "your final answer",
     "your final answer here", "value", "...", "<answer>", "answer here"}
)  # fmt: skip
"""Texts copied from a prompt's FINAL example: never an answer."""
_CODE_LANGS = {"repl", "python", "py", "python3", "ipython"}
_OPEN = re.compile(r"\b(FINAL_VAR|FINAL)\s*\(", re.I)
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
_DECORATION = " \t*_`>.,;!"
_LIST_MARKER = re.compile(r"^\s*(?:[-+*]|\d+[.)])\s+")
_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)


def _clean(reply: str) -> str:
    """Drop reasoning and chat-template tokens."""
    return _SPECIAL_TOKEN.sub("", _THINK.sub("", reply))


@dataclass(frozen=True)
class FinalLine:
    """A FINAL line: ``kind`` is "text" (the answer itself), "python" (code to run: a
    FINAL call with a Python argument) or "var" (FINAL_VAR of a variable name)."""

    kind: str
    value: str

    def as_code(self) -> str:
        if self.kind == "var":
            return f"FINAL_VAR({self.value!r})"
        if self.kind == "python":
            return f"FINAL({self.value})"
        return f"FINAL({self.value!r})"


@dataclass(frozen=True)
class ParsedReply:
    """What a reply asks for: code to run, or an answer with nothing to run."""

    blocks: tuple[str, ...] = ()
    answer: str | None = None
    """A FINAL given as text in a reply with no code: the answer itself."""
    ignored: tuple[str, ...] = field(default=())
    """FINAL lines outside code in a reply that has code: guesses, not answers."""
    mentioned: tuple[str, ...] = field(default=())
    """FINAL(...) written inside a sentence, not on a line of its own: maybe an answer."""
    unfenced: bool = False


def _match_paren(text: str, start: int) -> int | None:
    """The index of the ``)`` that closes the ``(`` before ``start``, skipping quoted
    strings; None when it never closes."""
    depth = 1
    quote: str | None = None
    i = start
    while i < len(text):
        ch = text[i]
        if quote is not None:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _last_paren(text: str, start: int) -> int | None:
    """The last ``)`` on the line where the argument starts: for text that is not Python
    (an apostrophe in ``O'Brien``), quotes cannot be trusted to pair up."""
    line_end = text.find("\n", start)
    end = text.rfind(")", start, len(text) if line_end < 0 else line_end)
    return end if end >= start else None


def _is_python(argument: str) -> bool:
    """An expression that does more than combine literals (see the module's rule)."""
    try:
        tree = ast.parse(argument.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    node = tree.body
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.UnaryOp) and isinstance(node.operand, ast.Constant):
        return True
    literal_parts = (ast.Constant, ast.BinOp, ast.UnaryOp, ast.Tuple, ast.operator)
    return not all(
        isinstance(n, (*literal_parts, ast.unaryop, ast.expr_context)) for n in ast.walk(node)
    )


def _unquote(text: str) -> str:
    text = text.strip()
    for q in ('"""', "'''", '"', "'", "`"):
        if len(text) >= 2 * len(q) and text.startswith(q) and text.endswith(q):
            return text[len(q) : -len(q)].strip()
    return text


def _classify(kind: str, argument: str) -> FinalLine | None:
    argument = argument.strip()
    if kind == "FINAL_VAR":
        name = _unquote(argument)
        return FinalLine("var", name) if _IDENTIFIER.fullmatch(name) else None
    if not argument:
        return None
    if _is_python(argument):
        try:
            value = ast.literal_eval(argument)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return FinalLine("python", argument)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return FinalLine("text", str(value))
        return FinalLine("python", argument)
    return FinalLine("text", _unquote(argument))


@dataclass(frozen=True)
class _Found:
    final: FinalLine
    start: int  # where the line holding it starts
    end: int  # just past the line it ends on
    alone: bool  # nothing but decoration before FINAL on its line


def _line_end(text: str, pos: int) -> int:
    end = text.find("\n", pos)
    return len(text) if end < 0 else end


def _closing(text: str, open_end: int, alone: bool) -> int | None:
    """Where a FINAL's argument ends: the matching ``)`` when only decoration follows it;
    else the line's last ``)`` (unpaired quotes, a smiley); else, for a FINAL standing at
    the start of its line, the matching ``)`` with prose after it ignored."""
    balanced = _match_paren(text, open_end)
    if balanced is not None and not text[balanced + 1 : _line_end(text, balanced)].strip(
        _DECORATION
    ):
        return balanced
    last = _last_paren(text, open_end)
    if last is not None and not text[last + 1 : _line_end(text, last)].strip(_DECORATION):
        return last
    return balanced if alone else None


def _find_finals(text: str, mentions: list[str] | None = None) -> list[_Found]:
    """FINAL lines in ``text`` (see the rule), in order; FINALs inside sentences go to
    ``mentions`` when it is given."""
    found: list[_Found] = []
    pos = 0
    while (m := _OPEN.search(text, pos)) is not None:
        pos = m.end()
        line_start = text.rfind("\n", 0, m.start()) + 1
        before = _LIST_MARKER.sub("", text[line_start : m.start()]).strip(_DECORATION)
        close = _closing(text, m.end(), alone=not before)
        if close is None:
            continue  # FINAL( that never closes on its line: talk about FINAL
        if before and not before.endswith(":"):
            if mentions is not None:
                mentions.append(_unquote(text[m.end() : close]))
            continue  # "I will call FINAL(answer) when...": not given as the answer
        final = _classify(m.group(1).upper(), text[m.end() : close])
        if final is not None:
            line_end = _line_end(text, close)
            found.append(_Found(final, line_start, line_end, alone=not before))
            pos = line_end
    return found


def _rewrite_text_finals(code: str) -> str:
    """Quote FINAL lines whose argument is text, so the block is Python again, and spell
    ``Final(...)`` / ``final_var(...)`` the way the sandbox knows them."""
    out, pos = [], 0
    for f in _find_finals(code):
        line = code[f.start : f.end]
        misspelt = not re.search(r"\b(FINAL_VAR|FINAL)\s*\(", line)
        if not f.alone or (f.final.kind != "text" and not misspelt):
            continue
        indent = line[: len(line) - len(line.lstrip())]
        out.append(code[pos : f.start] + indent + f.final.as_code())
        pos = f.end
    return "".join(out) + code[pos:] if out else code


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return True


def _does_something(code: str) -> bool:
    """Python that does more than name a value: a reply "Paris" or "42" is not code."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return any(
        not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant | ast.Name))
        and not (isinstance(s, ast.AnnAssign) and s.value is None)  # "Reasoning: None"
        for s in tree.body
    )


def _only_final_calls(code: str) -> bool:
    """Code that does nothing but call FINAL: the FINAL rule has already judged it."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return all(
        isinstance(s, ast.Expr)
        and isinstance(s.value, ast.Call)
        and isinstance(s.value.func, ast.Name)
        and s.value.func.id in ("FINAL", "FINAL_VAR")
        for s in tree.body
    )


def fenced_blocks(reply: str) -> list[tuple[str, str, int, int]]:
    """(language, body, start, end) of every fenced block, in order. A bare fence doubled
    around a fence with a language takes the inner one's language."""
    out = []
    for m in _FENCE.finditer(reply):
        lang, body = m.group("lang").lower(), m.group("body")
        inner = _INNER_OPENING.match(body) if not lang else None
        if inner is not None:
            lang, body = inner.group("lang").lower(), body[inner.end() :]
        out.append((lang, body.strip("\n"), m.start(), m.end()))
    return out


def _is_code_fence(lang: str, body: str) -> bool:
    if not body.strip():
        return False
    if lang in _CODE_LANGS:
        return True
    return lang == "" and _parses(_rewrite_text_finals(body)) and _does_something(body)


def _is_placeholder(final: FinalLine) -> bool:
    return final.kind == "text" and final.value.strip().casefold() in PLACEHOLDERS


def read_reply(reply: str) -> ParsedReply:
    """Apply the module's rule to one reply."""
    reply = _clean(reply)
    fences = fenced_blocks(reply)
    blocks = [
        _rewrite_text_finals(body) for lang, body, _, _ in fences if _is_code_fence(lang, body)
    ]
    outside = reply
    for _, _, start, end in reversed(fences):
        outside = outside[:start] + outside[end:]
    mentions: list[str] = []
    finals = [f for f in _find_finals(outside, mentions) if not _is_placeholder(f.final)]
    if blocks:
        return ParsedReply(blocks=tuple(blocks), ignored=tuple(f.final.value for f in finals))
    if finals:
        last = finals[-1].final  # a model that revises its answer writes the new one last
        if last.kind == "text":
            return ParsedReply(answer=last.value)
        return ParsedReply(blocks=(last.as_code(),))
    colon = [m.group("text") for m in _COLON_FINAL.finditer(outside)]
    if colon and not fences and _unquote(colon[-1]).casefold() not in PLACEHOLDERS:
        return ParsedReply(answer=_unquote(colon[-1]))
    code = _rewrite_text_finals(reply.strip())
    if not fences and _does_something(code) and not _only_final_calls(code):
        return ParsedReply(blocks=(code,), unfenced=True)
    return ParsedReply(mentioned=tuple(m for m in mentions if m.casefold() not in PLACEHOLDERS))


def through_block(reply: str, count: int) -> str:
    """The reply up to the end of its ``count``-th code block.

    What follows was never run: made-up output, a typed FINAL, blocks after a failure.
    """
    seen = 0
    for lang, body, _, end in fenced_blocks(reply):
        if _is_code_fence(lang, body):
            seen += 1
            if seen == count:
                return reply[:end]
    return reply


def _only_expression(code: str) -> ast.expr | None:
    """The expression, when a block is one expression statement and nothing else."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr):
        return None
    return tree.body[0].value


def typed_final(code: str) -> str | None:
    """The answer, when a block's last statement is FINAL on a literal: typed, not computed.

    ``"text"`` for ``FINAL("text")`` or ``FINAL(42)``; None for a computed FINAL.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    if not tree.body or not isinstance(tree.body[-1], ast.Expr):
        return None
    call = tree.body[-1].value
    if not (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id == "FINAL"
        and len(call.args) == 1
        and isinstance(call.args[0], ast.Constant)
    ):
        return None
    return str(call.args[0].value)


def without_last_statement(code: str) -> str:
    """The block minus its last top-level statement (a typed FINAL to leave out). Code
    that does not parse is returned whole: the sandbox reports its SyntaxError."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    if not tree.body:
        return ""
    last = tree.body[-1]
    lines = code.splitlines(keepends=True)
    return "".join(lines[: last.lineno - 1]).rstrip("\n")


def final_source(code: str) -> str | None:
    """The argument's source, when a block is only ``FINAL(<expression>)``."""
    call = _only_expression(code)
    if (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id == "FINAL"
        and len(call.args) == 1
        and not call.keywords
    ):
        return ast.get_source_segment(code, call.args[0])
    return None


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


def short_answer(reply: str, max_chars: int = 100) -> str | None:
    """A reply that is just an answer (one short line, no code): what FINAL should hold."""
    text = reply.strip().strip("`").strip()
    if not text or "\n" in text or len(text) > max_chars or "```" in reply:
        return None
    return text


def final_in_last_reply(reply: str) -> str | None:
    """The answer in a reply after which nothing runs (the "answer now" call): a FINAL
    line inside code or outside it, as text; None when there is none."""
    reply = _clean(reply)
    for f in reversed(_find_finals(reply)):
        if f.final.kind in ("text", "python") and not _is_placeholder(f.final):
            return _unquote(f.final.value) if f.final.kind == "python" else f.final.value
    return None


_TRACE_LINE = re.compile(r'File "<repl-\d+>", line (\d+)')


def failing_line(code: str, error: str) -> str | None:
    """The line of ``code`` that the error's traceback points at, stripped."""
    numbers = _TRACE_LINE.findall(error)
    lines = code.splitlines()
    if not numbers or not 1 <= int(numbers[-1]) <= len(lines):
        return None
    return lines[int(numbers[-1]) - 1].strip() or None


def final_argument(line: str) -> str | None:
    """The argument of the FINAL call on a line, as text (quotes stripped)."""
    m = _OPEN.search(line)
    if m is None or m.group(1) != "FINAL":
        return None
    end = line.rfind(")")
    if end < m.end():
        return None
    return _unquote(line[m.end() : end]) or None
