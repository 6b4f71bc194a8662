"""least_time: EWMA of measured response times x (active + 1) / weight."""

from __future__ import annotations

import pytest
from lbkit import assert_shares_follow_weights, make_servers, run_requests

from balancer.lb.least_time import LatencyStore, LeastTime
from balancer.runtime.state import ServerRuntime


def test_ewma_follows_measurements() -> None:
    store = LatencyStore(alpha=0.5)
    [server] = make_servers([100])
    assert store.average(server) is None
    store.observe(server, 0.1)
    assert store.average(server) == pytest.approx(0.1)
    store.observe(server, 0.3)
    assert store.average(server) == pytest.approx(0.2)
    store.observe(server, 0.0)  # floored: a server is never free
    assert store.average(server) == pytest.approx(0.1, rel=1e-3)
    with pytest.raises(ValueError):
        LatencyStore(alpha=0)


def test_picks_the_lowest_expected_wait_per_weight() -> None:
    store = LatencyStore()
    a, b, c = servers = make_servers([100, 100, 200])
    for server, seconds in ((a, 0.010), (b, 0.005), (c, 0.008)):
        store.observe(server, seconds)
    selector = LeastTime(servers, store=store)
    assert selector.pick(None, None) is c  # 0.008 / 200 < 0.005 / 100
    c.active = 1
    assert selector.pick(None, None) is b  # 0.005 * 1 / 100 < 0.008 * 2 / 200
    assert selector.pick(None, b) is c


def test_unmeasured_server_is_costed_at_the_mean() -> None:
    store = LatencyStore()
    a, b, new = servers = make_servers([100, 100, 100])
    store.observe(a, 0.010)
    store.observe(b, 0.030)
    selector = LeastTime(servers, store=store)
    assert selector.pick(None, None) is a
    a.active = 2  # 0.030 for a, 0.030 for b, 0.020 for new
    assert selector.pick(None, None) is new


def test_measurements_outlive_a_rebuild_and_the_module_hook_feeds_the_default_store() -> None:
    from balancer.lb import least_time

    a, b = servers = make_servers([100, 100], backend="lt-module-hook")
    least_time.observe(a, 0.5)
    least_time.observe(b, 0.01)
    assert LeastTime(servers).pick(None, None) is b
    LeastTime(servers).observe(b, 5.0)  # through a selector, into the same store
    assert LeastTime(list(servers)).pick(None, None) is a


def test_simulation_equal_latencies_shares_follow_weights() -> None:
    """100,000 requests, about 500 in flight, every server as fast as the others: shares
    follow weights (the cost reduces to weighted least connections)."""
    servers = make_servers([30, 100, 150, 200, 256])
    store = LatencyStore()
    selector = LeastTime(servers, store=store)
    observed = run_requests(selector, servers, lambda s: 500.0, on_done=store.observe)
    assert_shares_follow_weights(observed, servers)


def test_simulation_steers_away_from_a_slowed_server() -> None:
    """Four equal servers; after 20,000 requests one of them answers five times slower. The
    next 80,000 requests give it far less than its fair quarter, and less than leastconn's
    in-flight count alone would (the latency itself counts)."""
    servers = make_servers([100, 100, 100, 100])
    store = LatencyStore()
    selector = LeastTime(servers, store=store)
    slow = servers[1]
    picks = 0

    def count(server: ServerRuntime) -> None:
        nonlocal picks
        picks += 1

    def duration(server: ServerRuntime) -> float:
        return 50.0 if server is slow and picks > 20_000 else 10.0

    run_requests(selector, servers, duration, requests=20_000, on_done=store.observe, on_pick=count)
    observed = run_requests(selector, servers, duration, requests=80_000, on_done=store.observe, on_pick=count)
    assert observed["s1"] < 0.05
    for name in ("s0", "s2", "s3"):
        assert observed[name] > 0.3
