"""Accepting the PROXY protocol (`accept_proxy = true`) in front of a session.

A ProxyHeaderReader owns a new connection until its PROXY header (v1 or v2, told apart by
the first bytes) is complete, then creates the real session with the client address the
header gave, hands it the transport, and passes on any bytes that followed the header.
A bad header, or none within the frontend's `http_request` timeout, closes the connection
and is logged: nothing unauthenticated ever reaches a session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol, cast

from balancer.net.peer import client_address
from balancer.proto.proxy import ProxyProtocolError, parse_proxy_header

log = logging.getLogger("balancer.proxy_protocol")

MAX_HEADER = 16 + 65535  # a v2 header with every TLV


class ProxiedSession(Protocol):
    proxied: tuple[str, int] | None

    def connection_made(self, transport: asyncio.BaseTransport) -> None: ...
    def data_received(self, data: bytes) -> None: ...


class ProxyHeaderReader(asyncio.Protocol):
    def __init__(self, make_session: Callable[[], ProxiedSession], timeout: float) -> None:
        self.make_session = make_session
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.timer = asyncio.get_running_loop().call_later(self.timeout, self._timed_out)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            parsed = parse_proxy_header(self.buffer)
        except ProxyProtocolError as exc:
            self._refuse(str(exc))
            return
        if parsed is None:
            if len(self.buffer) > MAX_HEADER:
                self._refuse("PROXY header too long")
            return
        info, consumed = parsed
        if self.timer is not None:
            self.timer.cancel()
        transport = self.transport
        assert transport is not None
        session = self.make_session()
        if not info.local:
            session.proxied = (info.source_ip, info.source_port)
        transport.set_protocol(cast(asyncio.BaseProtocol, session))
        session.connection_made(transport)
        rest = self.buffer[consumed:]
        self.buffer = b""
        if rest:
            session.data_received(rest)

    def _refuse(self, reason: str) -> None:
        if self.transport is not None:
            ip, port = client_address(self.transport)
            log.warning("connection from %s:%s closed: %s", ip, port, reason)
            self.transport.close()
        if self.timer is not None:
            self.timer.cancel()

    def _timed_out(self) -> None:
        self._refuse(f"no PROXY header within {self.timeout:g}s")

    def eof_received(self) -> bool:
        self._refuse("connection closed before its PROXY header ended")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
