"""least_traffic: fewest bytes over a sliding window, per unit of weight."""

from __future__ import annotations

import random

from lbkit import REQUESTS, assert_shares_follow_weights, make_servers, run_requests, shares

from balancer.lb.least_traffic import LeastTraffic, TrafficStore
from balancer.runtime.state import ServerRuntime


class Clock:
    """Time by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_window_slides_bucket_by_bucket() -> None:
    clock = Clock()
    store = TrafficStore(window=10.0, buckets=10, clock=clock)
    [server] = make_servers([100])
    store.observe_bytes(server, 100)
    clock.now = 4.5
    store.observe_bytes(server, 50)
    assert store.window_bytes(server) == 150
    clock.now = 10.2  # the bucket [0, 1) has left the window: it holds [1, 11) now
    assert store.window_bytes(server) == 50
    clock.now = 13.9
    assert store.window_bytes(server) == 50
    clock.now = 14.0  # and [4, 5) too
    assert store.window_bytes(server) == 0
    store.observe_bytes(server, 7)
    clock.now = 1000.0
    assert store.window_bytes(server) == 0


def test_picks_the_fewest_bytes_per_weight() -> None:
    clock = Clock()
    store = TrafficStore(clock=clock)
    a, b, c = servers = make_servers([100, 100, 200])
    store.observe_bytes(a, 1000)
    store.observe_bytes(b, 500)
    store.observe_bytes(c, 1500)
    selector = LeastTraffic(servers, store=store)
    assert selector.pick(None, None) is b  # 500 / 100 < 1500 / 200 < 1000 / 100
    assert selector.pick(None, b) is c
    clock.now = 60.0  # all forgotten: ties, weighted rotation
    assert selector.pick(None, None) is not None


def test_requests_in_flight_count_before_their_bytes_arrive() -> None:
    """Without the in-flight term every new request would go to the quiet server until its
    counters caught up."""
    clock = Clock()
    store = TrafficStore(clock=clock)
    a, b = servers = make_servers([100, 100])
    selector = LeastTraffic(servers, store=store)
    for _ in range(10):  # 10 requests of 1000 bytes each, done
        picked = selector.pick(None, None)
        assert picked is not None
        store.observe_bytes(picked, 1000)
    store.observe_bytes(a, 1000)  # a moved a little more
    assert selector.pick(None, None) is b
    b.active = 2  # two requests on b, their bytes still to come: 2 x ~1000 expected
    assert selector.pick(None, None) is a


def test_counters_outlive_a_rebuild_and_the_module_hook_feeds_the_default_store() -> None:
    from balancer.lb import least_traffic

    a, b = servers = make_servers([100, 100], backend="lt-traffic-hook")
    least_traffic.observe_bytes(a, 10_000)
    assert LeastTraffic(servers).pick(None, None) is b
    LeastTraffic(servers).observe_bytes(b, 50_000)
    assert LeastTraffic(list(servers)).pick(None, None) is a


def test_simulation_shares_follow_weights() -> None:
    """100,000 requests of random size (1 to 20 kB), 100 in flight, bytes counted when each
    request ends, one tick a millisecond: request and byte shares follow weights."""
    servers = make_servers([30, 100, 150, 200, 256])
    clock = Clock()
    store = TrafficStore(clock=clock)
    selector = LeastTraffic(servers, store=store)
    rng = random.Random(21)
    sizes: dict[str, int] = {s.name: 0 for s in servers}

    def done(server: ServerRuntime, took: float) -> None:
        size = rng.randint(1000, 20_000)
        store.observe_bytes(server, size)
        sizes[server.name] += size

    def tick(server: ServerRuntime) -> None:
        clock.now += 0.001

    observed = run_requests(selector, servers, lambda s: 100.0, on_done=done, on_pick=tick)
    assert_shares_follow_weights(observed, servers)
    total = sum(sizes.values())
    assert_shares_follow_weights({name: size / total for name, size in sizes.items()}, servers)


def test_simulation_steers_away_from_heavy_traffic() -> None:
    """One of four servers serves downloads ten times larger: it gets far fewer requests."""
    servers = make_servers([100] * 4)
    clock = Clock()
    store = TrafficStore(clock=clock)
    selector = LeastTraffic(servers, store=store)
    names = []
    for _ in range(REQUESTS):
        clock.now += 0.001
        server = selector.pick(None, None)
        assert server is not None
        names.append(server.name)
        store.observe_bytes(server, 10_000 if server is servers[2] else 1000)
    observed = shares(names)
    assert observed["s2"] < 0.04
