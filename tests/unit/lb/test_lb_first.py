"""First available server: configuration order, the next one only when the first is full."""

from __future__ import annotations

import heapq
import random

from lbkit import REQUESTS, make_servers

from balancer.lb.first import First


def test_first_server_with_a_free_slot() -> None:
    a, b, c = servers = make_servers([100, 100, 100], maxconn=2)
    selector = First(servers)
    assert selector.pick(None, None) is a
    a.active = 2
    assert selector.pick(None, None) is b
    b.active = 2
    assert selector.pick(None, None) is c
    a.active = 1
    assert selector.pick(None, None) is a
    assert selector.pick(None, a) is c  # b is full


def test_maxconn_zero_is_unlimited() -> None:
    servers = make_servers([100, 100], maxconn=[0, 5])
    a = servers[0]
    a.active = 10_000
    assert First(servers).pick(None, None) is a


def test_all_full_returns_the_first_for_the_proxy_to_queue() -> None:
    a, b = servers = make_servers([100, 100], maxconn=1)
    a.active = b.active = 1
    selector = First(servers)
    assert selector.pick(None, None) is a
    assert selector.pick(None, a) is b


def test_weights_are_ignored_and_order_is_kept() -> None:
    servers = make_servers([1, 256, 100], maxconn=1)
    assert First(servers).pick(None, None) is servers[0]


def test_simulation_fills_servers_in_order() -> None:
    """100,000 requests of random length at a rate that keeps about 25 in flight, servers
    with 10 slots each: every pick goes to the first server not full, so the first two stay
    (nearly) full and the fourth is used only in bursts past 30."""
    servers = make_servers([100, 100, 100, 100], maxconn=10)
    selector = First(servers)
    rng = random.Random(7)
    in_flight: list[tuple[float, int, int]] = []
    picks = [0, 0, 0, 0]
    now = 0.0
    for sequence in range(REQUESTS):
        while in_flight and in_flight[0][0] <= now:
            _, _, index = heapq.heappop(in_flight)
            servers[index].active -= 1
        server = selector.pick(None, None)
        assert server is not None
        index = servers.index(server)
        if server.active >= 10:
            # Only when everything is full, and then it is the first server (to queue on).
            assert index == 0 and all(s.active >= 10 for s in servers)
            now += rng.expovariate(1.0)
            continue
        for before in servers[:index]:
            assert before.active >= 10, "a server was skipped while it had a free slot"
        server.active += 1
        picks[index] += 1
        heapq.heappush(in_flight, (now + rng.expovariate(1 / 25), sequence, index))
        now += rng.expovariate(1.0)
    assert picks[0] > picks[1] > picks[2] > picks[3]
    assert picks[0] > 0.35 * REQUESTS
    assert picks[3] < 0.1 * REQUESTS
