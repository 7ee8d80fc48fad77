"""The host's frame channel: framing, Docker demultiplexing, and hostile input."""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from shesha.errors import SandboxProtocolError
from shesha.sandbox.protocol import (
    FRAME_HEADER,
    STDERR_TAIL,
    ChannelClosed,
    ChannelTimeout,
    FrameChannel,
    encode_frame,
)


def mux(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_frame_round_trip_raw(pair: tuple[socket.socket, socket.socket]) -> None:
    host, other = pair
    chan = FrameChannel(host, docker_mux=False)
    other.sendall(encode_frame({"kind": "pong", "id": 1}) + b"")
    frame = chan.recv(time.monotonic() + 5)
    assert frame.header == {"kind": "pong", "id": 1}
    assert frame.payload == b""


def test_payload_is_sent_after_json_header(pair: tuple[socket.socket, socket.socket]) -> None:
    host, other = pair
    chan = FrameChannel(host, docker_mux=False)
    sent = chan.send({"kind": "load", "id": 2}, b"\x00payload\xff")
    data = other.recv(1000)
    hlen, plen = FRAME_HEADER.unpack_from(data)
    assert sent == len(data)
    assert json.loads(data[8 : 8 + hlen]) == {"kind": "load", "id": 2}
    assert data[8 + hlen :] == b"\x00payload\xff"
    assert plen == 9


def test_demux_reassembles_frames_split_across_docker_chunks_byte_by_byte(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    host, other = pair
    chan = FrameChannel(host, docker_mux=True)
    frames = encode_frame({"kind": "a", "id": 1}) + encode_frame({"kind": "b", "id": 2, "x": "é"})
    wire = b"".join(mux(1, frames[i : i + 3]) for i in range(0, len(frames), 3))
    wire += mux(2, b"some stderr")
    for i in range(len(wire)):  # one byte at a time: every boundary is exercised
        other.sendall(wire[i : i + 1])
    assert chan.recv(time.monotonic() + 5).header["kind"] == "a"
    second = chan.recv(time.monotonic() + 5)
    assert second.header == {"kind": "b", "id": 2, "x": "é"}


def test_stderr_is_kept_separately_and_bounded(pair: tuple[socket.socket, socket.socket]) -> None:
    host, other = pair
    chan = FrameChannel(host, docker_mux=True)
    other.sendall(mux(2, b"x" * (STDERR_TAIL * 3) + b"END") + mux(1, encode_frame({"kind": "k"})))
    assert chan.recv(time.monotonic() + 5).header["kind"] == "k"
    tail = chan.stderr_tail()
    assert len(tail) == STDERR_TAIL
    assert tail.endswith("END")


def test_oversized_frame_is_refused_before_it_is_read(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    host, other = pair
    chan = FrameChannel(host, docker_mux=False, max_frame=1024)
    other.sendall(FRAME_HEADER.pack(10, 2**31))  # claims 2 GiB; nothing else follows
    with pytest.raises(SandboxProtocolError, match="limit is 1,024"):
        chan.recv(time.monotonic() + 5)


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'{"id": 1}', b'{"kind": 5}', b"\xff\xfe"],
    ids=["garbage", "list", "no-kind", "kind-not-str", "bad-utf8"],
)
def test_malformed_headers_are_protocol_errors(
    pair: tuple[socket.socket, socket.socket], body: bytes
) -> None:
    host, other = pair
    chan = FrameChannel(host, docker_mux=False)
    other.sendall(FRAME_HEADER.pack(len(body), 0) + body)
    with pytest.raises(SandboxProtocolError):
        chan.recv(time.monotonic() + 5)


def test_unknown_docker_stream_type_is_a_protocol_error(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    host, other = pair
    chan = FrameChannel(host, docker_mux=True)
    other.sendall(mux(7, b"??"))
    with pytest.raises(SandboxProtocolError, match="stream type 7"):
        chan.recv(time.monotonic() + 5)


def test_deadline_raises_timeout(pair: tuple[socket.socket, socket.socket]) -> None:
    host, _ = pair
    chan = FrameChannel(host, docker_mux=False)
    started = time.monotonic()
    with pytest.raises(ChannelTimeout):
        chan.recv(time.monotonic() + 0.2)
    assert time.monotonic() - started < 2


def test_eof_raises_closed(pair: tuple[socket.socket, socket.socket]) -> None:
    host, other = pair
    chan = FrameChannel(host, docker_mux=False)
    other.sendall(encode_frame({"kind": "half"})[:5])
    other.close()
    with pytest.raises(ChannelClosed):
        chan.recv(time.monotonic() + 5)
