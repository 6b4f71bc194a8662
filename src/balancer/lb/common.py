"""What several algorithms share: a stable key hash, server identities, weights and a
weighted order for spreading ties.

Hashes here must give the same answer in every process, on every run and after a reload
(workers of one balancer, and later the kernel data plane, have to agree on a key's server),
so Python's randomized `hash()` is never used. Request keys are hashed on every pick and use
crc32 (C, about 50 ns) spread over 64 bits by a Fibonacci multiply; server identities are
hashed only when a table is built and use blake2b/shake, whose bits are all independent.
"""

from __future__ import annotations

from math import gcd
from typing import Final
from zlib import crc32

from balancer.runtime.state import ServerRuntime

MASK64: Final = (1 << 64) - 1
_GOLDEN: Final = 0x9E3779B97F4A7C15  # 2**64 / golden ratio, odd: multiplying by it is a bijection mod 2**64

# Longest weighted order built for tie-breaking and map-based hashing. Weights are at most
# 256, so this only bounds memory and build time for very many servers with uneven weights;
# shares stay right to within one slot per server.
MAX_ORDER = 65536


def hash_key(key: bytes) -> int:
    """A stable 64-bit hash of a request key (source address, URI, header value...)."""
    return (crc32(key) * _GOLDEN) & MASK64


def server_id(server: ServerRuntime) -> bytes:
    """What a server is hashed by when tables are built: its name, unique in its backend and
    stable across reloads and address changes, so a table survives both."""
    return server.name.encode()


def weights_of(servers: list[ServerRuntime]) -> tuple[list[ServerRuntime], list[int]]:
    """The servers that can take traffic and their weights.

    lb.pool passes only servers with a weight, but a selector must not divide by zero if
    built directly: servers with weight 0 are dropped unless every weight is 0, in which
    case all count equally.
    """
    weighted = [s for s in servers if s.weight > 0]
    if weighted:
        return weighted, [s.weight for s in weighted]
    return list(servers), [1] * len(servers)


def weighted_order(weights: list[int], limit: int = MAX_ORDER) -> list[int]:
    """Server indices in a weighted, evenly spread order: index i appears w[i]/g times
    (g = gcd of the weights), interleaved the way smooth weighted round robin spreads them.

    Each of server i's slots k gets the ideal time (k + 1/2) / w[i] and slots are sorted by
    time, which costs O(L log L) in C instead of smooth round robin's O(L * N). An order
    longer than `limit` is built from weights scaled down to fit (each at least 1).
    """
    if not weights:
        return []
    divisor = 0
    for weight in weights:
        divisor = gcd(divisor, weight)
    counts = [w // divisor for w in weights] if divisor else [1] * len(weights)
    total = sum(counts)
    if total > limit:
        counts = [max(1, c * limit // total) for c in counts]
    slots = [((2 * k + 1) / (2 * count), i) for i, count in enumerate(counts) for k in range(count)]
    slots.sort()
    return [i for _, i in slots]


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True
