"""What our own transports (net.plain_transport, net.tls_transport) do alike for their protocol.

The write side's flow control, as the loop's transports do it: what a transport holds
unsent is counted, its protocol is told `pause_writing` once that passes the high-water
mark, and `resume_writing` (by the transport, once drained) after. The limits default to
the loop transports' own.

And the end: `connection_lost` is told once, and the protocol dropped as it is told. A
protocol holds its transport, so without that the two would be a reference cycle, freed
only by the cyclic garbage collector: a session and its connection's buffers (a TLS
connection's OpenSSL object, ~20 KiB) would pile up until its next pass (runtime.collector
spaces them far apart), and every new connection would take memory the cache had forgotten
instead of the last one's.
"""

from __future__ import annotations

import asyncio
from typing import Final

HIGH_WATER: Final = 65536
LOW_WATER: Final = 16384
GONE: Final = asyncio.BaseProtocol()  # the protocol of a transport that told connection_lost


class WriteLimits:
    """The part of a transport that counts what it holds (`buffered`, kept by the
    transport) against its limits, for its `protocol`, and tells that protocol its end."""

    def __init__(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol
        self.buffered = 0
        self.high_water = HIGH_WATER
        self.low_water = LOW_WATER
        self.writing_paused = False  # the protocol was told pause_writing

    def _maybe_pause_protocol(self) -> None:
        if not self.writing_paused and self.buffered > self.high_water:
            self.writing_paused = True
            self.protocol.pause_writing()

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self.low_water, self.high_water)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        self.high_water, self.low_water = high, low
        self._maybe_pause_protocol()

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol

    def _lost(self, exc: Exception | None) -> None:
        """Tell the protocol its connection is gone, dropping it first (see above)."""
        protocol = self.protocol
        self.protocol = GONE
        protocol.connection_lost(exc)


def tell_lost(transport: WriteLimits, exc: Exception | None) -> None:
    """`transport._lost(exc)`, for `loop.call_soon(TELL_LOST, transport, exc)`: a module's
    function is handed over as it is, where `transport._lost` makes a bound method object
    per connection (compiled: an attribute lookup and an allocation, ~300 instructions)."""
    transport._lost(exc)


# What transports hand to call_soon (a Final: a static when compiled, where the function's
# name is a dictionary lookup at each use).
TELL_LOST: Final = tell_lost
