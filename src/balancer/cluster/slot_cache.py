"""The slot tables of an L4 node's likely next health states, computed before they are needed.

A health change must reach the kernel fast (issue 14: one L7 node's update within 50 ms),
and building a plain Maglev table of 65537 slots is most of that time when done on the spot
(about 25 ms interpreted, 8 ms compiled). The next usable set is almost always the current
one with one node more or one node less, so after every change (once changes pause) a background thread computes
those tables (at most one per node of the table) and keeps them; the change itself then only
diffs two lists and talks to nft.

A table is a pure function of the file and the usable set (balancer.cluster.l4.compute_slots),
so a cached table is exactly the one the change would have computed: the cache changes when
the work is done, never what it yields. Memory: a few tables of `table_size` ints per [[l4]].

Threads: `get` may run in the caller's thread while the warmer computes; a table being
computed by one is waited for by the other instead of computed twice (which would halve
both under the GIL).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

# (table index, usable node names) -> the mark of each slot.
Key = tuple[int, frozenset[str]]
Compute = Callable[[int, frozenset[str]], list[int]]

WARM_DELAY = 0.25  # seconds without a change before the next tables are computed
WAIT_SECONDS = 10.0  # bound on waiting for the other thread's computation of the same table


class SlotCache:
    def __init__(self, compute: Compute, limit: int, delay: float = WARM_DELAY) -> None:
        """`compute(table_index, usable)` builds a table; at most `limit` tables are kept
        (least recently used dropped first); warmers start `delay` seconds after a change."""
        self.compute = compute
        self.delay = delay
        self.limit = limit
        self.lock = threading.Lock()
        self.tables: OrderedDict[Key, list[int]] = OrderedDict()
        self.pending: dict[Key, threading.Event] = {}
        # Per table index, the running warmer's stop signal (set by the next warm(), quiet()
        # and stop()).
        self.cancels: dict[int, threading.Event] = {}
        self.warmers: dict[int, threading.Thread] = {}
        self.hits = 0
        self.misses = 0

    def get(self, table_index: int, usable: frozenset[str]) -> list[int]:
        """The table for `usable`: kept, being computed by another thread (waited for), or
        computed here. The returned list is shared: callers must not modify it."""
        key = (table_index, usable)
        for _ in range(3):  # bounded: a vanished computation is retried, then done here
            with self.lock:
                table = self.tables.get(key)
                if table is not None:
                    self.tables.move_to_end(key)
                    self.hits += 1
                    return table
                event = self.pending.get(key)
                if event is None:
                    event = self.pending[key] = threading.Event()
                    break
            event.wait(WAIT_SECONDS)
        else:
            return self.compute(table_index, usable)
        self.misses += 1
        try:
            table = self.compute(table_index, usable)
            with self.lock:
                self.tables[key] = table
                while len(self.tables) > self.limit:
                    self.tables.popitem(last=False)
        finally:
            with self.lock:
                self.pending.pop(key, None)
            event.set()
        return table

    def warm(self, table_index: int, usable: frozenset[str], names: list[str]) -> threading.Thread:
        """Start computing, in a daemon thread, the tables one health change away from
        `usable` (each of `names` added or removed), after WARM_DELAY without another change
        of that table: changes in a burst (a flap, several nodes failing at once) are not
        slowed by a warmer computing beside them. A later warm(), quiet() or stop() of the
        table ends it early."""
        cancel = threading.Event()
        with self.lock:
            previous = self.cancels.get(table_index)
            self.cancels[table_index] = cancel
        if previous is not None:
            previous.set()
        neighbours = [usable - {name} if name in usable else usable | {name} for name in names]
        thread = threading.Thread(
            target=self._warm, args=(cancel, table_index, neighbours), name="l4-slot-warm", daemon=True
        )
        self.warmers[table_index] = thread
        thread.start()
        return thread

    def settle(self, timeout: float) -> bool:
        """Wait (at most `timeout` seconds in all) for the warmers to finish; True if they
        did. For benches and tests that measure a change with its tables ready."""
        deadline = time.monotonic() + timeout
        for thread in list(self.warmers.values()):
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self.warmers.values())

    def quiet(self, table_index: int) -> None:
        """Make the warmer of `table_index` quit (after its current table, if computing one):
        a change is being applied, and a warmer computing beside it would halve its speed
        under the GIL."""
        with self.lock:
            cancel = self.cancels.get(table_index)
        if cancel is not None:
            cancel.set()

    def _warm(self, cancel: threading.Event, table_index: int, neighbours: list[frozenset[str]]) -> None:
        if cancel.wait(self.delay):
            return
        for usable in neighbours:
            if cancel.is_set():
                return
            self.get(table_index, usable)

    def stop(self) -> None:
        """Make any running warmer quit after its current table."""
        with self.lock:
            cancels = list(self.cancels.values())
        for cancel in cancels:
            cancel.set()
