"""A small HTTP/1.1 server for the master's control surfaces (admin API, stats page).

One request per connection, then close: enough for `balancer ctl`, scripts, Prometheus
scrapes and a page that polls, and nothing to keep alive in the master. A handler gets a
parsed Request and returns a Reply, or raises HttpError; every error becomes a short JSON
object {"error": "..."} with its status and headers. A request that does not arrive whole
within 10 seconds, or is malformed, is dropped.
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
_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip


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
        try:
            request = await asyncio.wait_for(self._read(reader), REQUEST_TIMEOUT)
            reply = await self.handler(request)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
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
        writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> Request:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, _ = lines[0].split(" ", 2)
        except ValueError:
            raise HttpError(400, "malformed request line") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        length = headers.get("content-length", "0") or "0"
        if not length.isdigit():
            raise HttpError(400, "bad Content-Length")
        if int(length) > self.max_body:
            raise HttpError(413, "body too large")
        body = await reader.readexactly(int(length)) if int(length) else b""
        return Request(method, target.partition("?")[0], headers, body)
