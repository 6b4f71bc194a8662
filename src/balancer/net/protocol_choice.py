"""Which HTTP a client speaks, on a frontend that offers HTTP/2: HTTP/1.1 or h2.

A frontend offering HTTP/2 (`h2` among its `tls.alpn`, or `h2c = true`) accepts each
connection with a ProtocolChoice, which hands it on to an HttpSession (HTTP/1.1) or an
H2Session (net.h2_session) as soon as it can tell:
- over TLS, by the protocol ALPN chose in the handshake (done before connection_made);
- in cleartext with `h2c`, by the first bytes: the HTTP/2 connection preface
  ("PRI * HTTP/2.0...", RFC 9113 3.4) means HTTP/2 with prior knowledge, anything else
  is HTTP/1.1 (at most the preface's 24 bytes are waited for), but for a first line that
  came whole and is no HTTP/1.x request line ("METHOD TARGET HTTP/d.d"): no HTTP/1.1
  client sends that, an HTTP/2 client with a broken preface does, and is told what RFC
  9113 3.4 says, GOAWAY PROTOCOL_ERROR, then the connection closes.
A frontend offering only HTTP/1.1 never goes through here: its connections start as
HttpSessions. Without `h2c` the preface is an HTTP/1.1 request like any other, which
the HTTP/1.1 session answers 505.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Final, cast

from balancer.net.context import FrontendContext
from balancer.net.h2_session import H2Session
from balancer.net.http_session import HttpSession
from balancer.proto.h2_connection import PROTOCOL_ERROR, goaway_frame
from balancer.proto.h2_message import PREFACE

log = logging.getLogger("balancer.http")

# An HTTP/1.x request line, as far as telling it from a broken HTTP/2 preface goes: the
# version's form only (HTTP/2.0 included: an HTTP/1.1 session answers it 505).
REQUEST_LINE: Final = re.compile(rb"[^ \r\n]+ [^ \r\n]+ HTTP/[0-9]\.[0-9]\r?")


class ProtocolChoice(asyncio.Protocol):
    def __init__(self, frontend: FrontendContext, h2c: bool) -> None:
        self.frontend = frontend
        self.h2c = h2c
        self.proxied: tuple[str, int] | None = None  # set by a PROXY header reader (net.proxy_accept)
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.timer: asyncio.TimerHandle | None = None
        self.chosen = False
        self.session: H2Session | HttpSession | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        # An ssl.SSLObject, or OpenSSL's own object on TLS frontends (net.tls_transport).
        tls = transport.get_extra_info("ssl_object")
        if tls is not None:
            self._hand_over(tls.selected_alpn_protocol() == "h2", b"")
        elif not self.h2c:
            self._hand_over(False, b"")
        elif self.frontend.opened(self, self.transport):
            # Counted as a connection of the frontend (maxconn) while its first bytes are awaited.
            self.admitted()
        # else parked over maxconn (net.parked): `admitted` is called once there is room

    def admitted(self) -> None:
        """Cleartext with h2c, within maxconn: wait for the first bytes, for a while."""
        self.timer = asyncio.get_running_loop().call_later(self.frontend.request_timeout, self._timed_out)

    def data_received(self, data: bytes) -> None:
        if self.chosen:
            return
        buffer = self.buffer + data
        if len(buffer) < len(PREFACE) and PREFACE.startswith(buffer):
            self.buffer = buffer  # may still be the preface
            return
        self.buffer = b""
        if not buffer.startswith(PREFACE) and not _may_be_http1(buffer):
            self._refuse_preface()
            return
        self._hand_over(buffer.startswith(PREFACE), buffer)

    def _refuse_preface(self) -> None:
        self.chosen = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        transport = self.transport
        assert transport is not None
        peer = transport.get_extra_info("peername")
        log.info("HTTP/2 connection preface invalid from %s: GOAWAY", peer[0] if peer else "-")
        transport.write(goaway_frame(0, PROTOCOL_ERROR))
        transport.close()

    def _hand_over(self, http2: bool, data: bytes) -> None:
        self.chosen = True
        self.frontend.closed(self)  # the session counts itself from now on
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        transport = self.transport
        assert transport is not None
        session: H2Session | HttpSession = H2Session(self.frontend) if http2 else HttpSession(self.frontend)
        session.proxied = self.proxied
        self.session = session
        transport.set_protocol(session)
        session.connection_made(transport)
        if data:  # to whoever reads now: the session, or its parking over maxconn (net.parked)
            cast(asyncio.Protocol, transport.get_protocol()).data_received(data)

    def _timed_out(self) -> None:
        self.timer = None
        if not self.chosen and self.transport is not None:
            self.chosen = True
            self.transport.close()

    def eof_received(self) -> bool | None:
        if not self.chosen and self.buffer:
            self._hand_over(False, self.buffer)  # a short HTTP/1.1 request, half-closed
            if isinstance(self.session, HttpSession):
                return self.session.eof_received()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.frontend.closed(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def stop(self) -> None:
        """A stop while the first bytes are awaited: nothing is in flight, close."""
        self.abort()

    def abort(self) -> None:
        if not self.chosen and self.transport is not None:
            self.chosen = True
            self.transport.close()


def _may_be_http1(first: bytes) -> bool:
    """False when `first` holds a whole first line (after the empty lines a request may start
    with) that is no HTTP/1.x request line; True otherwise, a line not yet whole included."""
    start = len(first) - len(first.lstrip(b"\r\n"))
    end = first.find(b"\n", start)
    return end < 0 or REQUEST_LINE.fullmatch(first, start, end) is not None
