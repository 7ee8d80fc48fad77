"""The shesha sandbox runner: the one program that runs inside the sandbox.

Standard library only; it must run on any Python >= 3.11 in the sandbox image.
It is a separate program from the host library: nothing here imports shesha.

Two kinds of process, so that no query reaches another:

- The **supervisor** speaks the protocol with the host and holds the documents. It never
  runs code from a query, and nothing a query does can reach it: it is not dumpable (no
  ptrace, no ``/proc/<pid>/mem``), and in a sandbox of its own (Docker, bubblewrap) it is
  PID 1 of the namespace, which no signal from inside stops or kills but SIGTERM (a stop,
  which costs only the sandbox of the code that sends it).
- A **worker** runs one query's code. The supervisor forks it from its own, untouched
  state, so it starts with a fresh interpreter that already holds the documents. At the
  end of the query (``reset``) the supervisor kills it and everything it started, by any
  route (new sessions, orphans, threads), empties the scratch directory, and removes the
  namespace's System V IPC objects; only then does it fork the next worker. When another
  corpus is loaded, the supervisor first re-executes itself, so nothing of the earlier
  corpus is left in the memory a worker would inherit. Workers are forked by a zygote,
  a copy of the supervisor made when it held only the documents, never the supervisor.

The worker speaks only to the supervisor, over a socket of its own; the supervisor checks
each frame, gives it the host's ids, and passes it on. Its raw stdout and stderr go to a
pipe of its own, of which the supervisor keeps a bounded tail to report if it dies.

Protocol with the host (both directions, over the sandbox's stdin/stdout):
    frame   = u32 header_len (big-endian) | u32 payload_len | header JSON | payload bytes
    header  = {"kind": str, "id": int, ...}
The payload carries bulk data (document texts) so that it is never JSON-escaped.

Host -> runner kinds: ping, load, reset, exec, subcall_result, tool_result, shutdown.
Runner -> host kinds: pong, loaded, reset_ok, result, subcall, tool, lost, error.

    python3 runner.py --scratch DIR     serve the protocol; DIR is emptied between queries
    python3 runner.py --hash            print this program's hash
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import errno
import hashlib
import json
import linecache
import os
import re
import resource
import select
import signal
import socket
import stat
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

PROTOCOL_VERSION = 2
_HEADER = struct.Struct(">II")
DEFAULT_MAX_OUTPUT = 20_000
MAX_CITATIONS = 200
MAX_WORKER_FRAME = 64 * 1024 * 1024
"""The largest frame the supervisor accepts from a worker."""
WORKER_STDERR_TAIL = 4000
"""How much of a worker's raw stdout and stderr the supervisor keeps, to report its death."""
WORKER_KINDS = frozenset({"subcall", "tool", "result"})
"""What a worker may send; anything else ends it."""
_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_PDEATHSIG = 1
_IPC_RMID = 0


def _own_hash() -> str:
    with open(__file__, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class ProtocolViolation(Exception):
    """The host sent something this runner cannot accept."""


def encode(header: dict[str, Any]) -> bytes:
    """A frame's JSON body. A lone surrogate (code may print one) becomes '?': the host
    reads only valid UTF-8."""
    return json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


class Wire:
    """Length-prefixed frames over two file descriptors.

    What was read past the current frame is kept in :attr:`pending`, so the supervisor
    can hand it on when it re-executes itself between two frames."""

    def __init__(self, in_fd: int, out_fd: int, pending: bytes = b"") -> None:
        self.in_fd = in_fd
        self.out_fd = out_fd
        self._buf = bytearray(pending)
        self._lock = threading.Lock()
        self._owner = os.getpid()

    @property
    def pending(self) -> bytes:
        return bytes(self._buf)

    def read_exact(self, n: int) -> bytes:
        buf = self._buf
        if len(buf) >= n:
            data = bytes(buf[:n])
            del buf[:n]
            return data
        out = bytearray(n)  # a large payload goes straight into its own buffer
        view = memoryview(out)
        got = len(buf)
        view[:got] = buf
        buf.clear()
        while got < n:
            k = os.readv(self.in_fd, [view[got:]])
            if k == 0:
                raise EOFError("the other end closed the channel")
            got += k
        return bytes(out)

    def _fill(self, want: int) -> None:
        while len(self._buf) < want:
            chunk = os.read(self.in_fd, 1 << 16)
            if not chunk:
                raise EOFError("the other end closed the channel")
            self._buf += chunk

    def read_header(self) -> tuple[dict[str, Any], int, bytes]:
        """The next frame's header, its JSON body as sent, and the length of the payload
        that follows it (not read yet)."""
        self._fill(_HEADER.size)
        hlen, plen = _HEADER.unpack_from(self._buf)
        self._fill(_HEADER.size + hlen)
        body = bytes(self._buf[_HEADER.size : _HEADER.size + hlen])
        del self._buf[: _HEADER.size + hlen]
        header = json.loads(body)
        if not isinstance(header, dict) or not isinstance(header.get("kind"), str):
            raise ProtocolViolation("frame header is not an object with a kind")
        return header, plen, body

    def read(self) -> tuple[dict[str, Any], bytes]:
        header, plen, _ = self.read_header()
        return header, self.read_exact(plen) if plen else b""

    def write(self, header: dict[str, Any]) -> None:
        self.write_body(encode(header))

    def write_body(self, body: bytes) -> None:
        if os.getpid() != self._owner:
            # A process forked by code in the sandbox must never speak the protocol.
            os._exit(0)
        data = memoryview(_HEADER.pack(len(body), 0) + body)
        with self._lock:
            while data:
                written = os.write(self.out_fd, data)
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


# -- the worker: one query's code ------------------------------------------------------------


class Worker:
    """Runs the code of one query in a namespace of its own, in a process of its own."""

    def __init__(self, wire: Wire, docs: tuple[str, ...], names: tuple[str, ...]) -> None:
        self.wire = wire
        self.docs = docs
        self.names = names
        self.final: str | None = None
        self.citations: list[dict[str, Any]] = []
        self._cell = 0
        self._subcall_id = 0
        self._subcall_lock = threading.Lock()
        self.namespace: dict[str, Any] = {
            "__name__": "__main__",
            "__builtins__": __builtins__,
            "re": re,  # the prompts show re.findall; an import left out should not cost a step
            "context": list(docs),
            "doc_names": list(names),
            "FINAL": self._final,
            "FINAL_VAR": self._final_var,
            "llm_query": self._llm_query,
            "llm_query_batched": self._llm_query_batched,
            "cite": self._cite,
        }

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

    def _ask(self, header: dict[str, Any], reply_kind: str) -> dict[str, Any]:
        with self._subcall_lock:
            self._subcall_id += 1
            sid = self._subcall_id
            self.wire.write({**header, "id": sid})
            reply, _ = self.wire.read()
        if reply.get("kind") != reply_kind or reply.get("id") != sid:
            raise ProtocolViolation(f"expected {reply_kind} {sid}, got {reply.get('kind')}")
        return reply

    def _tool(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            msg = {"kind": "tool", "name": name, "args": list(args), "kwargs": kwargs}
            reply = self._ask(msg, "tool_result")
            if not reply.get("ok"):
                raise RuntimeError(f"{name}: {reply.get('error')}")
            return reply.get("value")

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
        results = self._ask({"kind": "subcall", "items": items}, "subcall_result").get("results")
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

    # -- one execution --------------------------------------------------------------------

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

    def serve(self) -> None:
        """Run what the supervisor sends until it closes the channel."""
        while True:
            try:
                header, _ = self.wire.read()
            except EOFError:
                return
            if header["kind"] != "exec":
                raise ProtocolViolation(f"a worker runs code only, not {header['kind']!r}")
            reply = self.execute(header)
            reply["id"] = header.get("id")
            self.wire.write(reply)


# -- the supervisor: the protocol and the documents, never a query's code -------------------


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> bool:
    return int(_libc().prctl(option, value, 0, 0, 0)) == 0


def _interpreter_flags() -> list[str]:
    """The flags this interpreter was started with (-I, -S), to start it again alike."""
    flags = []
    if sys.flags.isolated:
        flags.append("-I")
    elif sys.flags.ignore_environment:
        flags.append("-E")
    if sys.flags.no_site:
        flags.append("-S")
    return flags


def _status_of(status: int) -> tuple[int | None, int | None]:
    """(exit code, signal) of a wait status."""
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status), None
    return None, None


def _oom_kills() -> int | None:
    """The memory cgroup's count of OOM kills, where this sandbox can read it."""
    try:
        with open("/sys/fs/cgroup/memory.events") as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        return None
    return None


def _parents() -> dict[int, int]:
    """Every visible process and its parent."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            found[int(entry)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue  # it ended while we looked
    return found


def descendants(root: int) -> list[int]:
    """Every process below ``root``, whatever session or group it moved to."""
    parents = _parents()
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def wipe(top: str) -> None:
    """Empty the directory ``top``: every file, link, pipe and directory in it, however
    deep and whatever its permissions, without following a link and without recursion
    (subdirectories are moved up to ``top`` and emptied there)."""
    top_fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    moved = 0
    try:
        while True:
            names = os.listdir(top_fd)
            if not names:
                return
            for name in names:
                try:
                    info = os.stat(name, dir_fd=top_fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if not stat.S_ISDIR(info.st_mode):
                    os.unlink(name, dir_fd=top_fd)
                    continue
                os.chmod(name, 0o700, dir_fd=top_fd)  # a directory (no link: lstat said so)
                sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top_fd)
                try:
                    for inner in os.listdir(sub):
                        inner_info = os.stat(inner, dir_fd=sub, follow_symlinks=False)
                        if not stat.S_ISDIR(inner_info.st_mode):
                            os.unlink(inner, dir_fd=sub)
                            continue
                        # moving a folder needs write access to it (its ".." changes)
                        os.chmod(inner, 0o700, dir_fd=sub)
                        while True:  # up to the top, under a name of our own
                            moved += 1
                            try:
                                os.rename(
                                    inner, f".wipe-{moved}", src_dir_fd=sub, dst_dir_fd=top_fd
                                )
                                break
                            except OSError as e:
                                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR,
                                                   errno.EISDIR):  # fmt: skip
                                    raise
                finally:
                    os.close(sub)
                os.rmdir(name, dir_fd=top_fd)
    finally:
        os.close(top_fd)


def remove_ipc() -> None:
    """Remove every System V shared memory segment, message queue and semaphore set of
    this IPC namespace (the sandbox's own)."""
    libc = _libc()
    removers: dict[str, Callable[[int], object]] = {
        "shm": lambda i: libc.shmctl(i, _IPC_RMID, None),
        "msg": lambda i: libc.msgctl(i, _IPC_RMID, None),
        "sem": lambda i: libc.semctl(i, 0, _IPC_RMID),
    }
    for kind, remove in removers.items():
        try:
            with open(f"/proc/sysvipc/{kind}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue  # no System V IPC in this kernel: nothing can have been left
        for row in rows:
            cols = row.split()
            if len(cols) > 1 and cols[1].isdigit():
                remove(int(cols[1]))


class WorkerLink:
    """The supervisor's end of one worker: its channel, its output pipe, its process."""

    def __init__(self, pid: int, sock: socket.socket, output_fd: int) -> None:
        self.pid = pid
        self.sock = sock
        self.output_fd = output_fd
        self.used = False
        self.status: int | None = None
        self.oom_kills = _oom_kills()
        self._buf = bytearray()
        self._output = bytearray()
        self._output_open = True

    def send(self, header: dict[str, Any]) -> bool:
        return self.send_body(encode(header))

    def send_body(self, body: bytes) -> bool:
        try:
            self.sock.sendall(_HEADER.pack(len(body), 0) + body)
        except OSError:
            return False
        return True

    def recv(self) -> tuple[dict[str, Any], bytes] | str:
        """The worker's next frame (parsed, and as sent), or why there is none (it died,
        or broke the protocol)."""
        while True:
            if len(self._buf) >= _HEADER.size:
                hlen, plen = _HEADER.unpack_from(self._buf)
                if plen or hlen > MAX_WORKER_FRAME:
                    return "protocol"
                if len(self._buf) >= _HEADER.size + hlen:
                    raw = bytes(self._buf[_HEADER.size : _HEADER.size + hlen])
                    del self._buf[: _HEADER.size + hlen]
                    try:
                        header = json.loads(raw)
                    except (ValueError, RecursionError):
                        return "protocol"
                    if not isinstance(header, dict) or header.get("kind") not in WORKER_KINDS:
                        return "protocol"
                    return header, raw
            watched: list[Any] = [self.sock, self.output_fd] if self._output_open else [self.sock]
            ready, _, _ = select.select(watched, [], [])
            if self.output_fd in ready:
                self._drain()
            if self.sock in ready:
                try:
                    chunk = self.sock.recv(1 << 16)
                except OSError:
                    chunk = b""
                if not chunk:
                    return "gone"
                self._buf += chunk

    def _drain(self) -> None:
        try:
            chunk = os.read(self.output_fd, 1 << 16)
        except OSError:
            chunk = b""
        if not chunk:  # the worker closed its output: watch its channel alone
            self._output_open = False
            return
        self._output += chunk
        del self._output[:-WORKER_STDERR_TAIL]

    def output_tail(self) -> str:
        """What is left in the output pipe, bounded (call once the writers are dead)."""
        with contextlib.suppress(OSError):
            os.set_blocking(self.output_fd, False)
            for _ in range(16):
                chunk = os.read(self.output_fd, 1 << 16)
                if not chunk:
                    break
                self._output += chunk
                del self._output[:-WORKER_STDERR_TAIL]
        return self._output.decode("utf-8", "replace")

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(OSError):
            os.close(self.output_fd)


class Zygote:
    """The process that workers are forked from: a copy of the supervisor made when it
    held the documents and nothing else (just after a load, or at its start), which
    never reads a frame of the host's or a worker's. The supervisor relays every query's
    traffic, so its own memory is never what a worker inherits.

    It is told over a socket of its own (SOCK_SEQPACKET, one request and one reply at a
    time): ``spawn`` (with the worker's two descriptors), ``wait`` (a worker's exit
    status) and ``reap``."""

    def __init__(self, pid: int, control: socket.socket) -> None:
        self.pid = pid
        self.control = control

    def ask(self, request: dict[str, Any], fds: list[int] | None = None) -> dict[str, Any]:
        body = json.dumps(request).encode()
        try:
            if fds:
                socket.send_fds(self.control, [body], fds)
            else:
                self.control.send(body)
            reply = self.control.recv(4096)
        except OSError:
            reply = b""
        if not reply:
            os._exit(4)  # no zygote, no fresh workers: the host replaces this sandbox
        answer: dict[str, Any] = json.loads(reply)
        return answer

    def spawn(self) -> WorkerLink:
        ours, theirs = socket.socketpair()
        out_r, out_w = os.pipe()
        try:
            pid = int(self.ask({"kind": "spawn"}, [theirs.fileno(), out_w])["pid"])
        finally:
            theirs.close()
            os.close(out_w)
        return WorkerLink(pid, ours, out_r)

    def status(self, pid: int, wait_s: float) -> int | None:
        """A worker's wait status, waiting up to ``wait_s`` for it to end; None if alive."""
        status = self.ask({"kind": "wait", "pid": pid, "timeout": wait_s}).get("status")
        return status if isinstance(status, int) else None

    def reap(self) -> None:
        self.ask({"kind": "reap"})

    def stop(self) -> None:
        self.control.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


class _ZygoteLoop:
    """The zygote's life: fork a worker when asked, report and reap their ends."""

    def __init__(
        self, control: socket.socket, docs: tuple[str, ...], names: tuple[str, ...]
    ) -> None:
        self.control = control
        self.docs, self.names = docs, names
        self.children: dict[int, int | None] = {}

    def serve(self) -> None:
        while True:
            try:
                body, fds, _, _ = socket.recv_fds(self.control, 4096, 2)
            except OSError:
                return
            if not body:
                return  # the supervisor is gone
            request = json.loads(body)
            kind = request.get("kind")
            if kind == "spawn" and len(fds) == 2:
                reply: dict[str, Any] = {"pid": self.spawn(fds[0], fds[1])}
            else:
                for fd in fds:
                    os.close(fd)
                reply = self.wait(request) if kind == "wait" else self.reap()
            self.control.send(json.dumps(reply).encode())

    def spawn(self, channel: int, output: int) -> int:
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                self.control.close()
                _become_worker(channel, output, self.docs, self.names)
                code = 0
            finally:
                os._exit(code)
        os.close(channel)
        os.close(output)
        self.children[pid] = None
        return pid

    def collect(self) -> None:
        for pid, status in list(self.children.items()):
            if status is None:
                with contextlib.suppress(ChildProcessError):
                    done, ended = os.waitpid(pid, os.WNOHANG)
                    if done:
                        self.children[pid] = ended

    def wait(self, request: dict[str, Any]) -> dict[str, Any]:
        pid, deadline = int(request["pid"]), time.monotonic() + float(request["timeout"])
        self.collect()
        while self.children.get(pid, 0) is None and time.monotonic() < deadline:
            time.sleep(0.002)
            self.collect()
        return {"status": self.children.get(pid)}

    def reap(self) -> dict[str, Any]:
        self.collect()
        for pid in [p for p, status in self.children.items() if status is not None]:
            del self.children[pid]
        return {}


def _become_worker(
    channel: int, output: int, docs: tuple[str, ...], names: tuple[str, ...]
) -> None:
    os.setsid()
    low = 3  # close every inherited descriptor but these two
    for fd in sorted({channel, output}):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, max(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 1 << 10))
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)
    _prctl(_PR_SET_DUMPABLE, 1)  # its own /proc/self; the supervisor and zygote stay closed
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")  # out of memory, the kernel takes the worker, not the supervisor
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_MSGQUEUE, (0, 0))  # POSIX queues outlive it
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    Worker(Wire(channel, channel), docs, names).serve()


class Supervisor:
    """The protocol, the documents, and the workers' lives; never a query's code."""

    def __init__(self, wire: Wire, scratch: str) -> None:
        self.wire = wire
        self.scratch = scratch
        self.alone = os.getpid() == 1
        """PID 1 of its own namespace (Docker, bubblewrap): every other process in it is
        a worker's or the zygote, and the IPC namespace is the sandbox's own."""
        self.runner_hash = _own_hash()
        self.docs: tuple[str, ...] = ()
        self.names: tuple[str, ...] = ()
        self.version: str | None = None
        self.worker: WorkerLink | None = None
        self.zygote: Zygote | None = None
        self.dirty = False
        """Code has run since the last clean-up."""
        self.relayed = False
        """This process has carried a query's traffic: its memory is no zygote's to be."""
        self._relay_id = 0
        if not _prctl(_PR_SET_DUMPABLE, 0):
            raise OSError("prctl(PR_SET_DUMPABLE) failed: workers could read the supervisor")
        if not self.alone and not _prctl(_PR_SET_CHILD_SUBREAPER, 1):
            raise OSError("prctl(PR_SET_CHILD_SUBREAPER) failed: orphans would escape")

    # -- workers ------------------------------------------------------------------------

    def _start_zygote(self) -> Zygote:
        if self.relayed:
            os._exit(5)  # no clean state to copy: the host replaces this sandbox
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            try:
                ours.close()
                keep = theirs.fileno()
                os.closerange(3, keep)
                os.closerange(keep + 1, max(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 1 << 10))
                _ZygoteLoop(theirs, self.docs, self.names).serve()
            finally:
                os._exit(0)
        theirs.close()
        return Zygote(pid, ours)

    def _spawn(self) -> WorkerLink:
        if self.zygote is None:
            self.zygote = self._start_zygote()
        return self.zygote.spawn()

    def _reap(self) -> None:
        """Collect this process's ended children (orphans come here), but the zygote."""
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.zygote is not None and pid == self.zygote.pid:
                os._exit(4)  # the zygote died: the host replaces this sandbox

    def _others(self) -> list[int]:
        """Every process a worker may have started: all of the sandbox's (or, outside one,
        this process's descendants), but this one and the zygote."""
        spared = {os.getpid(), self.zygote.pid if self.zygote else -1}
        found = list(_parents()) if self.alone else descendants(os.getpid())
        return [p for p in found if p not in spared]

    def _kill_all(self) -> None:
        """Kill every process a worker started, by any route, and wait until all are gone.
        Each pass kills all it finds; a process killed cannot fork, so the passes end."""
        deadline = time.monotonic() + 10
        while True:
            others = self._others()
            for pid in others:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self._reap()
            if self.zygote is not None:
                self.zygote.reap()
            if not others:
                return
            if time.monotonic() > deadline:
                os._exit(3)  # something would not die: the host replaces this sandbox
            time.sleep(0.0005)

    def clean(self) -> None:
        """Nothing of any query is left: processes, files, IPC objects."""
        link, self.worker = self.worker, None
        if link is not None:
            link.close()
        self._kill_all()
        try:
            with contextlib.suppress(OSError):
                os.chmod(self.scratch, 0o1777 if self.alone else 0o700)
            wipe(self.scratch)
            if self.alone:
                remove_ipc()
        except OSError:
            os._exit(3)  # what a query left cannot be removed: the host replaces this sandbox
        self.dirty = False

    def _ready_worker(self) -> WorkerLink:
        if self.worker is None:
            self.worker = self._spawn()
        return self.worker

    def _worker_is_fresh(self) -> bool:
        worker = self.worker
        if worker is None or worker.used or self.zygote is None:
            return False
        return self.zygote.status(worker.pid, 0) is None

    # -- host messages ------------------------------------------------------------------

    def reset(self) -> dict[str, Any]:
        if not (self._worker_is_fresh() and not self.dirty):
            self.clean()
            self.worker = self._spawn()
        return {"kind": "reset_ok", "version": self.version}

    def load(self, header: dict[str, Any], plen: int) -> dict[str, Any]:
        names = header.get("names")
        lengths = header.get("lengths")
        if (
            not isinstance(names, list)
            or not isinstance(lengths, list)
            or len(names) != len(lengths)
            or not all(isinstance(n, int) and n >= 0 for n in lengths)
        ):
            raise ProtocolViolation("load needs names and lengths of equal length")
        if sum(lengths) != plen:
            raise ProtocolViolation("load lengths do not add up to the payload size")
        if self.version is not None or self.dirty or self.relayed:
            self._reexec(header, plen)
        self.clean()  # a worker started before this first load, and its zygote, go
        if self.zygote is not None:
            self.zygote.stop()
            self.zygote = None
        payload = self.wire.read_exact(plen) if plen else b""
        view = memoryview(payload)
        docs = []
        pos = 0
        for n in lengths:
            docs.append(str(view[pos : pos + n], "utf-8", "replace"))
            pos += n
        del view, payload
        self.docs = tuple(docs)
        self.names = tuple(str(n) for n in names)
        self.version = str(header.get("version") or "")
        self.worker = self._spawn()
        return {
            "kind": "loaded",
            "version": self.version,
            "documents": len(self.docs),
            "chars": sum(len(d) for d in self.docs),
        }

    def _reexec(self, header: dict[str, Any], plen: int) -> None:
        """Start this program again in this process, with nothing of the earlier corpus
        in memory; the new one reads the payload of this load and answers it."""
        self.clean()
        if self.zygote is not None:
            self.zygote.stop()
        pending = os.memfd_create("shesha-load", 0)
        with open(pending, "wb", closefd=False) as f:  # the frame, and what followed it
            f.write(json.dumps({"header": header, "payload": plen}).encode() + b"\n")
            f.write(self.wire.pending)
        os.lseek(pending, 0, os.SEEK_SET)
        for fd in (self.wire.in_fd, self.wire.out_fd, pending):
            os.set_inheritable(fd, True)
        argv = [
            sys.executable, *_interpreter_flags(), os.path.abspath(__file__),
            "--scratch", self.scratch,
            "--fds", f"{self.wire.in_fd},{self.wire.out_fd}", "--load-from", str(pending),
        ]  # fmt: skip
        os.execv(sys.executable, argv)  # noqa: S606  this very program, by its own path

    def execute(self, header: dict[str, Any], body: bytes) -> dict[str, Any] | bytes:
        """Run code in the worker, passing its sub-calls and tool calls to the host. The
        result goes to the host as the worker sent it, once it is known to be one."""
        worker = self._ready_worker()
        worker.used = self.dirty = self.relayed = True
        if not worker.send_body(body):
            return self._lost(worker, "gone")
        while True:
            got = worker.recv()
            if isinstance(got, str):
                return self._lost(worker, got)
            frame, raw = got
            if frame["kind"] == "result":
                if frame.get("id") != header.get("id"):
                    return self._lost(worker, "protocol")
                return raw
            asked_id = frame.get("id")
            self._relay_id += 1
            self.wire.write({**frame, "id": self._relay_id})
            answer, plen, _ = self.wire.read_header()
            want = "subcall_result" if frame["kind"] == "subcall" else "tool_result"
            if plen or answer.get("kind") != want or answer.get("id") != self._relay_id:
                raise ProtocolViolation(f"expected {want} {self._relay_id}, got {answer['kind']!r}")
            if not worker.send({**answer, "id": asked_id}):
                return self._lost(worker, "gone")

    def _lost(self, worker: WorkerLink, why: str) -> dict[str, Any]:
        """The worker died, or broke the protocol: report how, and clean up after it."""
        status = self.zygote.status(worker.pid, 0.5) if self.zygote is not None else None
        code, sig = _status_of(status) if status is not None else (None, None)
        oom = _oom_kills()
        by_memory = sig == signal.SIGKILL and (
            oom is None or worker.oom_kills is None or oom > worker.oom_kills
        )
        self._kill_all()  # every writer of the output pipe is gone before it is read
        tail = worker.output_tail()
        self.clean()
        reason = "protocol" if why == "protocol" else ("memory" if by_memory else "crashed")
        return {"kind": "lost", "reason": reason, "code": code, "signal": sig, "stderr": tail}

    def handle(
        self, header: dict[str, Any], plen: int, body: bytes
    ) -> dict[str, Any] | bytes | None:
        kind = header["kind"]
        if kind == "load":
            return self.load(header, plen)
        if plen:
            raise ProtocolViolation(f"{kind!r} carries no payload")
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
            return self.execute(header, body)
        if kind == "reset":
            return self.reset()
        if kind == "shutdown":
            return None
        raise ProtocolViolation(f"unknown message kind {kind!r}")

    def answer(self, header: dict[str, Any], reply: dict[str, Any] | bytes) -> None:
        if isinstance(reply, bytes):
            self.wire.write_body(reply)
            return
        reply["id"] = header.get("id")
        self.wire.write(reply)

    def serve(self) -> None:
        try:
            while True:
                self._reap()
                try:
                    header, plen, body = self.wire.read_header()
                except EOFError:
                    return
                reply = self.handle(header, plen, body)
                if reply is None:
                    return
                self.answer(header, reply)
                del reply, header, body  # nothing of a query stays on this frame
        finally:
            self.clean()
            if self.zygote is not None:
                self.zygote.stop()


def _take_stdio() -> tuple[int, int]:
    """Keep the protocol on private descriptors; code in the sandbox gets harmless ones.

    stdin becomes /dev/null, and anything written to fd 1 directly goes to stderr."""
    in_fd, out_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    for fd in (in_fd, out_fd):
        os.set_inheritable(fd, False)
    return in_fd, out_fd


def _arguments(argv: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    it = iter(argv)
    for arg in it:
        if arg not in ("--scratch", "--fds", "--load-from"):
            raise SystemExit(f"runner: unknown argument {arg!r}")
        value = next(it, None)
        if value is None:
            raise SystemExit(f"runner: {arg} needs a value")
        found[arg] = value
    if "--scratch" not in found or not os.path.isdir(found["--scratch"]):
        raise SystemExit("runner: --scratch DIR (an existing directory, emptied between queries)")
    return found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--hash"]:
        print(_own_hash())
        return 0
    args = _arguments(argv)
    # Alone in its sandbox, the runner is PID 1: a signal from inside reaches it only if it
    # handles one. It handles SIGTERM alone, so that a stop ends it at once: code can end
    # its own sandbox so, as it can by killing the zygote, and the host replaces it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    handler: Callable[[int, Any], None] = lambda _sig, _frame: os._exit(143)  # noqa: E731
    signal.signal(signal.SIGTERM, handler)
    pending: dict[str, Any] | None = None
    unread = b""
    if "--fds" in args:  # re-executed: the descriptors are already private
        in_fd, out_fd = (int(x) for x in args["--fds"].split(","))
        for fd in (in_fd, out_fd):
            os.set_inheritable(fd, False)
        with open(int(args["--load-from"]), "rb") as f:
            line, _, unread = f.read().partition(b"\n")
        pending = json.loads(line)
    else:
        in_fd, out_fd = _take_stdio()
    os.chdir(args["--scratch"])
    wire = Wire(in_fd, out_fd, unread)
    supervisor = Supervisor(wire, os.path.abspath(args["--scratch"]))
    try:
        if pending is not None:
            header = pending["header"]
            supervisor.answer(header, supervisor.load(header, int(pending["payload"])))
        supervisor.serve()
    except ProtocolViolation as e:
        wire.write({"kind": "error", "id": None, "error": f"protocol: {e}"})
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
