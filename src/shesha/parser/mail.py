"""E-mail messages (.eml): the headers people read (From, To, Cc, Date, Subject), the
body (plain text, else the HTML part read as HTML is), then each attachment parsed as a
document of its own kind, recursively: a PDF, a spreadsheet, another message. An
attachment that cannot be read is a warning naming it, never the end of the message."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from shesha.errors import ParseError
from shesha.parser.document import ParsedDocument
from shesha.parser.html import html_to_text

HEADERS = ("From", "To", "Cc", "Date", "Subject")
MAX_DEPTH = 5
"""Messages attached to messages attached to...: deeper than this is not followed."""

AttachmentParser = Callable[[bytes, str], ParsedDocument]
_depth: ContextVar[int] = ContextVar("shesha_mail_depth", default=0)
"""How deep in attached messages this parse is, however they were attached."""


def _body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # an unknown charset: the bytes, as well as we can
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else ""
    text = str(content)
    return html_to_text(text) if part.get_content_type() == "text/html" else text.strip()


def _message_text(
    message: EmailMessage, parse: AttachmentParser, warnings: list[str], depth: int
) -> str:
    lines = [f"{h}: {message[h]}" for h in HEADERS if message[h]]
    body = _body(message)
    text = "\n".join(lines) + ("\n\n" + body if body else "")
    for number, part in enumerate(message.iter_attachments(), start=1):
        name = part.get_filename() or f"attachment-{number}"
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload(0) if part.is_multipart() else None
            if isinstance(inner, EmailMessage) and depth < MAX_DEPTH:
                attached = _message_text(inner, parse, warnings, depth + 1)
                text += f"\n\n--- Attachment: {name} (message) ---\n{attached}"
            continue
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes) or not data:
            warnings.append(f"attachment {name} is empty")
            continue
        try:
            doc = parse(data, name)
        except ParseError as e:
            warnings.append(f"attachment {name} could not be read: {str(e).splitlines()[0]}")
            continue
        except Exception as e:  # noqa: BLE001  one bad attachment must not lose the message
            warnings.append(f"attachment {name} could not be read ({type(e).__name__}: {e})")
            continue
        warnings += [f"attachment {name}: {w}" for w in doc.meta.warnings]
        text += f"\n\n--- Attachment: {name} ---\n{doc.text.strip()}"
    return text


def parse_email(data: bytes, name: str, sha256: str, parse: AttachmentParser) -> ParsedDocument:
    depth = _depth.get()
    if depth >= MAX_DEPTH:
        raise ParseError(
            f"{name}: messages are attached inside each other more than {MAX_DEPTH} deep.",
            hint="Save the innermost message on its own and add that.",
        )
    token = _depth.set(depth + 1)
    try:
        return _parse_email(data, name, sha256, parse)
    except (AttributeError, IndexError, ValueError, LookupError) as e:
        # the standard library's header parser trips on some malformed addresses
        raise ParseError(
            f"{name}: the message is malformed ({type(e).__name__}: {e}).",
            hint="Save the message from your mail program as .eml again, then add it.",
        ) from e
    finally:
        _depth.reset(token)


def _parse_email(data: bytes, name: str, sha256: str, parse: AttachmentParser) -> ParsedDocument:
    message = BytesParser(policy=policy.default).parsebytes(data)
    if not isinstance(message, EmailMessage) or not any(message[h] for h in HEADERS):
        raise ParseError(
            f"{name}: not an e-mail message (no From, To, Date or Subject header).",
            hint="Save the message from your mail program as .eml, then add it again.",
        )
    warnings: list[str] = []
    text = _message_text(message, parse, warnings, 0).strip() + "\n"
    return ParsedDocument.of(
        text,
        data,
        sha256,
        fmt="email",
        parser="email:stdlib",
        warnings=warnings,
    )
