"""Weighted least connections: fewest active / weight, ties in weighted rotation."""

from __future__ import annotations

from collections import Counter

from lbkit import REQUESTS, assert_shares_follow_weights, idle_shares, make_servers, run_requests

from balancer.lb.leastconn import LeastConnections
from balancer.runtime.state import ServerRuntime


def test_picks_the_fewest_active_per_weight() -> None:
    a, b, c = servers = make_servers([100, 200, 100])
    selector = LeastConnections(servers)
    a.active, b.active, c.active = 3, 5, 4
    assert selector.pick(None, None) is b  # 5/200 < 3/100 < 4/100
    b.active = 7
    assert selector.pick(None, None) is a  # 3/100 < 7/200
    assert selector.pick(None, a) is b  # a avoided: 7/200 < 4/100


def test_ties_rotate_in_weighted_order() -> None:
    servers = make_servers([100, 100, 100])
    selector = LeastConnections(servers)
    picks = [selector.pick(None, None) for _ in range(6)]
    assert [s.name for s in picks if s] == ["s0", "s1", "s2", "s0", "s1", "s2"]


def test_idle_backend_is_served_by_weight() -> None:
    servers = make_servers([50, 100, 150, 256, 1])
    assert_shares_follow_weights(idle_shares(LeastConnections(servers)), servers)


def test_simulation_shares_follow_weights_under_load() -> None:
    """100,000 requests, 500 in flight at any time, all servers equally fast."""
    servers = make_servers([30, 100, 150, 200, 256])
    observed = run_requests(LeastConnections(servers), servers, lambda s: 500.0, requests=REQUESTS)
    assert_shares_follow_weights(observed, servers)


def test_simulation_steers_away_from_a_slowed_server() -> None:
    """One of four equal servers answers ten times slower: its requests pile up in flight,
    so it gets about a tenth of a fair share."""
    servers = make_servers([100, 100, 100, 100])
    slow = servers[2]

    def duration(server: ServerRuntime) -> float:
        return 1000.0 if server is slow else 100.0

    observed = run_requests(LeastConnections(servers), servers, duration)
    assert observed["s2"] < 0.05
    for name in ("s0", "s1", "s3"):
        assert abs(observed[name] - (1 - observed["s2"]) / 3) < 0.01


def test_active_read_live_without_a_rebuild() -> None:
    servers = make_servers([100, 100])
    selector = LeastConnections(servers)
    counts: Counter[str] = Counter()
    for _ in range(100):
        server = selector.pick(None, None)
        assert server is not None
        server.active += 1
        counts[server.name] += 1
    assert counts == {"s0": 50, "s1": 50}
