"""Least traffic (`balance = "least_traffic"`): fewest bytes over the last window.

Theory of operation. For each server a `TrafficStore` counts the bytes it moved (both
directions) in a sliding window, `window` seconds (10 by default) cut into `buckets` buckets
that expire one at a time, so the window slides in steps of window/buckets. A pick takes
the server with the lowest expected traffic per unit of weight:

    (bytes in window + active x mean bytes per request) / weight

The second term counts what the requests in flight are about to move: bytes are only known
once they flow, and without it every new request would go to the same quiet server until its
counters catch up. The mean is the backend's bytes per pick over the window. With requests
of equal size this gives weighted shares; heavy ones (downloads) push their server back.
Ties (an idle backend) are broken by a weighted rotation as in lb.leastconn.

Feeding it: the proxy calls `observe_bytes(server, n)` as bytes flow to or from a server,
per read or per finished request (the L4 relay per read, so long connections count while
they last). Counters live in the store, not in the selector, so they outlive the selector
rebuilds of lb.pool; they are keyed by (backend, server name). The clock is injected into
the store (tests drive time by hand); the module-level `observe_bytes` feeds the default
store, which selectors use unless given another.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from balancer.lb.base import Selector
from balancer.lb.common import weighted_order, weights_of
from balancer.runtime.state import ServerRuntime

DEFAULT_WINDOW = 10.0
DEFAULT_BUCKETS = 10


class Traffic:
    """One server's bytes and picks per bucket of the window, and their running totals."""

    __slots__ = ("bucket", "bytes", "picks", "total_bytes", "total_picks")

    def __init__(self, buckets: int, now: int) -> None:
        self.bytes = [0] * buckets
        self.picks = [0] * buckets
        self.total_bytes = 0
        self.total_picks = 0
        self.bucket = now  # the bucket the counters were last moved to


class TrafficStore:
    __slots__ = ("_buckets", "_cells", "_clock", "_width")

    def __init__(
        self,
        *,
        window: float = DEFAULT_WINDOW,
        buckets: int = DEFAULT_BUCKETS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window <= 0 or buckets < 1:
            raise ValueError("window must be positive and buckets at least 1")
        self._width = window / buckets
        self._buckets = buckets
        self._clock = clock
        self._cells: dict[tuple[str, str], Traffic] = {}

    def now(self) -> int:
        """The current bucket number."""
        return int(self._clock() // self._width)

    def cell(self, server: ServerRuntime) -> Traffic:
        key = (server.backend_name, server.name)
        cell = self._cells.get(key)
        if cell is None:
            cell = self._cells[key] = Traffic(self._buckets, self.now())
        return cell

    def advance(self, cell: Traffic, now: int) -> None:
        """Expire the buckets that left the window since the cell was last touched."""
        last = cell.bucket
        if now <= last:
            return
        size = self._buckets
        if now - last >= size:
            cell.bytes = [0] * size
            cell.picks = [0] * size
            cell.total_bytes = cell.total_picks = 0
        else:
            counts = cell.bytes
            picks = cell.picks
            for bucket in range(last + 1, now + 1):
                slot = bucket % size
                cell.total_bytes -= counts[slot]
                cell.total_picks -= picks[slot]
                counts[slot] = picks[slot] = 0
        cell.bucket = now

    def observe_bytes(self, server: ServerRuntime, n: int) -> None:
        cell = self.cell(server)
        now = self.now()
        if now != cell.bucket:
            self.advance(cell, now)
        slot = now % self._buckets
        cell.bytes[slot] = cell.bytes[slot] + n  # `x[i] += n` is a generic call, compiled
        cell.total_bytes += n

    def count_pick(self, cell: Traffic, now: int) -> None:
        slot = now % self._buckets
        cell.picks[slot] = cell.picks[slot] + 1
        cell.total_picks += 1

    def window_bytes(self, server: ServerRuntime) -> int:
        """Bytes `server` moved within the window."""
        cell = self.cell(server)
        self.advance(cell, self.now())
        return cell.total_bytes


TRAFFIC: Final = TrafficStore()


def observe_bytes(server: ServerRuntime, n: int) -> None:
    """Record `n` bytes moved to or from `server`. The proxy calls this as traffic flows."""
    TRAFFIC.observe_bytes(server, n)


class LeastTraffic(Selector):
    __slots__ = ("_cells", "_next", "_order", "_servers", "_store", "_twice")

    def __init__(self, servers: list[ServerRuntime], *, store: TrafficStore | None = None) -> None:
        self._store = store if store is not None else TRAFFIC
        self._servers, weights = weights_of(servers)
        self._cells = [self._store.cell(s) for s in self._servers]
        # (server, its traffic cell, 1 / weight), twice over so a scan from any start is a slice.
        self._twice = list(zip(self._servers, self._cells, [1.0 / w for w in weights], strict=True)) * 2
        self._order = weighted_order(weights)
        self._next = 0

    def observe_bytes(self, server: ServerRuntime, n: int) -> None:
        """Same as the module's `observe_bytes`, into this selector's store."""
        self._store.observe_bytes(server, n)

    def pick(self, key: bytes | None, avoid: ServerRuntime | None) -> ServerRuntime | None:
        servers = self._servers
        n = len(servers)
        if n == 0:
            return None
        store = self._store
        now = store.now()
        total_bytes = 0
        total_picks = 0
        for cell in self._cells:
            if cell.bucket != now:
                store.advance(cell, now)
            total_bytes += cell.total_bytes
            total_picks += cell.total_picks
        mean = total_bytes / total_picks if total_picks else 0.0
        best = None
        best_index = 0
        if n == 1:
            best = servers[0]
        else:
            order = self._order
            start = order[self._next]
            self._next = (self._next + 1) % len(order)
            best_cost = float("inf")
            for index, (server, cell, inverse) in enumerate(self._twice[start : start + n], start):
                if server is avoid:
                    continue
                cost = (cell.total_bytes + server.load() * mean) * inverse
                if cost < best_cost:
                    best = server
                    best_index = index
                    best_cost = cost
            if best is None:
                best = servers[start]
                best_index = start
        store.count_pick(self._cells[best_index % n], now)
        return best
