"""A small HTTP/1.1 server for the master's control surfaces (admin API, stats page).

One request per connection, then close: enough for `balancer ctl`, scripts, Prometheus
scrapes and a page that polls, and nothing to keep alive in the master. A handler gets a
parsed Request and returns a Reply, or raises HttpError; every error becomes a short JSON
object {"error": "..."} with its status and headers. A request that does not arrive whole
within 10 seconds is dropped. A request line over 8 KiB gets 414 and a head over 64 KiB
431, as from the proxy's frontends: an operator's script or browser sees why, rather than a
closed connection. After such an early answer the rest of what the client sent is read and
dropped for a moment (bounded), so closing does not reset the connection before the client
has read the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from balancer.config.values import Address

log = logging.getLogger("balancer.admin")

REQUEST_TIMEOUT = 10.0
MAX_REQUEST_LINE = 8192  # the proxy's default limits.request_line
MAX_HEAD = 65536  # request line and headers, CRLFs included
DISCARD_TIME = 1.0  # how long the unread rest of a refused request is drained before closing
DISCARD_BYTES = 1 << 20
_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large", 414: "URI Too Long",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}  # fmt: skip


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class Request:
    method: str
    path: str  # without the query string
    headers: dict[str, str]  # names lower-cased
    body: bytes


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, value: Any) -> Reply:
    return Reply(status, json.dumps(value).encode() + b"\n")


Handler = Callable[[Request], Awaitable[Reply]]


class OneShotServer:
    """Serves `handler` on any number of listening addresses. `headers` go on every reply."""

    def __init__(self, handler: Handler, max_body: int, headers: dict[str, str] | None = None) -> None:
        self.handler = handler
        self.max_body = max_body
        self.headers = headers or {}
        self.servers: list[asyncio.AbstractServer] = []

    async def listen(self, address: Address, mode: int | None = None) -> None:
        """Listen on a TCP address or a unix socket path (created with `mode` when given)."""
        if not address.is_unix:
            self.servers.append(await asyncio.start_server(self._serve, address.host or None, address.port))
            return
        path = address.path
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        old_mask = os.umask(0o777 & ~mode) if mode is not None else None
        try:
            self.servers.append(await asyncio.start_unix_server(self._serve, path))
        finally:
            if old_mask is not None:
                os.umask(old_mask)
        if mode is not None:
            os.chmod(path, mode)

    def close(self) -> None:
        for server in self.servers:
            server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        unread = False  # True when the answer comes before the whole request was read
        try:
            try:
                request = await asyncio.wait_for(self._read(reader), REQUEST_TIMEOUT)
            except HttpError:
                unread = True
                raise
            reply = await self.handler(request)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        except HttpError as exc:
            reply = json_reply(exc.status, {"error": exc.message})
            reply.headers.update(exc.headers)
        except Exception:
            log.exception("control request failed")
            reply = json_reply(500, {"error": "internal error"})
        headers = {
            "Content-Type": reply.content_type,
            "Content-Length": str(len(reply.body)),
            **self.headers,
            **reply.headers,
            "Connection": "close",
        }
        head = f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Error')}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in headers.items()
        )
        writer.write(head.encode("latin-1") + b"\r\n" + reply.body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
            if unread and writer.can_write_eof():
                writer.write_eof()
                await _discard(reader)
        writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> Request:
        request_line = await _read_line(reader, MAX_REQUEST_LINE, 414, "request line longer than 8 KiB")
        size = len(request_line)
        lines: list[bytes] = []
        while True:
            line = await _read_line(reader, MAX_HEAD - size, 431, "request head longer than 64 KiB")
            size += len(line)
            if line == b"\r\n":
                break
            lines.append(line)
        try:
            method, target, _ = request_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        except ValueError:
            raise HttpError(400, "malformed request line") from None
        headers: dict[str, str] = {}
        for raw in lines:
            name, _, value = raw.decode("latin-1").partition(":")
            if name.strip():
                headers[name.strip().lower()] = value.strip()
        length = headers.get("content-length", "0") or "0"
        if not length.isdigit():
            raise HttpError(400, "bad Content-Length")
        if int(length) > self.max_body:
            raise HttpError(413, "body too large")
        body = await reader.readexactly(int(length)) if int(length) else b""
        return Request(method, target.partition("?")[0], headers, body)


async def _read_line(reader: asyncio.StreamReader, limit: int, status: int, message: str) -> bytes:
    """One CRLF-terminated line of at most `limit` bytes (CRLF included); HttpError(`status`)
    past it. The stream's own buffer limit (64 KiB) stops a longer line before it is whole."""
    try:
        line = await reader.readuntil(b"\r\n")
    except asyncio.LimitOverrunError:
        raise HttpError(status, message) from None
    if len(line) > limit:
        raise HttpError(status, message)
    return line


async def _discard(reader: asyncio.StreamReader) -> None:
    """Read and drop what the client still sends, for DISCARD_TIME and DISCARD_BYTES at most."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DISCARD_TIME
    dropped = 0
    with contextlib.suppress(TimeoutError, ConnectionError):
        while dropped < DISCARD_BYTES:
            chunk = await asyncio.wait_for(reader.read(65536), max(0.0, deadline - loop.time()))
            if not chunk:
                return
            dropped += len(chunk)
