"""The shesha sandbox runner: the one program that runs inside the container.

Standard library only; it must run on any Python >= 3.11 in the sandbox image.
It is a separate program from the host library: nothing here imports shesha.

Protocol (both directions, over the container's stdin/stdout):
    frame   = u32 header_len (big-endian) | u32 payload_len | header JSON | payload bytes
    header  = {"kind": str, "id": int, ...}
The payload carries bulk data (document texts) so that it is never JSON-escaped.

Host -> runner kinds: ping, load, reset, exec, subcall_result, shutdown.
Runner -> host kinds: pong, loaded, reset_ok, result, subcall, error.
"""

from __future__ import annotations

import ast
import hashlib
import json
import linecache
import os
import re
import resource
import signal
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, BinaryIO

PROTOCOL_VERSION = 1
_HEADER = struct.Struct(">II")
DEFAULT_MAX_OUTPUT = 20_000
MAX_CITATIONS = 200


def _own_hash() -> str:
    with open(__file__, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class ProtocolViolation(Exception):
    """The host sent something this runner cannot accept."""


class Wire:
    """Length-prefixed frames over two private file descriptors."""

    def __init__(self, in_fd: int, out_fd: int) -> None:
        self._in: BinaryIO = open(in_fd, "rb", buffering=1 << 16)  # noqa: SIM115
        self._out_fd = out_fd
        self._lock = threading.Lock()
        self._owner = os.getpid()

    def _read_exact(self, n: int) -> bytes:
        data = self._in.read(n)
        if data is None or len(data) != n:
            raise EOFError("host closed the channel")
        return data

    def read(self) -> tuple[dict[str, Any], bytes]:
        hlen, plen = _HEADER.unpack(self._read_exact(_HEADER.size))
        header = json.loads(self._read_exact(hlen))
        if not isinstance(header, dict) or not isinstance(header.get("kind"), str):
            raise ProtocolViolation("frame header is not an object with a kind")
        payload = self._read_exact(plen) if plen else b""
        return header, payload

    def write(self, header: dict[str, Any]) -> None:
        if os.getpid() != self._owner:
            # A process forked by code in the sandbox must never speak the protocol.
            os._exit(0)
        body = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", "surrogatepass"
        )
        data = memoryview(_HEADER.pack(len(body), 0) + body)
        with self._lock:
            while data:
                written = os.write(self._out_fd, data)
                data = data[written:]


class BoundedText:
    """A text sink that keeps the head and tail of what is written, never more."""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 200)
        self._head_cap = self.limit // 2
        self._tail_cap = self.limit - self._head_cap
        self._head: list[str] = []
        self._head_len = 0
        self._tail: list[str] = []
        self._tail_len = 0
        self.total = 0

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        n = len(s)
        self.total += n
        if self._head_len < self._head_cap:
            take = s[: self._head_cap - self._head_len]
            self._head.append(take)
            self._head_len += len(take)
            s = s[len(take) :]
            if not s:
                return n
        self._tail.append(s)
        self._tail_len += len(s)
        if self._tail_len > 2 * self._tail_cap:
            joined = "".join(self._tail)[-self._tail_cap :]
            self._tail = [joined]
            self._tail_len = len(joined)
        return n

    def flush(self) -> None:
        """Nothing to flush: text is kept in memory."""

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:
        return "utf-8"

    def text(self) -> str:
        head = "".join(self._head)
        tail = "".join(self._tail)
        kept = self._head_len + len(tail[-self._tail_cap :])
        if self.total <= self._head_cap + self._tail_cap:
            return head + tail
        omitted = self.total - kept
        return (
            head
            + f"\n... [{omitted:,} characters omitted: output is truncated; print only "
            + "what you need, such as the text around a match, and keep results in "
            + "variables] ...\n"
            + tail[-self._tail_cap :]
        )

    @property
    def truncated(self) -> bool:
        return self.total > self._head_cap + self._tail_cap


class _FinalVarNames(ast.NodeTransformer):
    """Rewrite FINAL_VAR(name) with a bare identifier into FINAL_VAR("name")."""

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        if (
            isinstance(node.func, ast.Name)
            and node.func.id == "FINAL_VAR"
            and len(node.args) == 1
            and isinstance(node.args[0], ast.Name)
        ):
            node.args[0] = ast.copy_location(ast.Constant(node.args[0].id), node.args[0])
        return node


class Runner:
    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.runner_hash = _own_hash()
        self.docs: tuple[str, ...] = ()
        self.names: tuple[str, ...] = ()
        self.version: str | None = None
        self.namespace: dict[str, Any] = {}
        self.final: str | None = None
        self._cell = 0
        self._subcall_id = 0
        self._subcall_lock = threading.Lock()
        self.reset()

    # -- the functions code in the sandbox sees ------------------------------------------

    def _final(self, value: Any) -> None:
        if value is None:
            raise ValueError(
                "FINAL(None): no answer has been found yet. Read the output and errors "
                "above, fix the code, and print what it finds before calling FINAL"
            )
        if isinstance(value, str):
            self.final = value
        elif isinstance(value, dict | list | tuple | bool | int | float):
            # Structured answers (a dict or a list, for typed outputs) travel as JSON.
            self.final = json.dumps(value, ensure_ascii=False, default=str)
        else:
            self.final = str(value)

    def _final_var(self, name: Any) -> None:
        if not isinstance(name, str):
            raise TypeError(
                "FINAL_VAR takes the name of a variable, e.g. FINAL_VAR('answer'); "
                "to return a value directly use FINAL(value)"
            )
        if name not in self.namespace:
            raise NameError(
                f"FINAL_VAR: no variable named {name!r}; assign it first, or use FINAL(value)"
            )
        self._final(self.namespace[name])

    def _cite(self, doc: Any, start: Any, end: Any = None) -> dict[str, Any]:
        """cite(doc, "exact quote") or cite(doc, start, end): supports the answer with a
        passage of a document (its name or index in context). The host checks it."""
        if isinstance(doc, int) and not isinstance(doc, bool):
            if not 0 <= doc < len(self.docs):
                raise IndexError(f"cite: there is no document {doc} (there are {len(self.docs)})")
            name = self.names[doc]
        elif isinstance(doc, str):
            name = doc
        else:
            raise TypeError("cite(doc, quote) takes a document's name or index first")
        if isinstance(start, str) and end is None:
            entry: dict[str, Any] = {"document": name, "quote": start}
        elif isinstance(start, int) and isinstance(end, int) and name in self.names:
            text = self.docs[self.names.index(name)]
            entry = {"document": name, "quote": text[start:end], "start": start, "end": end}
        else:
            raise TypeError(
                "cite takes (doc, 'exact quote') or (doc, start, end) with start and end "
                "offsets into that document's text"
            )
        if len(self.citations) < MAX_CITATIONS:
            self.citations.append(entry)
        return entry

    def _tool(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            with self._subcall_lock:
                self._subcall_id += 1
                tid = self._subcall_id
                self.wire.write({"kind": "tool", "id": tid, "name": name, "args": list(args),
                                 "kwargs": kwargs})  # fmt: skip
                header, _ = self.wire.read()
            if header.get("kind") != "tool_result" or header.get("id") != tid:
                raise ProtocolViolation(f"expected tool_result {tid}, got {header.get('kind')}")
            if not header.get("ok"):
                raise RuntimeError(f"{name}: {header.get('error')}")
            return header.get("value")

        call.__name__ = name
        return call

    def _install_tools(self, tools: Any) -> None:
        if not isinstance(tools, list):
            return
        for tool in tools:
            if isinstance(tool, dict) and str(tool.get("name", "")).isidentifier():
                name = str(tool["name"])
                stub = self._tool(name)
                stub.__doc__ = str(tool.get("doc") or "")
                self.namespace[name] = stub

    def _subcall(self, items: list[dict[str, str]]) -> list[str]:
        with self._subcall_lock:
            self._subcall_id += 1
            sid = self._subcall_id
            self.wire.write({"kind": "subcall", "id": sid, "items": items})
            header, _ = self.wire.read()
            if header.get("kind") != "subcall_result" or header.get("id") != sid:
                raise ProtocolViolation(f"expected subcall_result {sid}, got {header.get('kind')}")
            results = header.get("results")
            if not isinstance(results, list) or len(results) != len(items):
                raise ProtocolViolation("subcall_result has the wrong number of results")
            return [r if isinstance(r, str) else str(r) for r in results]

    def _llm_query(self, instruction: str, content: Any = "") -> str:
        if not isinstance(instruction, str):
            raise TypeError("llm_query(instruction, content='') takes the instruction as a str")
        text = content if isinstance(content, str) else str(content)
        return self._subcall([{"instruction": instruction, "content": text}])[0]

    def _llm_query_batched(self, instruction: Any, contents: Any = None) -> list[str]:
        if contents is None:
            if not isinstance(instruction, list | tuple):
                raise TypeError(
                    "llm_query_batched(instruction, contents) takes a list of contents, "
                    "or a single list of complete prompts"
                )
            prompts = [p if isinstance(p, str) else str(p) for p in instruction]
            items = [{"instruction": p, "content": ""} for p in prompts]
        else:
            if not isinstance(instruction, str):
                raise TypeError("llm_query_batched: the instruction must be a str")
            if isinstance(contents, str) or not hasattr(contents, "__iter__"):
                raise TypeError("llm_query_batched: contents must be a list of str")
            items = [
                {"instruction": instruction, "content": c if isinstance(c, str) else str(c)}
                for c in contents
            ]
        if not items:
            return []
        return self._subcall(items)

    # -- message handlers -------------------------------------------------------------

    def reset(self) -> None:
        self.final = None
        self.citations: list[dict[str, Any]] = []
        self.namespace = {
            "__name__": "__main__",
            "__builtins__": __builtins__,
            "re": re,  # the prompts show re.findall; an import left out should not cost a step
            "context": list(self.docs),
            "doc_names": list(self.names),
            "FINAL": self._final,
            "FINAL_VAR": self._final_var,
            "llm_query": self._llm_query,
            "llm_query_batched": self._llm_query_batched,
            "cite": self._cite,
        }

    def load(self, header: dict[str, Any], payload: bytes) -> dict[str, Any]:
        names = header.get("names")
        lengths = header.get("lengths")
        if (
            not isinstance(names, list)
            or not isinstance(lengths, list)
            or len(names) != len(lengths)
        ):
            raise ProtocolViolation("load needs names and lengths of equal length")
        if sum(lengths) != len(payload):
            raise ProtocolViolation("load lengths do not add up to the payload size")
        view = memoryview(payload)
        docs = []
        pos = 0
        for n in lengths:
            docs.append(str(view[pos : pos + n], "utf-8", "replace"))
            pos += n
        self.docs = tuple(docs)
        self.names = tuple(str(n) for n in names)
        self.version = str(header.get("version") or "")
        self.reset()
        return {
            "kind": "loaded",
            "version": self.version,
            "documents": len(self.docs),
            "chars": sum(len(d) for d in self.docs),
        }

    def execute(self, header: dict[str, Any]) -> dict[str, Any]:
        code = header.get("code")
        if not isinstance(code, str):
            raise ProtocolViolation("exec needs code")
        limit = int(header.get("max_output") or DEFAULT_MAX_OUTPUT)
        out, err = BoundedText(limit), BoundedText(limit)
        self.final = None
        cited = len(self.citations)
        self._install_tools(header.get("tools"))
        error: str | None = None
        self._cell += 1
        filename = f"<repl-{self._cell}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        try:
            tree = _FinalVarNames().visit(ast.parse(code, filename, "exec"))
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)
            exec(compile(tree, filename, "exec"), self.namespace)  # noqa: S102
            if last is not None:
                value = eval(compile(last, filename, "eval"), self.namespace)  # noqa: S307
                if value is not None:
                    print(repr(value))
        except SyntaxError as e:
            error = "".join(traceback.format_exception_only(type(e), e))
        except BaseException as e:  # code in the sandbox may raise anything, SystemExit too
            if isinstance(e, ProtocolViolation):
                raise
            tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
            error = "".join(traceback.format_exception(type(e), e, tb))
        finally:
            sys.stdout, sys.stderr = saved
        wall = time.perf_counter() - t0
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
        if error is not None and len(error) > limit:
            bounded = BoundedText(limit)
            bounded.write(error)
            error = bounded.text()
        return {
            "kind": "result",
            "stdout": out.text(),
            "stderr": err.text(),
            "stdout_chars": out.total,
            "stderr_chars": err.total,
            "error": error,
            "final": self.final,
            "citations": self.citations[cited:],
            "cpu_s": round(cpu, 6),
            "wall_s": round(wall, 6),
            "peak_rss_kb": usage1.ru_maxrss,
        }

    def handle(self, header: dict[str, Any], payload: bytes) -> dict[str, Any] | None:
        kind = header["kind"]
        if kind == "ping":
            return {
                "kind": "pong",
                "runner": self.runner_hash,
                "protocol": PROTOCOL_VERSION,
                "version": self.version,
                "python": sys.version.split()[0],
                "pid": os.getpid(),
            }
        if kind == "exec":
            return self.execute(header)
        if kind == "reset":
            self.reset()
            return {"kind": "reset_ok", "version": self.version}
        if kind == "load":
            return self.load(header, payload)
        if kind == "shutdown":
            return None
        raise ProtocolViolation(f"unknown message kind {kind!r}")

    def serve(self) -> None:
        while True:
            try:
                header, payload = self.wire.read()
            except EOFError:
                return
            reply = self.handle(header, payload)
            if reply is None:
                return
            reply["id"] = header.get("id")
            self.wire.write(reply)


def _take_stdio() -> tuple[int, int]:
    """Keep the protocol on private descriptors; code in the sandbox gets harmless ones.

    stdin becomes /dev/null, and anything written to fd 1 directly (os.write, child
    processes) goes to stderr, which the host keeps only a bounded tail of.
    """
    in_fd, out_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    for fd in (in_fd, out_fd):
        os.set_inheritable(fd, False)
    return in_fd, out_fd


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--hash"]:
        print(_own_hash())
        return 0
    # A stop (SIGTERM) must end the runner at once, even when it is PID 1.
    handler: Callable[[int, Any], None] = lambda _sig, _frame: os._exit(143)  # noqa: E731
    signal.signal(signal.SIGTERM, handler)
    in_fd, out_fd = _take_stdio()
    wire = Wire(in_fd, out_fd)
    runner = Runner(wire)
    try:
        runner.serve()
    except ProtocolViolation as e:
        wire.write({"kind": "error", "id": None, "error": f"protocol: {e}"})
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
