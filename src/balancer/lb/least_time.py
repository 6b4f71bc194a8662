"""Least response time (`balance = "least_time"`), NGINX Plus's least_time.

Theory of operation. Each server has an exponentially weighted moving average (EWMA) of its
measured response times. A pick takes the server with the lowest expected wait per unit of
weight, `ewma x (load() + 1) / weight`, load() being the requests in flight from every
worker (Finagle's and Linkerd's "peak EWMA" cost): a slow server loses traffic as soon as it
answers slowly, and a fast one that piles up requests in flight stops looking cheap. With
equal response times this is weighted least connections; ties (no measurement yet, equal
costs) are broken by a weighted rotation as in lb.leastconn.

Feeding it: the proxy calls `observe(server, seconds)` once per answered request with the
time it measured (the access log's response time: request sent to response head received).
Measurements live in a `LatencyStore`, not in the selector, because lb.pool builds a new
selector on every state or weight change and the averages must outlive it. Entries are keyed
by (backend, server name), so they also survive a reload of the same configuration and stay
bounded by the number of configured servers. The module-level `observe` feeds the default
store, which selectors use unless another one is injected (tests inject their own).

A server with no measurement yet (new, or back from down) is costed at the mean of the
measured ones, so it gets a fair share instead of a flood or nothing. A server's average only
moves when it answers requests; a slowed server that has recovered gets requests back once
the others' in-flight counts make them costlier, which happens under load, the only time the
difference matters.
"""

from __future__ import annotations

from typing import Final

from balancer.lb.base import Selector
from balancer.lb.common import weighted_order, weights_of
from balancer.runtime.state import ServerRuntime

DEFAULT_ALPHA = 0.3  # weight of the newest measurement: about 90% of a step change after 6 requests
MIN_SECONDS: Final = 1e-6


class Latency:
    """One server's average response time in seconds; `count` 0 means not measured yet."""

    __slots__ = ("count", "ewma")

    def __init__(self) -> None:
        self.ewma = 0.0
        self.count = 0


class LatencyStore:
    __slots__ = ("_alpha", "_cells")

    def __init__(self, *, alpha: float = DEFAULT_ALPHA) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self._alpha = alpha
        self._cells: dict[tuple[str, str], Latency] = {}

    def cell(self, server: ServerRuntime) -> Latency:
        key = (server.backend_name, server.name)
        cell = self._cells.get(key)
        if cell is None:
            cell = self._cells[key] = Latency()
        return cell

    def observe(self, server: ServerRuntime, seconds: float) -> None:
        # A floor keeps a zero measurement (a clock too coarse) from making a server free.
        seconds = max(seconds, MIN_SECONDS)
        cell = self.cell(server)
        if cell.count:
            cell.ewma += self._alpha * (seconds - cell.ewma)
        else:
            cell.ewma = seconds
        cell.count += 1

    def average(self, server: ServerRuntime) -> float | None:
        """The server's current average, None before its first measurement."""
        cell = self._cells.get((server.backend_name, server.name))
        return cell.ewma if cell is not None and cell.count else None


LATENCIES: Final = LatencyStore()


def observe(server: ServerRuntime, seconds: float) -> None:
    """Record one response time of `server`. The proxy calls this for every answered request
    of a least_time backend (it is cheap enough to call for every backend)."""
    LATENCIES.observe(server, seconds)


class LeastTime(Selector):
    __slots__ = ("_cells", "_inverse", "_measured", "_next", "_order", "_servers", "_store", "_twice")

    def __init__(self, servers: list[ServerRuntime], *, store: LatencyStore | None = None) -> None:
        self._store = store if store is not None else LATENCIES
        self._servers, weights = weights_of(servers)
        cells = [self._store.cell(s) for s in self._servers]
        self._cells = cells
        inverse = [1.0 / w for w in weights]
        # (server, its latency cell, 1 / weight), twice over so a scan from any start is a slice.
        self._twice = list(zip(self._servers, cells, inverse, strict=True)) * 2
        self._inverse = inverse
        self._order = weighted_order(weights)
        self._next = 0
        self._measured = False  # every server has been measured: no default cost needed

    def observe(self, server: ServerRuntime, seconds: float) -> None:
        """Same as the module's `observe`, into this selector's store."""
        self._store.observe(server, seconds)

    def pick(self, key: bytes | None, avoid: ServerRuntime | None) -> ServerRuntime | None:
        servers = self._servers
        n = len(servers)
        if n <= 1:
            return servers[0] if servers else None
        default = 1.0
        if not self._measured:
            known = [c.ewma for c in self._cells if c.count]
            if len(known) == n:
                self._measured = True
            elif known:
                default = sum(known) / len(known)
        order = self._order
        start = order[self._next]
        self._next = (self._next + 1) % len(order)
        best = None
        best_cost = float("inf")
        for server, cell, inverse in self._twice[start : start + n]:
            if server is avoid:
                continue
            cost = (cell.ewma if cell.count else default) * (server.load() + 1) * inverse
            if cost < best_cost:
                best = server
                best_cost = cost
        return best if best is not None else servers[start]
