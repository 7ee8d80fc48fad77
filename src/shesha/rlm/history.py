"""What the root model is shown: the opening prompts, then each step's reply and what
came of it, with untrusted text between tags that carry the query's random id."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from shesha.llm.types import Message
from shesha.rlm.config import EngineConfig
from shesha.rlm.prompting import PromptSet
from shesha.sandbox.execution import SubcallItem

MAX_LISTED_DOCS = 100
PREVIEW_DOCS = 5
"""The first documents the opening previews: their line count and first lines."""
PREVIEW_LINES = 3
PREVIEW_LINE_CHARS = 120


@dataclass(frozen=True)
class Preview:
    lines: int
    head: str
    """The first non-blank lines, each cut short."""


def preview(text: str) -> Preview:
    head = []
    for line in text.splitlines():
        if line.strip():
            head.append(line.strip()[:PREVIEW_LINE_CHARS])
        if len(head) == PREVIEW_LINES:
            break
    return Preview(lines=text.count("\n") + 1 if text else 0, head="\n".join(head))


UNTRUSTED = "untrusted_document_content"
"""The tag around sub-call content; REPL output is ``<repl_output type="{UNTRUSTED}">``."""


@dataclass
class Turn:
    """One step: the reply as the history shows it, and what came of it."""

    reply: str
    outputs: list[tuple[str, str]]
    """(tag attributes, text) for each block that ran; empty for a nudge."""
    nudge: str | None = None
    """What the engine said instead of running anything (a reply with no code)."""
    error: str | None = None
    """The failed block's error, when one failed."""
    failed_code: str | None = None
    escalation: str | None = None
    """The engine's word after the output (a note or a nudge, never output itself)."""
    shown: bool = False
    """The documents, read whole into the opening message: judged like output, never
    shown as a step of its own."""


def wrap(nonce: str, tag: str, text: str, attrs: str = "", *, typed: bool = False) -> str:
    """Text between an opening and a closing tag that both carry a random id: a closing
    tag forged inside the text lacks the id, so it stays data. The id is scrubbed from
    the text first, so even a text that learned it cannot close the block."""
    kind = f' type="{UNTRUSTED}"' if typed else ""
    if nonce:
        text = text.replace(nonce, "")
    return f'<{tag}{kind} id="{nonce}"{attrs}>\n{text}\n</{tag} id="{nonce}">'


_CLOSING = re.compile(r'</[a-z_]+ id="([0-9a-f]{32})">\s*\Z')


def without_boundary(text: str) -> str:
    """The text with its block's random id blanked (``id=""``): the id of the closing tag
    that ends it, wherever it stands, and no other, so that a key made of the text is the
    same for every query and text that only looks like an id still counts."""
    found = _CLOSING.search(text)
    return text.replace(f'id="{found.group(1)}"', 'id=""') if found else text


def subcall_messages(prompts: PromptSet, item: SubcallItem, boundary: str) -> list[Message]:
    """A sub-call as the sub-model is asked it: the instruction, then the content between
    untrusted tags with the random ``boundary``. Every caller builds it here (the engine,
    replay, MCP sessions), so a sub-call's ``prompt_key`` is the same wherever it is made."""
    user = item.instruction
    if item.content and item.instruction_last:
        user = wrap(boundary, UNTRUSTED, item.content) + "\n\n" + item.instruction
    elif item.content:
        user += "\n\n" + wrap(boundary, UNTRUSTED, item.content)
    return [
        {"role": "system", "content": prompts.render("subcall_system")},
        {"role": "user", "content": user},
    ]


def joined(*parts: str | None) -> str:
    return "\n\n".join(p for p in parts if p)


def opening(
    prompts: PromptSet,
    config: EngineConfig,
    question: str,
    docs: Sequence[tuple[str, int]],
    *,
    previews: Sequence[Preview] = (),
    nonce: str = "",
) -> list[Message]:
    """The system prompt (metadata about ``context``, with a preview of the first
    documents' first lines, between untrusted tags) and the question."""
    listed = []
    for i, (name, chars) in enumerate(docs[:MAX_LISTED_DOCS]):
        if i < len(previews):
            p = previews[i]
            head = wrap(nonce, UNTRUSTED, p.head) if p.head else "(blank)"
            listed.append(f"  [{i}] {name} ({chars:,} chars, {p.lines:,} lines), starting:\n{head}")
        else:
            listed.append(f"  [{i}] {name} ({chars:,} chars)")
    if len(docs) > MAX_LISTED_DOCS:
        listed.append(f"  ... and {len(docs) - MAX_LISTED_DOCS:,} more (see doc_names)")
    system = prompts.render(
        "system",
        doc_count=len(docs),
        total_chars=f"{sum(chars for _, chars in docs):,}",
        doc_list="\n".join(listed) or "  (no documents)",
        subcall_chars=f"{config.subcall_chars:,}",
        max_output_chars=f"{config.max_output_chars:,}",
    )
    user = prompts.render("user", question=question)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def reading(
    prompts: PromptSet, nonce: str, question: str, docs: Sequence[tuple[str, int]], text: str
) -> list[Message]:
    """The opening when the documents are short enough to read whole: a system prompt
    for reading, then the documents (as the sandbox printed them) and the question."""
    system = prompts.render(
        "read_system", doc_count=len(docs), total_chars=f"{sum(c for _, c in docs):,}"
    )
    documents = wrap(nonce, UNTRUSTED, text)
    user = prompts.render("read_user", documents=documents, question=question)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


EARLIER_BUDGET = 4_000
"""Characters of earlier questions and answers a follow-up is shown, newest first."""
ANSWER_CHARS = 600


def earlier_exchanges(
    exchanges: Sequence[tuple[str, str | None]], budget: int = EARLIER_BUDGET
) -> str:
    """A conversation's earlier questions and answers, compacted: the newest first fit the
    budget whole (long answers cut); what does not fit is counted, not shown."""
    shown: list[str] = []
    used = 0
    for question, answer in reversed(exchanges):
        said = answer if answer is not None else "(no answer)"
        if len(said) > ANSWER_CHARS:
            said = said[:ANSWER_CHARS] + "..."
        entry = f"Q: {question}\nA: {said}"
        if shown and used + len(entry) > budget:
            break
        shown.append(entry)
        used += len(entry)
    left = len(exchanges) - len(shown)
    lines = list(reversed(shown))
    if left:
        lines.insert(0, f"({left} earlier exchanges left out)")
    return "\n".join(lines)


def with_earlier(
    prompts: PromptSet, start: Sequence[Message], exchanges: Sequence[tuple[str, str | None]]
) -> list[Message]:
    """The opening of a follow-up: the earlier exchanges before the question."""
    if not exchanges:
        return list(start)
    note = prompts.render("earlier", exchanges=earlier_exchanges(exchanges))
    question = start[-1]
    return [*start[:-1], {**question, "content": f"{note}\n\n{question['content']}"}]


def history(
    prompts: PromptSet,
    config: EngineConfig,
    nonce: str,
    start: Sequence[Message],
    turns: Sequence[Turn],
) -> list[Message]:
    """The opening, then each turn. Old REPL outputs are shortened so that long runs
    fit the model's window."""
    messages = list(start)
    keep_from = len(turns) - config.keep_full_outputs
    note = prompts.render("output_note", nonce=nonce)
    for i, turn in enumerate(turns):
        if turn.shown:
            continue  # already in the opening message
        messages.append({"role": "assistant", "content": turn.reply})
        if turn.nudge is not None:
            messages.append({"role": "user", "content": joined(turn.nudge, turn.escalation)})
            continue
        parts = [note]
        for attrs, full in turn.outputs:
            text = full
            if i < keep_from and len(full) > config.old_output_chars:
                cut = len(full) - config.old_output_chars
                text = (
                    full[: config.old_output_chars]
                    + f"\n... [{cut:,} characters of this older output shortened; "
                    "variables still hold full results]"
                )
            parts.append(wrap(nonce, "repl_output", text, attrs, typed=True))
        messages.append({"role": "user", "content": joined(*parts, turn.escalation)})
    return messages
