"""Writes held until the event loop has handled every ready socket, then sent back to back.

Why: one epoll wake-up hands a busy proxy tens of ready sockets. Writing each answer the
moment it is made spreads the writes over the whole pass, so the peers reading them
(clients, servers) have time to go back to sleep between two writes, and each write pays
a full wake-up of its reader (on a VM an inter-processor interrupt, a few µs of kernel
time charged to the writer). Held until the pass is over and then sent together, the
writes to one peer come back to back and mostly find it awake. HAProxy works this way
too: it receives for every ready connection first, then processes and sends. Measured
with bench/run.py on a bare relay (bench/floor_proxy.py): +15-20% requests per proxy core
with keep-alive, and a lower p50 latency.

An Outbox flushes itself with one `call_soon` per loop iteration, whatever the number of
writes, so it costs little more than the list appends. Work of the same kind, done once a
pass for whoever asked (an HTTP/2 connection framing what its streams made in the pass),
rides on that one call too (`at_end_of_pass`): it runs first, then the held writes go.

Order: one FIFO for all transports, so the writes to each keep their order. What must
come after them goes through the outbox too (`close`), or flushes it first (abort,
write_eof: `flush`). A transport closed or lost meanwhile drops what was held for it,
as a direct write to it would have. A plain connection's last write and its close, held
back to back (a Connection: close answer), go together: the end of stream then leaves in
the answer's last segment (net.plain_transport `write_and_close`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from mypy_extensions import trait

from balancer.net.plain_transport import PlainTransport

log = logging.getLogger("balancer.http")


@trait
class PassEnd:
    """What asks the Outbox for a call at the end of the loop pass (at_end_of_pass)."""

    def end_of_pass(self) -> None:
        raise NotImplementedError


class Outbox:
    __slots__ = ("_data", "_loop", "_pass_ends", "_scheduled", "_transports")

    def __init__(self) -> None:
        self._transports: list[asyncio.Transport] = []
        self._data: list[bytes | None] = []  # None: close the transport once its writes are out
        self._pass_ends: list[PassEnd] = []
        self._scheduled = False
        # The event loop, asked for once: on Python 3.11 every asyncio.get_running_loop()
        # makes a getpid() system call, and sessions ask on every connection. An Outbox
        # (one per Server) serves one loop.
        self._loop: asyncio.AbstractEventLoop | None = None

    def event_loop(self) -> asyncio.AbstractEventLoop:
        """The running event loop (see _loop)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def write(self, transport: asyncio.Transport, data: bytes) -> None:
        """Send `data` on `transport` at the end of this loop iteration."""
        self._transports.append(transport)  # _hold() inline: this runs twice per request
        self._data.append(data)
        if not self._scheduled:
            self._scheduled = True
            self.event_loop().call_soon(self._end_of_pass)

    def close(self, transport: asyncio.Transport) -> None:
        """Close `transport` (gracefully: what it buffered still goes) after what is held for it."""
        self._hold(transport, None)

    def _hold(self, transport: asyncio.Transport, data: bytes | None) -> None:
        self._transports.append(transport)
        self._data.append(data)
        if not self._scheduled:
            self._scheduled = True
            self.event_loop().call_soon(self._end_of_pass)

    def at_end_of_pass(self, owner: PassEnd) -> None:
        """Call `owner.end_of_pass()` at the end of this loop iteration, before the held
        writes go; once per call (the owner asks once a pass, as a call_soon would)."""
        self._pass_ends.append(owner)
        if not self._scheduled:
            self._scheduled = True
            self.event_loop().call_soon(self._end_of_pass)

    def _end_of_pass(self) -> None:
        self._scheduled = False
        owners = self._pass_ends
        if owners:
            # Swapped first: an owner asking again now is called at the next pass's end.
            self._pass_ends = []
            for owner in owners:
                try:
                    owner.end_of_pass()
                except Exception:
                    # One connection's failure must not cost the others their pass's end.
                    log.exception("internal error at the end of a loop pass")
        self.flush()

    def flush(self) -> None:
        """Send everything held now, in order. The pass's own flush still comes, so
        writes held after this one need no new call_soon."""
        transports = self._transports
        if not transports:
            return
        data = self._data
        # Swapped before writing: a write's callbacks (pause_writing) may hold more.
        self._transports = []
        self._data = []
        count = len(transports)
        i = 0
        while i < count:
            transport = transports[i]
            chunk = data[i]
            i += 1
            try:
                if isinstance(transport, PlainTransport):
                    # Ours, compiled: called directly. A method called by name on any
                    # transport is looked up first, ~350 instructions a write.
                    plain = cast(PlainTransport, transport)
                    if chunk is None:
                        plain.close()
                    elif i < count and data[i] is None and transports[i] is transport:
                        # A last write, then the close: both in one segment.
                        plain.write_and_close(chunk)
                        i += 1
                    else:
                        plain.write(chunk)
                elif chunk is None:
                    transport.close()
                else:
                    transport.write(chunk)
            except Exception:
                # A transport closed in between refuses writes: its connection is gone and
                # its owner was told; the other transports must still get theirs.
                log.debug("held write dropped for a closed transport", exc_info=True)
