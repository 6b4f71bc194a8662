"""Weighted least connections (HAProxy's leastconn).

A pick takes the server with the fewest requests in flight per unit of weight
(`load() / weight`). The proxy counts them itself, in every worker of the node
(ServerRuntime.load sums the workers' counts), so a server that answers slowly holds more
requests in flight and gets fewer new ones: that is the whole feedback loop.

Ties, frequent when the backend is idle (every server at 0), are broken by where the scan
starts: each pick starts at the next position of a weighted, evenly spread order of the
servers (lb.common.weighted_order), and the first server with the lowest load from there
wins. So an idle backend is served in weighted round robin, a loaded one by load.

A pick scans every server, O(N): the load changes outside the selector on every request and
response, so there is no index to keep sorted. At a few hundred servers this is still a few
microseconds.
"""

from __future__ import annotations

from balancer.lb.base import Selector
from balancer.lb.common import weighted_order, weights_of
from balancer.runtime.state import ServerRuntime


class LeastConnections(Selector):
    __slots__ = ("_inverse", "_next", "_order", "_servers", "_twice", "_twice_inverse")

    def __init__(self, servers: list[ServerRuntime]) -> None:
        self._servers, weights = weights_of(servers)
        self._inverse = [1.0 / w for w in weights]
        # The servers twice over, so a scan from any start is one slice.
        self._twice = self._servers * 2
        self._twice_inverse = self._inverse * 2
        self._order = weighted_order(weights)
        self._next = 0

    def pick(self, key: bytes | None, avoid: ServerRuntime | None) -> ServerRuntime | None:
        servers = self._servers
        n = len(servers)
        if n <= 1:
            return servers[0] if servers else None
        order = self._order
        start = order[self._next]
        self._next = (self._next + 1) % len(order)
        best = None
        best_load = float("inf")
        end = start + n
        for server, inverse in zip(self._twice[start:end], self._twice_inverse[start:end], strict=True):
            if server is avoid:
                continue
            load = server.load() * inverse
            if load < best_load:
                best = server
                best_load = load
                if not load:
                    break
        return best if best is not None else servers[start]
