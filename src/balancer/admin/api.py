"""The runtime API (SPEC "Admin API"), served by the master over a unix socket and TCP.

Small JSON-over-HTTP/1.1: one request per connection is enough for `balancer ctl`,
scripts and Prometheus scrapes, so the server reads one request, answers, and closes.
Every error is a JSON object {"error": "..."} with the status that fits: 400 for a bad
body or value, 404 for an unknown path, backend or server, 405 for a wrong method.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("balancer.admin")

MAX_BODY = 65536
STATES = ("ready", "drain", "maint")


class ControlPlane(Protocol):
    """What the master offers the API."""

    def servers(self) -> list[dict[str, Any]]: ...
    def stats(self) -> dict[str, Any]: ...
    def set_server(self, backend: str, server: str, state: str | None, weight: int | None) -> dict[str, Any]: ...
    def reload_now(self) -> Awaitable[dict[str, Any]]: ...
    def metrics(self) -> bytes: ...
    def healthy(self) -> tuple[bool, str]: ...


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"


_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Payload Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip
_SERVER_PATH = re.compile(r"^/api/servers/([^/]+)/([^/]+)$")


def _json(status: int, value: Any) -> Response:
    return Response(status, json.dumps(value, indent=None).encode() + b"\n")


class AdminServer:
    def __init__(self, control: ControlPlane) -> None:
        self.control = control
        self.servers: list[asyncio.AbstractServer] = []

    async def listen_unix(self, path: str) -> None:
        """Serve on a unix socket only its owner may use (mode 0600)."""
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        old_mask = os.umask(0o177)
        try:
            self.servers.append(await asyncio.start_unix_server(self._serve, path))
        finally:
            os.umask(old_mask)
        os.chmod(path, 0o600)

    async def listen_tcp(self, host: str, port: int) -> None:
        self.servers.append(await asyncio.start_server(self._serve, host or None, port))

    def close(self) -> None:
        for server in self.servers:
            server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            response = await asyncio.wait_for(self._one(reader), 10.0)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        except ApiError as exc:
            response = _json(exc.status, {"error": exc.message})
        except Exception:
            log.exception("admin API request failed")
            response = _json(500, {"error": "internal error"})
        head = (
            f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Error')}\r\n"
            f"Content-Type: {response.content_type}\r\nContent-Length: {len(response.body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(head.encode() + response.body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def _one(self, reader: asyncio.StreamReader) -> Response:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, _ = lines[0].split(" ", 2)
        except ValueError:
            raise ApiError(400, "malformed request line") from None
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                if not value.strip().isdigit():
                    raise ApiError(400, "bad Content-Length")
                length = int(value)
        if length > MAX_BODY:
            raise ApiError(413, "body too large")
        body = await reader.readexactly(length) if length else b""
        return await self.route(method, target.partition("?")[0], body)

    async def route(self, method: str, path: str, body: bytes) -> Response:
        routes: dict[str, dict[str, Callable[[bytes], Awaitable[Response]]]] = {
            "/api/servers": {"GET": self._servers},
            "/api/stats": {"GET": self._stats},
            "/api/reload": {"POST": self._reload},
            "/metrics": {"GET": self._metrics},
            "/health": {"GET": self._health},
        }
        match = _SERVER_PATH.match(path)
        if match:
            if method != "PUT":
                raise ApiError(405, f"{method} not allowed on {path}: use PUT")
            return self._set_server(match.group(1), match.group(2), body)
        handlers = routes.get(path)
        if handlers is None:
            raise ApiError(404, f"no such path: {path}")
        handler = handlers.get(method)
        if handler is None:
            raise ApiError(405, f"{method} not allowed on {path}: use {', '.join(handlers)}")
        return await handler(body)

    async def _servers(self, body: bytes) -> Response:
        return _json(200, self.control.servers())

    async def _stats(self, body: bytes) -> Response:
        return _json(200, self.control.stats())

    async def _reload(self, body: bytes) -> Response:
        result = await self.control.reload_now()
        return _json(200 if result.get("reloaded") else 400, result)

    async def _metrics(self, body: bytes) -> Response:
        return Response(200, self.control.metrics(), "text/plain; version=0.0.4; charset=utf-8")

    async def _health(self, body: bytes) -> Response:
        healthy, reason = self.control.healthy()
        return _json(200 if healthy else 503, {"status": "serving" if healthy else reason})

    def _set_server(self, backend: str, server: str, body: bytes) -> Response:
        try:
            change = json.loads(body or b"null")
        except ValueError:
            raise ApiError(400, "body is not valid JSON") from None
        if not isinstance(change, dict) or not change:
            raise ApiError(400, 'expected a JSON object such as {"state": "drain"} or {"weight": 50}')
        unknown = set(change) - {"state", "weight"}
        if unknown:
            raise ApiError(400, f"unknown field(s): {', '.join(sorted(unknown))}; use state and/or weight")
        state = change.get("state")
        if state is not None and state not in STATES:
            raise ApiError(400, f"state must be one of {', '.join(STATES)}, got {state!r}")
        weight = change.get("weight")
        if weight is not None and (isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 256):
            raise ApiError(400, f"weight must be an integer from 0 to 256, got {weight!r}")
        try:
            return _json(200, self.control.set_server(backend, server, state, weight))
        except KeyError:
            raise ApiError(404, f"no server {backend}/{server}") from None
