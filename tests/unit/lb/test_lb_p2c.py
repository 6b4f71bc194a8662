"""`random`: two weighted random draws, the less loaded (active / weight) wins."""

from __future__ import annotations

import random

from lbkit import assert_shares_follow_weights, idle_shares, make_servers, run_requests

from balancer.lb.p2c import PowerOfTwoChoices
from balancer.runtime.state import ServerRuntime


def test_the_less_loaded_of_two_draws_wins() -> None:
    servers = make_servers([100, 100])
    a = servers[0]
    a.active = 5
    selector = PowerOfTwoChoices(servers, rng=random.Random(1))
    picks = [selector.pick(None, None) for _ in range(1000)]
    # a wins only when both draws are a: a quarter of the time.
    assert 200 < picks.count(a) < 300


def test_same_seed_same_picks() -> None:
    servers = make_servers([100, 50, 25])
    one = PowerOfTwoChoices(servers, rng=random.Random(9))
    two = PowerOfTwoChoices(servers, rng=random.Random(9))
    assert [one.pick(None, None) for _ in range(100)] == [two.pick(None, None) for _ in range(100)]


def test_simulation_idle_shares_follow_weights() -> None:
    servers = make_servers([10, 50, 100, 150, 256])
    observed = idle_shares(PowerOfTwoChoices(servers, rng=random.Random(2)))
    assert_shares_follow_weights(observed, servers)


def test_simulation_avoid_draws_among_the_others_by_weight() -> None:
    """A retry away from the heaviest server still splits by the others' weights."""
    servers = make_servers([256, 100, 50, 50])
    selector = PowerOfTwoChoices(servers, rng=random.Random(3))
    names = []
    for _ in range(100_000):
        server = selector.pick(None, servers[0])
        assert server is not None
        names.append(server.name)
    assert names.count("s0") == 0
    assert abs(names.count("s1") / len(names) - 0.5) < 0.01
    assert abs(names.count("s2") / len(names) - 0.25) < 0.01


def test_simulation_steers_away_from_a_slowed_server() -> None:
    """Four equal servers, one ten times slower: with two choices it keeps well under its
    fair 25% (one random choice would give it 25% and an ever longer queue)."""
    servers = make_servers([100, 100, 100, 100])
    slow = servers[1]

    def duration(server: ServerRuntime) -> float:
        return 200.0 if server is slow else 20.0

    observed = run_requests(PowerOfTwoChoices(servers, rng=random.Random(4)), servers, duration)
    assert observed["s1"] < 0.12
