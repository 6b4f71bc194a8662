"""A deliberately small HTTP/1.1 client on asyncio streams, for talking to the proxy byte by byte.

Integration scenarios run on the balancer's own event loop, so the client must never block:
everything here is a coroutine with a deadline. It writes exactly the bytes a test gives it and
parses responses strictly enough to notice a proxy that frames them wrongly (a body left on the
connection shows up as garbage in front of the next status line).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_TIMEOUT = 5.0


class ProtocolError(AssertionError):
    """The peer sent something that is not a well-formed HTTP/1.1 response."""


@dataclass
class Response:
    status: int
    reason: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    interim: list[Response] = field(default_factory=list)  # 1xx responses seen before this one
    complete: bool = True  # False when the connection ended before the framed body did
    trailers: list[tuple[str, str]] = field(default_factory=list)  # of a chunked body, as received

    def header(self, name: str) -> str | None:
        """The values of header `name` joined by ", " (None when absent)."""
        values = self.header_all(name)
        return ", ".join(values) if values else None

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key.lower() == name]

    def connection_tokens(self) -> set[str]:
        return {token.strip().lower() for value in self.header_all("connection") for token in value.split(",")}

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def request_bytes(
    method: str = "GET",
    target: str = "/",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    *,
    version: str = "HTTP/1.1",
    host: str | None = "test.local",
) -> bytes:
    """Serialise one request; adds Host (unless host=None) and Content-Length for a body."""
    lines = [f"{method} {target} {version}"]
    names = {name.lower() for name, _ in headers or ()}
    if host is not None and "host" not in names:
        lines.append(f"Host: {host}")
    lines.extend(f"{name}: {value}" for name, value in headers or ())
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(body: bytes, chunk_size: int = 65536) -> bytes:
    """`body` in chunked transfer coding, with the terminating zero chunk."""
    parts = []
    for start in range(0, len(body), chunk_size):
        piece = body[start : start + chunk_size]
        parts.append(b"%x\r\n%s\r\n" % (len(piece), piece))
    parts.append(b"0\r\n\r\n")
    return b"".join(parts)


class Client:
    """One TCP connection to the proxy (or any HTTP server)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls, port: int, host: str = "127.0.0.1", timeout: float = DEFAULT_TIMEOUT, tls: ssl.SSLContext | None = None
    ) -> Client:
        """With `tls`, over TLS (the handshake within `timeout` too)."""
        opening = asyncio.open_connection(host, port, limit=1 << 20, ssl=tls)
        reader, writer = await asyncio.wait_for(opening, timeout=timeout)
        return cls(reader, writer)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.writer.close()

    def reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0) instead of a FIN."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), timeout=DEFAULT_TIMEOUT)

    async def request(
        self,
        method: str = "GET",
        target: str = "/",
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        *,
        version: str = "HTTP/1.1",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Response:
        await self.send(request_bytes(method, target, headers, body, version=version))
        return await self.read_response(method, timeout=timeout)

    async def get(self, target: str = "/", headers: list[tuple[str, str]] | None = None) -> Response:
        return await self.request("GET", target, headers)

    async def read_response(
        self, method: str = "GET", *, timeout: float = DEFAULT_TIMEOUT, interim: bool = False
    ) -> Response:
        """Read one response. 1xx responses (other than 101) are collected into `.interim`,
        unless `interim=True`, which returns the first 1xx itself."""
        return await asyncio.wait_for(self._read_response(method, interim), timeout=timeout)

    async def _read_response(self, method: str, return_interim: bool) -> Response:
        seen: list[Response] = []
        while True:
            response = await self._read_head()
            if 100 <= response.status < 200 and response.status != 101:
                if return_interim:
                    return response
                seen.append(response)
                continue
            response.interim = seen
            await self._read_body(response, method)
            return response

    async def _read_head(self) -> Response:
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise ConnectionError("connection closed before a response") from None
            raise ProtocolError(f"connection closed inside a response head: {exc.partial[:200]!r}") from None
        lines = head[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"bad status line {lines[0][:200]!r}")
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise ProtocolError(f"bad header line {line[:200]!r}")
            headers.append((name, value.strip()))
        return Response(int(parts[1]), parts[2] if len(parts) > 2 else "", parts[0], headers)

    async def _read_body(self, response: Response, method: str) -> None:
        if method == "HEAD" or response.status in (101, 204, 304):
            return
        transfer_encoding = (response.header("transfer-encoding") or "").lower()
        length = response.header("content-length")
        try:
            if "chunked" in transfer_encoding:
                response.body = await self._read_chunked(response.trailers)
            elif length is not None:
                response.body = await self.reader.readexactly(int(length))
            else:
                response.body = await self.reader.read(-1)
        except asyncio.IncompleteReadError as exc:
            response.body = exc.partial
            response.complete = False
        except ConnectionResetError:
            response.complete = False

    async def _read_chunked(self, trailers: list[tuple[str, str]]) -> bytes:
        body = bytearray()
        while True:
            size_line = await self.reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
                    name, _, value = line.decode("latin-1").partition(":")
                    trailers.append((name, value.strip()))
                return bytes(body)
            body += await self.reader.readexactly(size)
            if await self.reader.readexactly(2) != b"\r\n":
                raise ProtocolError("chunk not followed by CRLF")

    async def read_until_closed(self, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        """Everything the peer sends until it closes; fails if it is still open after `timeout`."""
        data = bytearray()

        async def drain() -> None:
            try:
                while chunk := await self.reader.read(65536):
                    data.extend(chunk)
            except ConnectionResetError:
                pass

        try:
            await asyncio.wait_for(drain(), timeout=timeout)
        except TimeoutError:
            raise AssertionError(f"connection still open after {timeout}s (received {bytes(data[:200])!r})") from None
        return bytes(data)

    async def is_open_after(self, seconds: float) -> bool:
        """True when the peer neither sends anything nor closes for `seconds`."""
        try:
            chunk = await asyncio.wait_for(self.reader.read(1), timeout=seconds)
        except TimeoutError:
            return True
        except ConnectionResetError:
            return False
        if chunk:
            raise ProtocolError(f"unexpected data on an idle connection: {chunk!r}")
        return False


async def get(port: int, target: str = "/", headers: list[tuple[str, str]] | None = None) -> Response:
    """One GET on a fresh connection."""
    async with await Client.connect(port) as client:
        return await client.get(target, headers)


async def wait_until(
    predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.01, message: str = ""
) -> None:
    """Poll `predicate()` until it is true; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(message or f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def until_stalled(progress: Callable[[], int], *, stall: float = 0.5, deadline: float = 15) -> int:
    """Poll the counter `progress()` until it has not moved for `stall` seconds (or `deadline`
    passes); return its value then. For backpressure checks: how far did a writer get?"""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    last, last_change = -1, loop.time()
    while loop.time() < end:
        await asyncio.sleep(0.05)
        value = progress()
        if value != last:
            last, last_change = value, loop.time()
        elif loop.time() - last_change >= stall:
            break
    return progress()


async def open_with_buffers(
    port: int, *, sndbuf: int = 0, rcvbuf: int = 0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw client connection with fixed kernel buffer sizes. Set before connecting, they
    switch off autotuning, so a backpressure test knows how much the client side can hold."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if sndbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), 5)
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=1 << 20)
