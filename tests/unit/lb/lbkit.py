"""Helpers for the balancing-algorithm tests: servers without a proxy, and simulations.

Every simulation is deterministic: keys and durations come from a seeded random.Random,
time is a tick counter, and the algorithms get their random source or clock injected.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Sequence

from balancer.config.model import Server
from balancer.lb.base import Selector
from balancer.runtime.state import ServerRuntime

# Shares must follow weights within this many percentage points (issue 5, "Must hold").
SHARE_TOLERANCE = 0.01
REQUESTS = 100_000


def make_servers(
    weights: Sequence[int], *, maxconn: int | Sequence[int] = 0, backend: str = "b", prefix: str = "s"
) -> list[ServerRuntime]:
    """Servers named s0, s1, ... with the given weights (and maxconn, one or per server)."""
    maxconns = [maxconn] * len(weights) if isinstance(maxconn, int) else list(maxconn)
    return [
        ServerRuntime(
            Server(name=f"{prefix}{i}", address=f"127.0.0.1:{10000 + i}", weight=w, maxconn=m),
            backend,
        )
        for i, (w, m) in enumerate(zip(weights, maxconns, strict=True))
    ]


def random_keys(count: int = REQUESTS, seed: int = 1) -> list[bytes]:
    """Distinct-looking request keys: 4 to 24 random bytes each (client addresses, URIs...)."""
    rng = random.Random(seed)
    return [rng.randbytes(rng.randint(4, 24)) for _ in range(count)]


def owners(selector: Selector, keys: Sequence[bytes]) -> list[str]:
    """The name of the server each key goes to (nothing avoided, nothing in flight)."""
    names = []
    for key in keys:
        server = selector.pick(key, None)
        assert server is not None
        names.append(server.name)
    return names


def shares(names: Sequence[str]) -> dict[str, float]:
    counts = Counter(names)
    total = len(names)
    return {name: count / total for name, count in counts.items()}


def expected_shares(servers: Sequence[ServerRuntime]) -> dict[str, float]:
    total = sum(s.weight for s in servers)
    return {s.name: s.weight / total for s in servers}


def assert_shares_follow_weights(
    observed: dict[str, float], servers: Sequence[ServerRuntime], tolerance: float = SHARE_TOLERANCE
) -> float:
    """Every server's share within `tolerance` of its weight's share; returns the worst gap."""
    expected = expected_shares(servers)
    worst = max(abs(observed.get(name, 0.0) - share) for name, share in expected.items())
    assert worst <= tolerance, f"worst share off by {worst:.4f}: observed {observed}, expected {expected}"
    return worst


def moved_fraction(before: Sequence[str], after: Sequence[str]) -> float:
    return sum(a != b for a, b in zip(before, after, strict=True)) / len(before)


def idle_shares(selector: Selector, requests: int = REQUESTS) -> dict[str, float]:
    """Shares of `requests` picks with no key and nothing in flight."""
    names = []
    for _ in range(requests):
        server = selector.pick(None, None)
        assert server is not None
        names.append(server.name)
    return shares(names)


def run_requests(
    selector: Selector,
    servers: Sequence[ServerRuntime],
    duration: Callable[[ServerRuntime], float],
    *,
    requests: int = REQUESTS,
    interval: float = 1.0,
    on_done: Callable[[ServerRuntime, float], None] | None = None,
    on_pick: Callable[[ServerRuntime], None] | None = None,
) -> dict[str, float]:
    """Send `requests` requests, one every `interval` ticks, each taking `duration(server)`
    ticks on the server picked; `active` counts requests in flight as the proxy does.
    `on_done(server, duration)` runs when a request ends (where the proxy measures it).
    Returns each server's share of the requests."""
    for server in servers:
        server.active = 0
    in_flight: list[tuple[float, int, ServerRuntime, float]] = []
    names = []
    now = 0.0
    for sequence in range(requests):
        while in_flight and in_flight[0][0] <= now:
            _, _, done, took = heapq.heappop(in_flight)
            done.active -= 1
            if on_done is not None:
                on_done(done, took)
        picked = selector.pick(None, None)
        assert picked is not None
        server = picked
        server.active += 1
        if on_pick is not None:
            on_pick(server)
        names.append(server.name)
        took = duration(server)
        heapq.heappush(in_flight, (now + took, sequence, server, took))
        now += interval
    for server in servers:
        server.active = 0
    return shares(names)
