"""A cheap, lazily re-armed timeout per connection.

Moving a deadline happens on every read and write; cancelling and re-creating a timer
each time would dominate the hot path. A Deadline keeps one loop timer and only a float
for the current deadline: when the timer fires early it re-arms itself for the deadline
that is current now, and when it fires late enough it calls back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def _nothing() -> None:
    pass


class Deadline:
    __slots__ = ("_callback", "_handle", "_handle_when", "_loop", "_time", "when")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._time = loop.time  # bound once: set() runs several times per request
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._handle_when = 0.0
        self.when: float | None = None

    def set(self, delay: float, now: float = -1.0) -> None:
        """Call back `delay` seconds from now unless moved or cleared before; 0 disables.
        `now` is the loop time when the caller has it at hand, else it is read here."""
        if delay <= 0:
            self.when = None
            return
        when = (now if now >= 0 else self._time()) + delay
        self.when = when
        if self._handle is None or self._handle_when > when:
            if self._handle is not None:
                self._handle.cancel()
            self._handle_when = when
            self._handle = self._loop.call_at(when, self._fire)

    def clear(self) -> None:
        self.when = None

    def cancel(self) -> None:
        """Clear and drop the loop timer and the callback: for a connection that is gone.
        The callback is mostly a method of the connection, which holds this Deadline: that
        cycle would leave the connection to the cyclic garbage collector."""
        self.when = None
        self._callback = _nothing
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        when = self.when
        if when is None:
            return
        if self._loop.time() < when - 0.001:
            self._handle_when = when
            self._handle = self._loop.call_at(when, self._fire)
            return
        self.when = None
        self._callback()
