"""A client connection accepted over frontend or global maxconn, until it is admitted.

net.gate explains why such connections exist. While parked, the connection's protocol is a
ParkedConnection: the first bytes the client sends are kept and reading pauses (a session
cannot pause in its own connection_made: uvloop starts reading only after it returns), so
the connection costs one read buffer and no work. `admit` hands the transport back to the
session, tells it it may serve (`admitted`), and replays what was kept; a client that left
meanwhile reaches the session's connection_lost as usual, which forgets the parking.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class ParkableSession(Protocol):
    """What a client session (net.http_session, net.tcp_session) offers while parked."""

    def admitted(self) -> None: ...

    def data_received(self, data: bytes) -> None: ...

    def eof_received(self) -> bool | None: ...

    def connection_lost(self, exc: Exception | None) -> None: ...


class ParkedConnection(asyncio.Protocol):
    def __init__(self, session: ParkableSession, transport: asyncio.Transport) -> None:
        self.session = session
        self.transport = transport
        self.kept: list[bytes] = []
        self.eof = False
        self.closed = False
        transport.set_protocol(self)

    def data_received(self, data: bytes) -> None:
        self.kept.append(data)
        self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        return True  # the session decides once admitted

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.session.connection_lost(exc)

    def admit(self) -> bool:
        """Give the connection back to its session, which may serve it now; False when the
        client left meanwhile."""
        if self.closed:
            return False
        session = self.session
        transport = self.transport
        transport.set_protocol(session)  # type: ignore[arg-type]  # a Protocol of its own
        if self.kept and not self.eof:
            transport.resume_reading()  # before the session runs: a pause of its own stands
        session.admitted()
        for data in self.kept:
            if transport.is_closing():
                break
            session.data_received(data)
        self.kept = []
        if self.eof and not transport.is_closing() and not session.eof_received():
            transport.close()
        return True
