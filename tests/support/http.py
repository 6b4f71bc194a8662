"""Raw-socket HTTP helpers for answers no well-behaved client would let us see."""

from __future__ import annotations

import socket
import time

__all__ = ["Response", "parse_responses", "raw_request"]

Response = tuple[int, dict[str, str], bytes]


def raw_request(port: int, data: bytes, timeout: float = 5, host: str = "127.0.0.1") -> bytes:
    """Send `data` as is, then read until the server closes or `timeout` seconds pass.

    Returns every byte received. The timeout is a total deadline for the whole exchange,
    so a keep-alive connection that stays open costs at most `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    received = bytearray()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    return bytes(received)


def _read_chunked(data: bytes, pos: int) -> tuple[bytes, int]:
    body = bytearray()
    while True:
        eol = data.index(b"\r\n", pos)
        size = int(data[pos:eol].split(b";", 1)[0].strip(), 16)
        pos = eol + 2
        if size == 0:
            # optional trailers, then an empty line
            while True:
                eol = data.index(b"\r\n", pos)
                line, pos = data[pos:eol], eol + 2
                if not line:
                    return bytes(body), pos
        body += data[pos : pos + size]
        if len(data) < pos + size + 2:
            raise ValueError("truncated chunk")
        pos += size + 2


def parse_responses(data: bytes, *, head: bool = False) -> list[Response]:
    """Split raw bytes into `(status, headers, body)` answers, in order.

    Headers are a dict with lower-case names; repeated headers are joined with ", ".
    Interim 1xx answers (100 Continue, 101) appear as entries of their own. A response
    with neither Content-Length nor chunked encoding runs to the end of `data`. Pass
    `head=True` when every answer is to a HEAD request (no bodies). Raises ValueError on
    bytes that are not a sequence of HTTP/1.x responses (truncated bodies are returned
    as far as they go, so a test can still assert what arrived).
    """
    responses: list[Response] = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            raise ValueError(f"incomplete response head: {data[pos : pos + 200]!r}")
        lines = data[pos:end].decode("latin-1").split("\r\n")
        status_line = lines[0].split(" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/"):
            raise ValueError(f"not an HTTP response: {lines[0]!r}")
        status = int(status_line[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        pos = end + 4
        if head or status < 200 or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            try:
                body, pos = _read_chunked(data, pos)
            except (ValueError, IndexError):
                body, pos = data[pos:], len(data)
        elif "content-length" in headers:
            length = int(headers["content-length"].split(",")[0])
            body = data[pos : pos + length]
            pos += length
        else:
            body, pos = data[pos:], len(data)
        responses.append((status, headers, body))
    return responses
