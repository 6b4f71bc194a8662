"""Accepting the PROXY protocol (`accept_proxy = true`) in front of a session.

A new connection's PROXY header (v1 or v2, told apart by the first bytes) is read before
anything else; once it is complete the real session is made with the client address the
header gave. A bad header, or none within the frontend's `http_request` timeout, closes the
connection and is logged: nothing unauthenticated ever reaches a session.

- Plain connections (the loop's transports): a ProxyHeaderReader is the connection's first
  protocol; it reads freely and hands the session the transport and any bytes that followed
  the header.
- TLS frontends (net.tls_transport's acceptor, TLS on the socket itself): the header comes
  before the handshake, in clear. A ProxyHeaderBeforeTls peeks at the socket and takes
  exactly the header's bytes, not one more (the next byte belongs to the ClientHello), then
  hands the socket back for TLS to start on it.
"""

from __future__ import annotations

import _socket
import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Protocol, cast

from balancer.net.peer import client_address
from balancer.proto.proxy import ProxyProtocolError, parse_proxy_header

log = logging.getLogger("balancer.proxy_protocol")

MAX_HEADER = 16 + 65535  # a v2 header with every TLV
# Bytes read (plain) or looked at (before TLS) at a time while the header is awaited: a
# usual header and what follows it; a longer (v2, TLVs) header takes several reads. Held
# per connection that has not sent its header yet, so kept small.
_READ_SIZE = 4096


class ProxiedSession(Protocol):
    proxied: tuple[str, int] | None

    def connection_made(self, transport: asyncio.BaseTransport) -> None: ...
    def data_received(self, data: bytes) -> None: ...


class ProxyHeaderReader(asyncio.BufferedProtocol):
    def __init__(self, make_session: Callable[[], ProxiedSession], timeout: float) -> None:
        self.make_session = make_session
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.chunk = bytearray(_READ_SIZE)
        self.timer: asyncio.TimerHandle | None = None
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.timer = asyncio.get_running_loop().call_later(self.timeout, self._timed_out)

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.chunk)

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
            if len(self.buffer) > MAX_HEADER:
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
        transport.set_protocol(cast(asyncio.BaseProtocol, session))
        session.connection_made(transport)
        if rest:
            # To the session, or to what holds the connection while it is parked over
            # maxconn (net.parked): connection_made may have swapped the protocol.
            cast(asyncio.Protocol, transport.get_protocol()).data_received(rest)

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


class ProxyHeaderBeforeTls:
    """The PROXY header of a connection to a TLS frontend, read off the accepted socket
    (non-blocking) before TLS starts on it. `start(sock, proxied)` gets the socket once the
    header is taken, with the address it gave (None for a LOCAL header); a bad header, an
    early close or none within `timeout` closes the socket and is logged, and `start` is
    never called."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: _socket.socket,
        timeout: float,
        start: Callable[[_socket.socket, tuple[str, int] | None], None],
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.start = start
        self.taken = b""  # the header's bytes received so far (all header: its end is not among them)
        self.timer: asyncio.TimerHandle | None = loop.call_later(timeout, self._timed_out, timeout)
        loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        sock = self.sock
        try:
            peeked = sock.recv(_READ_SIZE, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._refuse(f"reading its PROXY header: {exc}")
            return
        if not peeked:
            self._refuse("connection closed before its PROXY header ended")
            return
        data = self.taken + peeked
        try:
            parsed = parse_proxy_header(data)
        except ProxyProtocolError as exc:
            self._refuse(str(exc))
            return
        try:
            if parsed is None:
                if len(data) > MAX_HEADER:
                    self._refuse("PROXY header too long")
                    return
                # Taken off the socket, or the reader would be woken again for the same bytes.
                self.taken += sock.recv(len(peeked))
                return
            info, consumed = parsed
            sock.recv(consumed - len(self.taken))  # exactly the header: peeked, so all there
        except OSError as exc:
            self._refuse(f"reading its PROXY header: {exc}")
            return
        self._finish()
        self.start(sock, None if info.local else (info.source_ip, info.source_port))

    def _finish(self) -> None:
        self.loop.remove_reader(self.fd)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _refuse(self, reason: str) -> None:
        self._finish()
        try:
            ip, port = self.sock.getpeername()[:2]
        except OSError:
            ip, port = "-", 0
        log.warning("connection from %s:%s closed: %s", ip, port, reason)
        self.sock.close()

    def _timed_out(self, timeout: float) -> None:
        self.timer = None
        self._refuse(f"no PROXY header within {timeout:g}s")
