"""Maglev consistent hashing (Eisenbud et al., NSDI 2016), with weights.

Theory of operation. A lookup table of M slots (M prime, 65537 by default) maps a key's hash
to a server: `table[hash(key) % M]`, one list index per pick. Each server has its own
preference list of slots, a permutation of 0..M-1 derived from its name alone:
`offset = h1(name) % M`, `skip = h2(name) % (M - 1) + 1`, preference j is
`(offset + j * skip) % M` (M prime makes every skip generate all slots). The table is filled
in turns: at each turn a server takes its most preferred slot still empty. With equal
weights servers take turns in order and each ends with floor(M/N) or ceil(M/N) slots, so the
imbalance is below N/M (under 0.2% for N = 100 at M = 65537).

Weights: proportional turns. Each round every server earns credit equal to its weight and
takes one turn per `max weight` of credit held, so slot counts follow weights to within one
slot per server.

Disruption: preference lists do not depend on the other servers, so when one server goes,
the slots it held are refilled by the survivors' next preferences and only a few other slots
change hands (the paper's "minimal disruption": in our test, removing 1 of 100 servers moves
the removed server's 1% plus well under 0.2% of keys).

The table depends only on the set of (name, weight): lb.pool rebuilds it on every change and
swaps it in whole. Building costs about M ln M probes of a tight Python loop, a few tens of
milliseconds for M = 65537 whatever N is (bench/lb_bench.py prints it).
"""

from __future__ import annotations

from math import isqrt

from balancer.lb.common import hash_key, id_hash, is_prime, server_id, weights_of
from balancer.lb.roundrobin import SmoothWeightedRoundRobin
from balancer.runtime.state import ServerRuntime

DEFAULT_TABLE_SIZE = 65537
_SALT = b"maglev"


def build_table(identities: list[bytes], weights: list[int], size: int = DEFAULT_TABLE_SIZE) -> list[int]:
    """The Maglev lookup table: for each of `size` slots, the index of its server.

    `identities` are the servers' stable names, `weights` positive integers; `size` must be
    a prime larger than the number of servers. Deterministic: same inputs, same table.
    """
    n = len(identities)
    if n == 0:
        return []
    if not is_prime(size) or size <= n:
        raise ValueError(f"Maglev table size must be a prime larger than the number of servers, got {size}")
    offsets = []
    skips = []
    for identity in identities:
        h1, h2 = id_hash(identity, _SALT)
        offsets.append(h1 % size)
        skips.append(h2 % (size - 1) + 1)
    positions = list(offsets)  # the slot each server filled last (its offset to start with)
    table = [-1] * size
    heaviest = max(weights)
    credits = [0] * n
    equal = all(w == heaviest for w in weights)
    filled = 0
    # Probing finds an empty slot in about size / empty steps, so the last few hundred slots
    # would cost half of all probes. From there on the empty slots are listed instead and each
    # server takes the one that comes first in its preference list: slot e is preference
    # (e - offset) / skip (mod size), and all slots it preferred more are already filled,
    # so this is exactly the slot probing would reach.
    switch = size - max(1, isqrt(size))
    empty: list[int] = []
    inverses: list[int] = []
    while True:
        for i in range(n):
            if not equal:
                credit = credits[i] + weights[i]
                if credit < heaviest:
                    credits[i] = credit
                    continue
                credits[i] = credit - heaviest  # weights <= heaviest: one turn at most
            if filled < switch:
                c = positions[i]
                skip = skips[i]
                # Its previous slot is filled (by itself), so the first probe always moves on.
                while table[c] >= 0:
                    c += skip
                    if c >= size:
                        c -= size
                positions[i] = c
            else:
                if not empty:
                    empty = [slot for slot, owner in enumerate(table) if owner < 0]
                    inverses = [pow(skip, -1, size) for skip in skips]
                offset = offsets[i]
                inverse = inverses[i]
                ranks = [(e - offset) * inverse % size for e in empty]
                c = empty.pop(ranks.index(min(ranks)))
            table[c] = i
            filled += 1
            if filled == size:
                return table


class Maglev:
    __slots__ = ("_fallback", "_lookup", "_servers", "_size")

    def __init__(self, servers: list[ServerRuntime], *, table_size: int = DEFAULT_TABLE_SIZE) -> None:
        self._servers, weights = weights_of(servers)
        self._size = table_size
        table = build_table([server_id(s) for s in self._servers], weights, table_size)
        self._lookup = [self._servers[i] for i in table]
        # Requests without a key (none could be extracted) are spread by weight.
        self._fallback = SmoothWeightedRoundRobin(self._servers, weights=weights)

    def slot_counts(self) -> dict[str, int]:
        """How many table slots each server holds, by name (for tests and the stats page)."""
        counts = dict.fromkeys((s.name for s in self._servers), 0)
        for server in self._lookup:
            counts[server.name] += 1
        return counts

    def pick(self, key: bytes | None, avoid: ServerRuntime | None) -> ServerRuntime | None:
        if key is None:
            return self._fallback.pick(None, avoid)
        lookup = self._lookup
        if not lookup:
            return None
        size = self._size
        slot = hash_key(key) % size
        server = lookup[slot]
        if server is avoid and len(self._servers) > 1:
            # A retry: the next slots of the table, a stable second choice for this key.
            while server is avoid:
                slot += 1
                if slot == size:
                    slot = 0
                server = lookup[slot]
        return server
