"""Ketama-style consistent hash ring, with bounded load (`balance = "ring"`).

Theory of operation. Each server owns points on a circle of 2**30 positions: `weight x
points_per_weight` of them, drawn from a hash stream of its name alone (shake_128), so a
server's points never depend on the other servers. A key hashes to a position and belongs to
the first point at or after it, clockwise. Removing a server hands each of its arcs to the
next point's server and moves nothing else: about 1/N of the keys move. A weight change adds
or removes points of that server only.

Balance depends on the number of points: a server with P points gets its share with a
relative standard deviation of about 1/sqrt(P) (5% at the default 400 points for weight
100). That is the price of a ring; Maglev balances to within N/M instead.

Bounded load (Mirrokni, Thorup, Zadimoghaddam 2016; Vimeo, HAProxy's hash-balance-factor):
with `balance_factor` c, a server may take a new request only while it has fewer than
c x (total load + 1) x weight / total weight requests in flight (every worker's); a busy server is skipped
and the key goes on clockwise to the next server with room. A key so sticks to its server
until that server is c times busier than its fair share (c = 1.25 by default; None turns it
off: the hash_type = "consistent" hashing of source/uri/hdr/url_param does that).

Positions are 30 bits: the ring is one stable radix sort of all points (lb/_tables.c; a
sorted() of the same order without a compiler), written straight into two arrays, positions
and server indexes. With per-server points cached, a rebuild of 1,000 servers of weight 100
(400,000 points) takes 7-12 ms on a 2-core VM where the sort into bytes then copied to the
arrays took 18-25 ms; 17-18 ms with every point hashed anew (bench/lb_bench.py; 0.29 s
before the C sort). A pick reads the arrays: about 0.15 µs more than lists, which would
cost 25 ms more per build to fill; a memoryview of a sorted buffer, which would spare the
arrays, costs a pick 20% more.
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from bisect import bisect_left
from functools import lru_cache
from typing import Final

from balancer.lb.base import Selector
from balancer.lb.common import hash_key, server_id, weights_of
from balancer.lb.roundrobin import SmoothWeightedRoundRobin
from balancer.runtime.state import ServerRuntime

try:
    from balancer.lb import _tables  # the sort in C (lb/_tables.c), same ring
except ImportError:  # built without a C compiler (BALANCER_PURE=1): sorted() below
    _tables = None  # type: ignore[assignment]

POSITION_BITS: Final = 30
DEFAULT_POINTS_PER_WEIGHT = 4
DEFAULT_BALANCE_FACTOR = 1.25
_SHIFT: Final = 64 - POSITION_BITS  # a key's 64-bit hash to a position
_POSITION_SHIFT: Final = 32 - POSITION_BITS  # a point's 32-bit draw to its position


@lru_cache(maxsize=4096)
def server_points(identity: bytes, count: int) -> array[int]:
    """The draws of a server's first `count` ring points, 32 bits each: a point's position
    is its draw's top POSITION_BITS bits (shifted where the ring is built, in C, not here
    one int at a time). A prefix of one stream, so adding weight adds points and keeps the
    old ones. (An array: 4 bytes a point in the cache.)"""
    draws = array("I", hashlib.shake_128(b"ring:" + identity).digest(4 * count))
    if sys.byteorder == "big":
        draws.byteswap()  # the stream is read little-endian everywhere
    return draws


class Ring(Selector):
    __slots__ = ("_factor", "_fallback", "_owners", "_positions", "_servers", "_share")

    def __init__(
        self,
        servers: list[ServerRuntime],
        *,
        points_per_weight: int = DEFAULT_POINTS_PER_WEIGHT,
        balance_factor: float | None = DEFAULT_BALANCE_FACTOR,
    ) -> None:
        if balance_factor is not None and balance_factor < 1.0:
            raise ValueError(f"balance_factor must be at least 1, got {balance_factor}")
        self._servers, weights = weights_of(servers)
        # Every point's position and the index of its server, sorted by position. A position
        # two servers share (a 30-bit collision, rare) keeps both points; lookups find the
        # first, in server order: both sorts below are stable.
        each = [
            server_points(server_id(server), weight * points_per_weight)
            for server, weight in zip(self._servers, weights, strict=True)
        ]
        if _tables is not None:
            count = sum(len(mine) for mine in each)
            self._positions = array("I", [0]) * count
            self._owners = array("I", [0]) * count
            _tables.ring_build(each, self._positions, self._owners)
        else:
            points = array("I")
            indexes = array("I")
            for index, draws in enumerate(each):
                points.extend(array("I", [draw >> _POSITION_SHIFT for draw in draws]))
                indexes.extend(array("I", [index]) * len(draws))
            order = sorted(range(len(points)), key=points.__getitem__)
            self._positions = array("I", [points[i] for i in order])
            self._owners = array("I", [indexes[i] for i in order])
        total = sum(weights)
        self._factor = balance_factor
        # A server's capacity is share x (total active + 1): share = c x weight / total weight.
        factor = balance_factor or 0.0
        self._share = {id(s): factor * w / total for s, w in zip(self._servers, weights, strict=True)}
        self._fallback = SmoothWeightedRoundRobin(self._servers, weights=weights)

    def owner(self, key: bytes) -> ServerRuntime | None:
        """The key's server on the ring alone, ignoring load (what consistency is about)."""
        positions = self._positions
        if not positions:
            return None
        index = bisect_left(positions, hash_key(key) >> _SHIFT)
        return self._servers[self._owners[index if index < len(positions) else 0]]

    def pick(self, key: bytes | None, avoid: ServerRuntime | None) -> ServerRuntime | None:
        if key is None:
            return self._fallback.pick(None, avoid)
        owners = self._owners
        if not owners:
            return None
        count = len(owners)
        index = bisect_left(self._positions, hash_key(key) >> _SHIFT)
        if index == count:
            index = 0
        by_index = self._servers
        server = by_index[owners[index]]
        if len(self._servers) == 1:
            return server
        bounded = self._factor is not None
        if server is not avoid and (not bounded or not server.load()):
            return server
        # Walk clockwise: past the server to avoid, and past servers over their bound.
        total = -1
        share = self._share
        first_other = None
        seen: set[int] = set()
        servers = len(self._servers)
        while True:
            if server is not avoid:
                if first_other is None:
                    first_other = server
                if not bounded:
                    return server
                if total < 0:
                    total = sum(s.load() for s in self._servers) + 1
                if server.load() < share[id(server)] * total:
                    return server
            seen.add(id(server))
            if len(seen) == servers:
                # Every server is over its bound or to be avoided (with c >= 1 only the
                # server to avoid can be under it): the first other server clockwise.
                return first_other if first_other is not None else server
            index += 1
            if index == count:
                index = 0
            server = by_index[owners[index]]
