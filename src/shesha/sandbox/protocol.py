"""The host's side of the wire protocol to the sandbox runner.

A frame is ``u32 header_len | u32 payload_len | header JSON | payload`` (big-endian),
the same in both directions (see ``runner.py``). Over a Docker attach socket without a
TTY, what the container writes arrives wrapped in Docker's stream multiplexing
(``u8 stream | 3 zero bytes | u32 size | data``), which :class:`FrameChannel` unwraps
as a stream, chunk by chunk, so no Docker frame is ever buffered whole.

Everything that comes from the container is hostile: sizes are bounded before any
memory is spent on them, headers are parsed as JSON and checked, and nothing is
evaluated. Any violation raises :class:`SandboxProtocolError`.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import struct
import time
from typing import Any, NamedTuple

from shesha.errors import SandboxProtocolError

FRAME_HEADER = struct.Struct(">II")
_MUX_HEADER = struct.Struct(">BxxxL")
_STDOUT, _STDERR = 1, 2

DEFAULT_MAX_FRAME = 64 * 1024 * 1024
"""The largest frame accepted from a container (header and payload together)."""

STDERR_TAIL = 16 * 1024
"""How much of the container's raw stderr the host keeps, for diagnostics."""

_RECV_CHUNK = 256 * 1024


class Frame(NamedTuple):
    header: dict[str, Any]
    payload: bytes


class ChannelClosed(Exception):
    """The other end closed the channel (the container exited)."""


class ChannelTimeout(Exception):
    """No complete frame arrived before the deadline."""


def encode_frame(header: dict[str, Any], payload: bytes = b"") -> bytes:
    body = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return FRAME_HEADER.pack(len(body), len(payload)) + body


class FrameChannel:
    """Frames to and from one container over one socket.

    ``docker_mux`` says whether inbound bytes come wrapped in Docker's stream
    multiplexing (an attach socket without a TTY) or raw (a pipe, in tests).
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        docker_mux: bool = True,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self._sock = sock
        self._mux = docker_mux
        self._max_frame = max_frame
        self._buf = bytearray(_RECV_CHUNK)
        self._view = memoryview(self._buf)
        self._out = bytearray()  # demultiplexed stdout: frame bytes
        self._mux_hdr = bytearray()  # a partial Docker stream header
        self._mux_left = 0  # bytes left in the current Docker stream frame
        self._mux_stream = 0
        self._stderr = bytearray()
        self._timeout: float | None = -1.0  # what the socket is set to; -1 = unknown
        self.bytes_sent = 0

    # -- sending ------------------------------------------------------------------------

    def send(
        self, header: dict[str, Any], payload: bytes = b"", timeout: float | None = None
    ) -> int:
        """Send one frame; return the number of bytes written."""
        head = encode_frame(header, payload)
        self._set_timeout(timeout)
        try:
            if payload and len(payload) > 65536:
                self._sock.sendall(head)
                self._sock.sendall(memoryview(payload))
            else:
                self._sock.sendall(head + payload)
        except TimeoutError as e:
            raise ChannelTimeout("sending to the sandbox timed out") from e
        except OSError as e:
            raise ChannelClosed(f"the sandbox closed the channel ({e})") from e
        sent = len(head) + len(payload)
        self.bytes_sent += sent
        return sent

    # -- receiving ----------------------------------------------------------------------

    def recv(self, deadline: float | None = None) -> Frame:
        """Return the next frame, waiting at most until ``deadline`` (monotonic)."""
        while True:
            frame = self._take_frame()
            if frame is not None:
                return frame
            self._fill(deadline)

    def stderr_tail(self) -> str:
        return self._stderr.decode("utf-8", "replace")

    def close(self) -> None:
        """Close the socket; a reader blocked on it in another thread wakes up."""
        with contextlib.suppress(OSError):  # already shut down, or never connected
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def _set_timeout(self, timeout: float | None) -> None:
        if timeout != self._timeout:
            self._sock.settimeout(timeout)
            self._timeout = timeout

    def _fill(self, deadline: float | None) -> None:
        if deadline is None:
            self._set_timeout(None)
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChannelTimeout("no reply from the sandbox before the deadline")
            # select() first keeps the socket blocking, with no per-call timeout churn.
            self._set_timeout(None)
            try:
                ready, _, _ = select.select([self._sock.fileno()], [], [], remaining)
            except (OSError, ValueError) as e:  # closed by another thread (a kill)
                raise ChannelClosed(f"the sandbox channel was closed ({e})") from e
            if not ready:
                raise ChannelTimeout("no reply from the sandbox before the deadline")
        try:
            n = self._sock.recv_into(self._buf, _RECV_CHUNK)
        except OSError as e:
            raise ChannelClosed(f"the sandbox channel failed ({e})") from e
        if n == 0:
            raise ChannelClosed("the sandbox closed the channel")
        if self._mux:
            self._demux(self._view[:n])
        else:
            self._out += self._view[:n]
        self._check_pending()

    def _demux(self, data: memoryview) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self._mux_left == 0:
                need = _MUX_HEADER.size - len(self._mux_hdr)
                self._mux_hdr += data[pos : pos + need]
                pos += min(need, end - pos)
                if len(self._mux_hdr) < _MUX_HEADER.size:
                    return
                self._mux_stream, self._mux_left = _MUX_HEADER.unpack(self._mux_hdr)
                self._mux_hdr.clear()
                if self._mux_stream not in (_STDOUT, _STDERR):
                    raise SandboxProtocolError(
                        f"unexpected Docker stream type {self._mux_stream} from the sandbox"
                    )
                continue
            take = min(self._mux_left, end - pos)
            chunk = data[pos : pos + take]
            if self._mux_stream == _STDOUT:
                self._out += chunk
            else:
                self._stderr += chunk
                if len(self._stderr) > STDERR_TAIL:
                    del self._stderr[: len(self._stderr) - STDERR_TAIL]
            pos += take
            self._mux_left -= take

    def _check_pending(self) -> None:
        """Refuse an oversized frame as soon as its length prefix is known."""
        if len(self._out) >= FRAME_HEADER.size:
            hlen, plen = FRAME_HEADER.unpack_from(self._out)
            if hlen + plen > self._max_frame:
                raise SandboxProtocolError(
                    f"the sandbox sent a frame of {hlen + plen:,} bytes; "
                    f"the limit is {self._max_frame:,}"
                )

    def _take_frame(self) -> Frame | None:
        out = self._out
        if len(out) < FRAME_HEADER.size:
            return None
        hlen, plen = FRAME_HEADER.unpack_from(out)
        total = FRAME_HEADER.size + hlen + plen
        if len(out) < total:
            return None
        try:
            header = json.loads(out[FRAME_HEADER.size : FRAME_HEADER.size + hlen])
        except (UnicodeDecodeError, ValueError) as e:
            raise SandboxProtocolError(f"the sandbox sent a frame that is not JSON ({e})") from e
        if not isinstance(header, dict) or not isinstance(header.get("kind"), str):
            raise SandboxProtocolError("the sandbox sent a frame without a message kind")
        payload = bytes(out[FRAME_HEADER.size + hlen : total]) if plen else b""
        del out[:total]
        return Frame(header, payload)


def socket_from_attach(attached: Any) -> socket.socket:
    """The raw socket behind the object that ``docker``'s ``attach_socket`` returns."""
    sock = getattr(attached, "_sock", attached)
    if not isinstance(sock, socket.socket):
        raise SandboxProtocolError(f"cannot use the Docker attach socket ({type(sock).__name__})")
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
