"""The runtime API (SPEC "Admin API"), served by the master over a unix socket and TCP.

JSON over HTTP/1.1, one request per connection (admin.oneshot). Every error is a JSON
object {"error": "..."} with the status that fits: 400 for a bad body or value, 404 for an
unknown path, backend or server, 405 for a wrong method.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from balancer.admin.oneshot import HttpError, OneShotServer, Reply, Request, json_reply
from balancer.config.values import Address

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
    def bgp_status(self) -> dict[str, Any]: ...
    def l4_rows(self) -> list[dict[str, Any]]: ...
    def set_l4(self, table: str, node: str, state: str) -> Awaitable[dict[str, Any]]: ...
    def dns_status(self) -> dict[str, Any]: ...
    def vrrp_status(self) -> dict[str, Any]: ...
    def peers_status(self) -> dict[str, Any]: ...


_SERVER_PATH = re.compile(r"^/api/servers/([^/]+)/([^/]+)$")
_L4_PATH = re.compile(r"^/api/l4/([^/]+)/([^/]+)$")


class AdminServer:
    def __init__(self, control: ControlPlane) -> None:
        self.control = control
        self.http = OneShotServer(self._handle, MAX_BODY)

    async def listen_unix(self, path: str) -> None:
        """Serve on a unix socket only its owner may use (mode 0600)."""
        await self.http.listen(Address(path=path), mode=0o600)

    async def listen_tcp(self, host: str, port: int) -> None:
        await self.http.listen(Address(host=host, port=port))

    def close(self) -> None:
        self.http.close()

    async def _handle(self, request: Request) -> Reply:
        return await self.route(request.method, request.path, request.body)

    async def route(self, method: str, path: str, body: bytes) -> Reply:
        routes: dict[str, dict[str, Callable[[bytes], Awaitable[Reply]]]] = {
            "/api/servers": {"GET": self._servers},
            "/api/stats": {"GET": self._stats},
            "/api/reload": {"POST": self._reload},
            "/api/bgp": {"GET": self._bgp},
            "/api/dns": {"GET": self._dns},
            "/api/vrrp": {"GET": self._vrrp},
            "/api/peers": {"GET": self._peers},
            "/metrics": {"GET": self._metrics},
            "/health": {"GET": self._health},
            "/api/l4": {"GET": self._l4},
        }
        l4_match = _L4_PATH.match(path)
        if l4_match:
            if method != "PUT":
                raise HttpError(405, f"{method} not allowed on {path}: use PUT")
            return await self._set_l4(l4_match.group(1), l4_match.group(2), body)
        match = _SERVER_PATH.match(path)
        if match:
            if method != "PUT":
                raise HttpError(405, f"{method} not allowed on {path}: use PUT")
            return self._set_server(match.group(1), match.group(2), body)
        handlers = routes.get(path)
        if handlers is None:
            raise HttpError(404, f"no such path: {path}")
        handler = handlers.get(method)
        if handler is None:
            raise HttpError(405, f"{method} not allowed on {path}: use {', '.join(handlers)}")
        return await handler(body)

    async def _servers(self, body: bytes) -> Reply:
        return json_reply(200, self.control.servers())

    async def _l4(self, body: bytes) -> Reply:
        return json_reply(200, self.control.l4_rows())

    async def _set_l4(self, table: str, node: str, body: bytes) -> Reply:
        """PUT /api/l4/TABLE/NODE {"state": "maint" | "ready"}: an operator takes an L7 node
        out of an [[l4]] table (its established flows stay) or puts it back."""
        try:
            change = json.loads(body or b"null")
        except ValueError:
            raise HttpError(400, "body is not valid JSON") from None
        if not isinstance(change, dict) or set(change) != {"state"} or change["state"] not in ("ready", "maint"):
            raise HttpError(400, 'expected {"state": "maint"} or {"state": "ready"}')
        try:
            return json_reply(200, await self.control.set_l4(table, node, change["state"]))
        except KeyError as exc:
            raise HttpError(404, str(exc.args[0])) from None
        except RuntimeError as exc:  # the kernel refused (cluster.l4.L4Error)
            raise HttpError(500, f"the kernel refused the update: {exc}") from None

    async def _stats(self, body: bytes) -> Reply:
        return json_reply(200, self.control.stats())

    async def _bgp(self, body: bytes) -> Reply:
        return json_reply(200, self.control.bgp_status())

    async def _dns(self, body: bytes) -> Reply:
        return json_reply(200, self.control.dns_status())

    async def _vrrp(self, body: bytes) -> Reply:
        return json_reply(200, self.control.vrrp_status())

    async def _peers(self, body: bytes) -> Reply:
        return json_reply(200, self.control.peers_status())

    async def _reload(self, body: bytes) -> Reply:
        result = await self.control.reload_now()
        return json_reply(200 if result.get("reloaded") else 400, result)

    async def _metrics(self, body: bytes) -> Reply:
        return Reply(200, self.control.metrics(), "text/plain; version=0.0.4; charset=utf-8")

    async def _health(self, body: bytes) -> Reply:
        healthy, reason = self.control.healthy()
        return json_reply(200 if healthy else 503, {"status": "serving" if healthy else reason})

    def _set_server(self, backend: str, server: str, body: bytes) -> Reply:
        try:
            change = json.loads(body or b"null")
        except ValueError:
            raise HttpError(400, "body is not valid JSON") from None
        if not isinstance(change, dict) or not change:
            raise HttpError(400, 'expected a JSON object such as {"state": "drain"} or {"weight": 50}')
        unknown = set(change) - {"state", "weight"}
        if unknown:
            raise HttpError(400, f"unknown field(s): {', '.join(sorted(unknown))}; use state and/or weight")
        state = change.get("state")
        if state is not None and state not in STATES:
            raise HttpError(400, f"state must be one of {', '.join(STATES)}, got {state!r}")
        weight = change.get("weight")
        if weight is not None and (isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 256):
            raise HttpError(400, f"weight must be an integer from 0 to 256, got {weight!r}")
        try:
            return json_reply(200, self.control.set_server(backend, server, state, weight))
        except KeyError:
            raise HttpError(404, f"no server {backend}/{server}") from None
