"""A cheap, lazily re-armed timeout per connection.

Moving a deadline happens on every read and write; cancelling and re-creating a timer
each time would dominate the hot path. A Deadline keeps only a float for the current
deadline and the tick it is filed under: when its tick comes early it files itself again
for the deadline that is current now, and when it comes late enough it calls back.

Deadlines do not each hold a loop timer: they are filed by TICK-wide slot in their loop's
Wheel, which keeps one loop timer for its earliest slot. Creating and cancelling a loop
timer for every connection (uvloop: a TimerHandle, a libuv timer, its close callback) was
about 7% of the instructions of a connection with one request (bench/conn_cost.py); a
slot is a list append, shared by every connection whose deadline falls in the same TICK.
A deadline so fires up to TICK late, never early. A cancelled deadline stays in its slot
(a list entry, its callback dropped) until the slot comes, then is skipped.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable
from typing import Final

log = logging.getLogger("balancer.net")

# Width of a slot in seconds: how late a deadline may fire, and how many deadlines share
# a loop timer (those falling in the same slot).
TICK: Final = 0.01
# A slot fired this early still counts as due (timers may run a little ahead of their time).
EARLY: Final = 0.001


def _nothing() -> None:
    pass


# The callback of a cancelled deadline, named by a Final: compiled, a module's function
# used as a value is a dictionary lookup at each use, a Final a static.
NOTHING: Final = _nothing


class Wheel:
    """The deadlines of one event loop, by slot (`int(when / TICK) + 1`), and the one loop
    timer of the earliest slot."""

    __slots__ = ("_handle", "_handle_slot", "_slots", "_times", "loop", "time")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # The loop's clock, bound once per loop: a method looked up at each call costs more
        # than the call, and binding it per connection costs an attribute lookup each.
        self.time: Callable[[], float] = loop.time
        self._slots: dict[int, list[Deadline]] = {}
        self._times: list[int] = []  # heap of the slots in _slots
        self._handle: asyncio.TimerHandle | None = None
        self._handle_slot = 0  # the slot the loop timer is armed for; 0: none

    def file(self, deadline: Deadline, when: float) -> int:
        """File `deadline` under the slot that ends at or after `when`; that slot."""
        slot = int(when / TICK) + 1
        filed = self._slots.get(slot)
        if filed is not None:
            filed.append(deadline)
            return slot
        self._slots[slot] = [deadline]
        heapq.heappush(self._times, slot)
        if self._handle_slot == 0 or slot < self._handle_slot:
            self._arm(slot)
        return slot

    def _arm(self, slot: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle_slot = slot
        self._handle = self.loop.call_at(slot * TICK, self._run)

    def _run(self) -> None:
        # Not `self._handle = None`: compiled, the attribute would stay narrowed to None
        # below, though filing deadlines again may arm a new timer.
        self._handle_slot = 0
        now = self.loop.time()
        # The slots that have ended (a slot ends at slot * TICK). A deadline filed again
        # below is not due, so it goes to a later slot than these: the loop ends.
        due = int((now + EARLY) / TICK)
        times = self._times
        while times and times[0] <= due:
            slot = heapq.heappop(times)
            for deadline in self._slots.pop(slot):
                if deadline.slot == slot:
                    try:
                        deadline.expire(now)
                    except Exception:
                        # One connection's failing timeout must not cost the others in
                        # this slot theirs, nor leave the wheel without its loop timer.
                        log.exception("a connection's timeout failed")
        # Expired deadlines filed again may have armed a later slot than one already filed.
        if times and (self._handle_slot == 0 or times[0] < self._handle_slot):
            self._arm(times[0])


class _LastWheel:
    """The wheel of the loop that made the last Deadline: nearly always the worker's one
    loop. Held in an object named by a Final, not in a module global: compiled, a global
    is a dictionary lookup at each read."""

    __slots__ = ("wheel",)

    def __init__(self) -> None:
        self.wheel: Wheel | None = None


_LAST: Final = _LastWheel()


def wheel_of(loop: asyncio.AbstractEventLoop) -> Wheel:
    wheel = _LAST.wheel
    if wheel is None or wheel.loop is not loop:
        wheel = _LAST.wheel = Wheel(loop)
    return wheel


class Deadline:
    __slots__ = ("_callback", "_wheel", "slot", "when")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._wheel = wheel_of(loop)
        self._callback = callback
        self.slot = 0  # the slot this deadline is filed under; 0: none
        # The loop time it is due; 0.0 when not set (a loop's clock is past 0 and a delay
        # is more than 0). A float, not None: compiled, a float attribute is not an object.
        self.when = 0.0

    def set(self, delay: float, now: float = -1.0) -> None:
        """Call back `delay` seconds from now unless moved or cleared before; 0 disables.
        `now` is the loop time when the caller has it at hand, else it is read here."""
        if delay <= 0:
            self.when = 0.0
            return
        when = (now if now >= 0 else self._wheel.time()) + delay
        self.when = when
        slot = self.slot
        # Filed already under a slot that comes no later than this deadline's: it will
        # look again then (expire).
        if slot == 0 or int(when / TICK) + 1 < slot:
            self.slot = self._wheel.file(self, when)

    def loop_time(self) -> float:
        """The loop's clock now, for the deadline's owner: a compiled call to the clock bound
        once per loop, where `loop.time()` looks the method up at each call."""
        return self._wheel.time()

    def clear(self) -> None:
        self.when = 0.0

    def cancel(self) -> None:
        """Clear and drop the callback: for a connection that is gone. The callback is
        mostly a method of the connection, which holds this Deadline: that cycle would
        leave the connection to the cyclic garbage collector, and the wheel would keep the
        connection until the slot comes."""
        self.when = 0.0
        self.slot = 0
        self._callback = NOTHING

    def expire(self, now: float) -> None:
        """Its slot came (loop time `now`): call back, or file again if it moved later."""
        self.slot = 0
        when = self.when
        if when == 0.0:
            return
        if now < when - EARLY:
            self.slot = self._wheel.file(self, when)
            return
        self.when = 0.0
        self._callback()
