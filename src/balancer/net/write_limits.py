"""The write side's flow control of our own transports (net.plain_transport, net.tls_transport).

As the loop's transports do: what a transport holds unsent is counted, its protocol is told
`pause_writing` once that passes the high-water mark, and `resume_writing` (by the
transport, once drained) after. The limits default to the loop transports' own.
"""

from __future__ import annotations

import asyncio
from typing import Final

HIGH_WATER: Final = 65536
LOW_WATER: Final = 16384


class WriteLimits:
    """The part of a transport that counts what it holds (`buffered`, kept by the
    transport) against its limits, for its `protocol`."""

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
