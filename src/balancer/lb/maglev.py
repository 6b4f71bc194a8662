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
takes one turn per `max weight` of credit held, so slot counts follow weights to within a
couple of slots per server.

Disruption. Preference lists do not depend on the other servers, but the turns do: when one
server goes, the others take its slots at earlier turns and their later choices shift. The
paper's table (`build_table`) moves, on removing 1 of N servers at M = 65537, about 1.02/N of
the keys for N = 10, 1.23/N for N = 50, 1.55/N for N = 100 and 6.7/N for N = 1,000
(test_lb_maglev.py measures it; the paper notes that larger M reduces it).

Stable tables (the default, `stable=True`) take that down to the removed server's own slots,
exactly 1/N, with the same balance. The full table built for a backend is remembered (per
backend name and M, one table each). While the usable servers are a subset of that table's
servers with the same weights (servers down, in maint or drained), the table is derived from
it instead of built afresh: surviving servers keep every slot they had, and the slots of the
missing ones are dealt to the survivors in Maglev's way: they take turns, each taking its
most preferred freed slot, until each has its weighted share of M again. When everybody is
back, the remembered table itself is used again. A server not in it, a weight change, or more
than an eighth of the slots freed builds a fresh table (remembered when it has a new server
or weight). The price: a table is a function of the current set and of the last fresh build,
so two workers that saw different histories may disagree on a few keys during an outage; the
kernel data plane and tests that need a pure function of the set use `stable=False`.

The table is swapped in whole: lb.pool builds a new selector on every change. Building costs
about M ln M probes, the last sqrt(M) slots found by rank instead (see _fill). The loop runs
in C (lb/_tables.c, the same table; `_fill` below is its reference and the fallback of a
build without a compiler): under 2 ms for N = 1,000 at M = 65537, hashing included (a
quarter of it), against 10.6 ms compiled by mypyc and about 60 ms interpreted
(bench/lb_bench.py; bench/README.md has the figures by machine).
"""

from __future__ import annotations

import hashlib
from array import array
from math import isqrt
from typing import Final

from balancer.lb.base import Selector
from balancer.lb.common import hash_key, is_prime, server_id, weights_of
from balancer.lb.roundrobin import SmoothWeightedRoundRobin
from balancer.runtime.state import ServerRuntime

try:
    from balancer.lb import _tables  # the fill loop in C (lb/_tables.c), same table
except ImportError:  # built without a C compiler (BALANCER_PURE=1): the loop below
    _tables = None  # type: ignore[assignment]

DEFAULT_TABLE_SIZE = 65537
_SALT = b"maglev"


# Two 64-bit hashes of a server's name: blake2b personalised with _SALT, the salted state
# made once (a copy per server is cheaper than a new hash object; a table of 1,000 servers
# hashes 1,000 names, a quarter of its build).
_SALTED: Final = hashlib.blake2b(digest_size=16, person=_SALT)
_LOW64: Final = (1 << 64) - 1


def _digest(identity: bytes) -> bytes:
    """A server's 16-byte digest: its offset and skip are its two 64-bit halves mod size."""
    state = _SALTED.copy()
    state.update(identity)
    return state.digest()


def _offset_and_skip(digest: bytes, size: int) -> tuple[int, int]:
    both = int.from_bytes(digest, "little")
    return (both & _LOW64) % size, (both >> 64) % (size - 1) + 1


def preferences(identity: bytes, size: int) -> tuple[int, int]:
    """A server's (offset, skip): its preference j is slot (offset + j * skip) % size."""
    return _offset_and_skip(_digest(identity), size)


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
    digests = [_digest(identity) for identity in identities]
    if _tables is not None and all(w > 0 for w in weights):
        # The digests whole: C splits them (int.from_bytes and two mods per server in
        # Python are as much as the hashing, 0.45 ms for 1,000 servers).
        return _tables.maglev_fill(b"".join(digests), weights, size)
    pairs = [_offset_and_skip(digest, size) for digest in digests]
    return _fill([offset for offset, _ in pairs], [skip for _, skip in pairs], weights, size)


def _fill(offsets: list[int], skips: list[int], weights: list[int], size: int) -> list[int]:
    """build_table's loop in Python: the reference for lb/_tables.c and its fallback."""
    n = len(offsets)
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
                # Its previous slot is filled (by itself), so the first probe always moves on.
                c = positions[i] = _next_free(table, positions[i], skips[i], size)
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


def _next_free(table: list[int], slot: int, skip: int, size: int) -> int:
    """The first free (-1) slot of `table` from `slot` on, by steps of `skip` (mod `size`):
    the next slot of a server's permutation that nobody holds. There must be one."""
    while table[slot] >= 0:
        slot += skip
        if slot >= size:
            slot -= size
    return slot


class _Remembered:
    """The last fresh table of a backend, kept to derive tables of its subsets."""

    __slots__ = ("identities", "table", "weights")

    def __init__(self, identities: list[bytes], weights: list[int], table: list[int]) -> None:
        self.identities = identities
        self.weights = dict(zip(identities, weights, strict=True))
        self.table = array("i", table)


# (backend name, table size) -> its last fresh table. One entry per backend of the config.
_REMEMBERED: Final[dict[tuple[str, int], _Remembered]] = {}
# Derive only when at most this share of the slots is freed: past it the survivors' extra
# slots would cost more to deal than a fresh build, and an outage that large is a new normal.
_MAX_FREED_SHARE: Final = 8


def forget_tables() -> None:
    """Drop every remembered table (tests; a fresh build follows)."""
    _REMEMBERED.clear()


def stable_table(
    backend: str, identities: list[bytes], weights: list[int], size: int = DEFAULT_TABLE_SIZE
) -> list[int]:
    """The table for these servers, derived from the backend's remembered table when they are
    a subset of its servers with the same weights (see the module's "Stable tables")."""
    key = (backend, size)
    remembered = _REMEMBERED.get(key)
    if remembered is not None and all(
        remembered.weights.get(identity) == weight for identity, weight in zip(identities, weights, strict=True)
    ):
        index = {identity: i for i, identity in enumerate(identities)}
        mapping = [index.get(identity, -1) for identity in remembered.identities]
        table = [mapping[owner] for owner in remembered.table]
        if len(identities) == len(remembered.identities):
            return table
        freed = [slot for slot, owner in enumerate(table) if owner < 0]
        if len(freed) * _MAX_FREED_SHARE <= size:
            _deal(table, freed, identities, weights, size)
            return table
        return build_table(identities, weights, size)
    table = build_table(identities, weights, size)
    if identities:
        _REMEMBERED[key] = _Remembered(list(identities), list(weights), table)
    return table


def _deal(table: list[int], freed: list[int], identities: list[bytes], weights: list[int], size: int) -> None:
    """Hand the `freed` slots of `table` (-1 there) to the servers, in turns, each taking its
    most preferred freed slot, until each server holds its weighted share of `size`."""
    n = len(identities)
    held = [0] * n
    for owner in table:
        if owner >= 0:
            held[owner] = held[owner] + 1  # `x[i] += 1` is a generic call, compiled
    # Weighted shares of `size`, largest remainder first: they add up to `size` exactly.
    total = sum(weights)
    shares = [size * w // total for w in weights]
    by_remainder = sorted(range(n), key=lambda i: (-(size * weights[i] % total), i))
    for i in by_remainder[: size - sum(shares)]:
        shares[i] = shares[i] + 1
    wanting = [i for i in range(n) if shares[i] > held[i]]
    needs = [shares[i] - held[i] for i in wanting]
    positions = [0] * len(wanting)
    skips = [0] * len(wanting)
    for j, i in enumerate(wanting):
        positions[j], skips[j] = preferences(identities[i], size)
    if _tables is not None:
        _tables.maglev_deal(table, wanting, needs, positions, skips)
    else:
        _walk(table, wanting, needs, positions, skips)
    # Shares add up to `size`, so wanting servers cover every freed slot; this is a guard.
    for slot in freed:
        if table[slot] < 0:
            table[slot] = slot % n


def _walk(table: list[int], wanting: list[int], needs: list[int], positions: list[int], skips: list[int]) -> None:
    """_deal's turns, in Python: the reference for lb/_tables.c's maglev_deal and its fallback.

    Server `wanting[j]` takes `needs[j]` free (-1) slots of `table`, in turns with the others.
    Its most preferred free slot is the first one along its own permutation (positions[j],
    + skips[j], ... mod size): the order of the fill, walked rather than sorted by rank. A
    walk stands on the slot it took last, which is no longer free."""
    size = len(table)
    left = table.count(-1)
    active = list(range(len(wanting)))
    while left and active:
        for j in active:
            slot = _next_free(table, positions[j], skips[j], size)
            table[slot] = wanting[j]
            positions[j] = slot
            needs[j] = needs[j] - 1
            left -= 1
            if not left:
                return
        active = [j for j in active if needs[j] > 0]


class Maglev(Selector):
    __slots__ = ("_fallback", "_lookup", "_servers", "_size")

    def __init__(
        self, servers: list[ServerRuntime], *, table_size: int = DEFAULT_TABLE_SIZE, stable: bool = True
    ) -> None:
        self._servers, weights = weights_of(servers)
        self._size = table_size
        identities = [server_id(s) for s in self._servers]
        if not is_prime(table_size) or table_size <= len(identities):
            raise ValueError(f"Maglev table size must be a prime larger than the number of servers, got {table_size}")
        if stable and self._servers:
            table = stable_table(self._servers[0].backend_name, identities, weights, table_size)
        else:
            table = build_table(identities, weights, table_size)
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
