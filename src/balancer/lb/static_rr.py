"""Static weighted round robin (HAProxy's static-rr).

The whole cycle is laid out once at build time, spread out the smooth way, and picks walk
it with an index: constant time per pick whatever the number of servers. Weights only
change when the selector is rebuilt.
"""

from __future__ import annotations

from math import gcd
from typing import Final

from balancer.lb.base import Selector
from balancer.lb.roundrobin import SmoothWeightedRoundRobin
from balancer.runtime.state import ServerRuntime

# A cycle longer than this is cut: weights are at most 256, so this only bounds memory
# for very many servers; the shares stay right to within one slot per server.
_MAX_CYCLE: Final = 65536


class StaticRoundRobin(Selector):
    __slots__ = ("_cycle", "_next")

    def __init__(self, servers: list[ServerRuntime]) -> None:
        divisor = 0
        for server in servers:
            divisor = gcd(divisor, server.weight)
        length = sum(s.weight for s in servers) // divisor if divisor else 0
        smooth = SmoothWeightedRoundRobin(servers)
        self._cycle = [smooth.pick(None, None) for _ in range(min(length, _MAX_CYCLE))]
        self._next = 0

    def pick(self, key: bytes | None, avoid: ServerRuntime | None) -> ServerRuntime | None:
        cycle = self._cycle
        if not cycle:
            return None
        for _ in range(len(cycle)):
            server = cycle[self._next]
            self._next = (self._next + 1) % len(cycle)
            if server is not avoid:
                return server
        return server
