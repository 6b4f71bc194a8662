"""Hashing a request key: `balance = "source" | "uri" | "hdr" | "url_param"`.

The four differ only in what the key is (the client address, the URI, a header's value, a
query parameter: the proxy extracts it as `hash_key` says and passes the bytes to `pick`), so
they share this module. `hash_type` chooses how the hash becomes a server:

- "map" (the default, as in HAProxy): a table where each server appears in proportion to its
  weight, evenly spread (lb.common.weighted_order), indexed by `hash % table length`. Shares
  follow weights exactly and a pick is one list index, but the table length is the total
  weight, so any change of the set or of a weight remaps most keys: with N servers, removing
  one moves about (N - 1)/N of them (test_lb_keyhash.py measures it). Fine for caches that
  can refill; wrong for sticky sessions.
- "consistent": the ketama ring of lb.ring without its load bound: removing one of N servers
  moves only the keys it had, about 1/N.

A request without a key (the header is missing, say) is spread by weighted round robin.
On a retry (`avoid`) the key goes to the next server of the table or ring, so the second
choice is stable too.
"""

from __future__ import annotations

from typing import Literal

from balancer.lb.base import Selector
from balancer.lb.common import hash_key, weighted_order, weights_of
from balancer.lb.ring import Ring
from balancer.lb.roundrobin import SmoothWeightedRoundRobin
from balancer.runtime.state import ServerRuntime

HashType = Literal["map", "consistent"]


class KeyHash(Selector):
    __slots__ = ("_fallback", "_ring", "_servers", "_table")

    def __init__(self, servers: list[ServerRuntime], *, hash_type: HashType = "map") -> None:
        if hash_type not in ("map", "consistent"):
            raise ValueError(f"hash_type must be 'map' or 'consistent', got {hash_type!r}")
        self._servers, weights = weights_of(servers)
        self._ring = Ring(self._servers, balance_factor=None) if hash_type == "consistent" else None
        self._table = [] if self._ring else [self._servers[i] for i in weighted_order(weights)]
        self._fallback = SmoothWeightedRoundRobin(self._servers, weights=weights)

    def pick(self, key: bytes | None, avoid: ServerRuntime | None) -> ServerRuntime | None:
        if key is None:
            return self._fallback.pick(None, avoid)
        if self._ring is not None:
            return self._ring.pick(key, avoid)
        table = self._table
        if not table:
            return None
        length = len(table)
        index = hash_key(key) % length
        server = table[index]
        if server is avoid and len(self._servers) > 1:
            while server is avoid:
                index += 1
                if index == length:
                    index = 0
                server = table[index]
        return server
