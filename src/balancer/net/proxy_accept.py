"""Accepting the PROXY protocol (`accept_proxy = true`) in front of a session.

A ProxyHeaderReader owns a new connection until its PROXY header (v1 or v2, told apart by
the first bytes) is complete, then creates the real session with the client address the
header gave and hands it the connection. A bad header, or none within the frontend's
`http_request` timeout, closes the connection and is logged: nothing unauthenticated ever
reaches a session.

On a TLS frontend the header comes before the TLS handshake, so the reader reads exactly
the header's bytes and not one more (the next byte belongs to the ClientHello), then starts
TLS on the connection. Without TLS it reads freely and passes any bytes that followed the
header on to the session.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Protocol, cast

from balancer.net.peer import client_address
from balancer.proto.proxy import V1_MAX, V2_SIGNATURE, ProxyProtocolError, parse_proxy_header

log = logging.getLogger("balancer.proxy_protocol")

MAX_HEADER = 16 + 65535  # a v2 header with every TLV
_READ_SIZE = 65536


class ProxiedSession(Protocol):
    proxied: tuple[str, int] | None

    def connection_made(self, transport: asyncio.BaseTransport) -> None: ...
    def data_received(self, data: bytes) -> None: ...


class ProxyHeaderReader(asyncio.BufferedProtocol):
    def __init__(
        self, make_session: Callable[[], ProxiedSession], timeout: float, tls: ssl.SSLContext | None = None
    ) -> None:
        self.make_session = make_session
        self.timeout = timeout
        self.tls = tls
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.chunk = bytearray(_READ_SIZE)
        self.timer: asyncio.TimerHandle | None = None
        self.done = False
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.timer = asyncio.get_running_loop().call_later(self.timeout, self._timed_out)

    def _wanted(self) -> int:
        """How many bytes to read next: exactly up to the header's end when TLS follows."""
        if self.tls is None:
            return _READ_SIZE
        have = bytes(self.buffer)
        if len(have) < 5:
            return 5 - len(have)
        if have.startswith(V2_SIGNATURE[:5]):
            if len(have) < 16:
                return 16 - len(have)
            return 16 + int.from_bytes(have[14:16], "big") - len(have)
        return 1  # v1: a line up to CRLF, one byte at a time (at most 107)

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.chunk)[: max(1, self._wanted())]

    def buffer_updated(self, nbytes: int) -> None:
        if self.done:
            return
        self.buffer += self.chunk[:nbytes]
        try:
            parsed = parse_proxy_header(bytes(self.buffer))
        except ProxyProtocolError as exc:
            self._refuse(str(exc))
            return
        if parsed is None:
            if len(self.buffer) > MAX_HEADER or (self.tls is not None and len(self.buffer) > V1_MAX + 16 + 65535):
                self._refuse("PROXY header too long")
            return
        info, consumed = parsed
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
        session = self.make_session()
        if not info.local:
            session.proxied = (info.source_ip, info.source_port)
        rest = bytes(self.buffer[consumed:])
        self.buffer = bytearray()
        transport = self.transport
        assert transport is not None
        if self.tls is not None:
            transport.pause_reading()  # the next bytes are the ClientHello: TLS reads them
            self.task = asyncio.get_running_loop().create_task(self._start_tls(transport, session))
            return
        transport.set_protocol(cast(asyncio.BaseProtocol, session))
        session.connection_made(transport)
        if rest:
            # To the session, or to what holds the connection while it is parked over
            # maxconn (net.parked): connection_made may have swapped the protocol.
            cast(asyncio.Protocol, transport.get_protocol()).data_received(rest)

    async def _start_tls(self, transport: asyncio.Transport, session: ProxiedSession) -> None:
        assert self.tls is not None
        loop = asyncio.get_running_loop()
        try:
            tls_transport = await loop.start_tls(
                transport,
                cast(asyncio.BaseProtocol, session),
                self.tls,
                server_side=True,
                ssl_handshake_timeout=self.timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.info("TLS handshake after a PROXY header failed: %s", exc)
            transport.close()
            return
        if tls_transport is None:
            transport.close()
            return
        session.connection_made(tls_transport)

    def _refuse(self, reason: str) -> None:
        self.done = True
        if self.transport is not None:
            ip, port = client_address(self.transport)
            log.warning("connection from %s:%s closed: %s", ip, port, reason)
            self.transport.close()
        if self.timer is not None:
            self.timer.cancel()

    def _timed_out(self) -> None:
        self._refuse(f"no PROXY header within {self.timeout:g}s")

    def eof_received(self) -> bool:
        if not self.done:
            self._refuse("connection closed before its PROXY header ended")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
