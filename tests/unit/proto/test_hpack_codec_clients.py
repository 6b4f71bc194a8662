"""Our HPACK codec against real HTTP/2 clients (both nghttp2 inside): a bare frame server in
a thread decodes their Huffman-coded header blocks with HpackDecoder and answers each with a
block from HpackEncoder, which the client must read back. nghttp sends two requests on one
h2c connection, the second through the dynamic table the first filled; curl one (curl
7.88 refuses to reuse such a connection for a second URL: "Error in the HTTP2 framing
layer" before sending it, whatever the server said)."""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.curl import curl
from tests.support.tools import require_tool

from balancer.proto.hpack_codec import HpackDecoder, HpackEncoder

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADERS, SETTINGS = 0x1, 0x4
END_STREAM, END_HEADERS, ACK, PADDED, PRIORITY = 0x1, 0x4, 0x1, 0x8, 0x20


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack("!I", len(payload))[1:] + bytes((kind, flags)) + struct.pack("!I", stream) + payload


def read_exactly(conn: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def serve(listener: socket.socket, requests: list[list[tuple[bytes, bytes]]]) -> None:
    """One connection: every HEADERS block decoded into `requests`, answered by a 200."""
    conn, _ = listener.accept()
    conn.settimeout(10)
    decoder = HpackDecoder()
    encoder = HpackEncoder()
    with conn:
        assert read_exactly(conn, len(PREFACE)) == PREFACE
        conn.sendall(frame(SETTINGS, 0, 0, b""))
        for _ in range(100):  # curl sends a handful of frames per request
            try:
                head = read_exactly(conn, 9)
            except (EOFError, ConnectionError):
                return
            length = int.from_bytes(head[:3], "big")
            kind, flags, stream = head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
            payload = read_exactly(conn, length)
            if kind == SETTINGS and not flags & ACK:
                conn.sendall(frame(SETTINGS, ACK, 0, b""))
            elif kind == HEADERS:
                assert flags & END_HEADERS, "curl's request heads fit one frame"
                if flags & PADDED:
                    payload = payload[1 : len(payload) - payload[0]]
                if flags & PRIORITY:
                    payload = payload[5:]
                requests.append(decoder.decode(payload))
                response = [
                    (b":status", b"200"),
                    (b"content-type", b"text/plain"),
                    (b"server", b"hpack-test"),
                    (b"content-length", b"0"),
                    (b"x-request", b"%d" % len(requests)),
                ]
                conn.sendall(frame(HEADERS, END_STREAM | END_HEADERS, stream, encoder.encode(response)))


@contextmanager
def frame_server() -> Iterator[tuple[str, list[list[tuple[bytes, bytes]]]]]:
    """(base URL, the header lists it decoded) of a one-connection server in a thread."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        requests: list[list[tuple[bytes, bytes]]] = []
        server = threading.Thread(target=serve, args=(listener, requests), daemon=True)
        server.start()
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", requests
        server.join(timeout=10)
        assert not server.is_alive()


def check_request(fields: dict[bytes, bytes], url: str, path: bytes, agent: bytes) -> None:
    assert fields[b":method"] == b"GET"
    assert fields[b":scheme"] == b"http"
    assert fields[b":path"] == path
    assert fields[b":authority"] == url.removeprefix("http://").encode()
    assert fields[b"user-agent"].startswith(agent)
    assert fields[b"x-custom"] == "caf\u00e9-1".encode()
    assert fields[b"cookie"] == b"session=0123456789abcdef"


def test_nghttp_requests_decode_and_our_responses_read_back() -> None:
    nghttp = require_tool("nghttp")
    with frame_server() as (url, requests):
        command = [nghttp, "-v", "-H", "x-custom: caf\u00e9-1", "-H", "cookie: session=0123456789abcdef"]
        done = subprocess.run(
            [*command, f"{url}/first?q=1", f"{url}/second/path"], capture_output=True, timeout=20, check=False
        )
    assert done.returncode == 0, done.stderr
    received = [line.split(b") ", 1)[1] for line in done.stdout.splitlines() if b"] recv (stream_id=" in line]
    assert received.count(b":status: 200") == 2
    assert received.count(b"server: hpack-test") == 2
    assert b"x-request: 1" in received and b"x-request: 2" in received
    assert sorted(dict(request)[b":path"] for request in requests) == [b"/first?q=1", b"/second/path"]
    for request in requests:
        check_request(dict(request), url, dict(request)[b":path"], b"nghttp2/")


def test_curl_request_decodes_and_our_response_reads_back() -> None:
    with frame_server() as (url, requests):
        result = curl(
            "--http2-prior-knowledge",
            "-H",
            "x-custom: caf\u00e9-1",
            "-H",
            "cookie: session=0123456789abcdef",
            f"{url}/first?q=1",
            timeout=10,
        )
    assert result.returncode == 0, result.stderr
    assert result.status == 200
    assert result.headers["server"] == "hpack-test"
    assert result.headers["x-request"] == "1"
    assert len(requests) == 1
    check_request(dict(requests[0]), url, b"/first?q=1", b"curl/")
