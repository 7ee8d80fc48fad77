"""Host tools: plain Python functions that code in the sandbox may call by name.

The sandbox has no network; a tool is the only door out, and the user opens it. A call
crosses the boundary as JSON: its arguments are checked against the function's type hints
before it runs, and its result is checked against the return hint and turned into JSON
before it goes back. A tool that raises gives the code an error, not the query.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError, validate_call
from pydantic_core import to_jsonable_python

from shesha.errors import ConfigError
from shesha.sandbox.execution import ToolCall, ToolOutcome, ToolSpec


@dataclass(frozen=True)
class HostTool:
    name: str
    signature: str
    doc: str
    call: Callable[..., Any]
    is_async: bool


class HostTools:
    """The tools of a Shesha or of one query, by name."""

    def __init__(self, functions: Sequence[Callable[..., Any]]) -> None:
        self.tools: dict[str, HostTool] = {}
        for fn in functions:
            name = getattr(fn, "__name__", "")
            if not name.isidentifier() or name.startswith("_"):
                raise ConfigError(
                    f"A tool needs a plain function name, not {name!r}.",
                    hint="Pass functions defined with def (or give them a __name__).",
                )
            if name in self.tools:
                raise ConfigError(f"Two tools are named {name!r}.", hint="Rename one of them.")
            checked = validate_call(validate_return=True)(fn)
            self.tools[name] = HostTool(
                name=name,
                signature=f"{name}{_signature(fn)}",
                doc=inspect.getdoc(fn) or "",
                call=checked,
                is_async=inspect.iscoroutinefunction(fn),
            )

    def __bool__(self) -> bool:
        return bool(self.tools)

    def specs(self) -> list[ToolSpec]:
        return [{"name": t.name, "doc": t.doc} for t in self.tools.values()]

    def describe(self) -> str:
        """The tools as the prompt lists them."""
        lines = [
            f"- `{t.signature}`: {t.doc.splitlines()[0] if t.doc else ''}"
            for t in self.tools.values()
        ]
        return "\n".join(lines)

    async def call(self, call: ToolCall) -> ToolOutcome:
        tool = self.tools.get(call.name)
        if tool is None:
            known = ", ".join(self.tools) or "none"
            return ToolOutcome(ok=False, error=f"there is no tool {call.name!r} (tools: {known})")
        try:
            if tool.is_async:
                value = await tool.call(*call.args, **call.kwargs)
            else:
                value = await asyncio.to_thread(tool.call, *call.args, **call.kwargs)
            return ToolOutcome(ok=True, value=to_jsonable_python(value))
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            return ToolOutcome(ok=False, error=f"invalid {where}: {first['msg']}")
        except Exception as e:  # noqa: BLE001  a tool's failure goes back to the code that called it
            return ToolOutcome(ok=False, error=f"{type(e).__name__}: {e}")


def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    """The signature as the prompt shows it, with string annotations resolved."""
    try:
        return inspect.signature(fn, eval_str=True)
    except (NameError, TypeError):  # an annotation that does not resolve: show it as written
        return inspect.signature(fn)
