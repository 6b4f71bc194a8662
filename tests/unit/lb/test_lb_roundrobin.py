"""roundrobin (smooth weighted) and static-rr: order, shares, avoid."""

from __future__ import annotations

import pytest
from lbkit import assert_shares_follow_weights, idle_shares, make_servers

from balancer.lb.roundrobin import SmoothWeightedRoundRobin
from balancer.lb.static_rr import StaticRoundRobin


@pytest.mark.parametrize("cls", [SmoothWeightedRoundRobin, StaticRoundRobin])
def test_heavy_servers_are_spread_out(cls: type[SmoothWeightedRoundRobin] | type[StaticRoundRobin]) -> None:
    servers = make_servers([5, 1, 1])
    selector = cls(servers)
    names = [s.name for s in (selector.pick(None, None) for _ in range(7)) if s]
    assert names == ["s0", "s0", "s1", "s0", "s2", "s0", "s0"]


@pytest.mark.parametrize("cls", [SmoothWeightedRoundRobin, StaticRoundRobin])
def test_simulation_shares_follow_weights(cls: type[SmoothWeightedRoundRobin] | type[StaticRoundRobin]) -> None:
    servers = make_servers([1, 30, 100, 150, 256])
    assert_shares_follow_weights(idle_shares(cls(servers)), servers)


def test_weights_can_be_given_apart_from_the_servers() -> None:
    servers = make_servers([100, 100])
    selector = SmoothWeightedRoundRobin(servers, weights=[3, 1])
    names = [s.name for s in (selector.pick(None, None) for _ in range(4)) if s]
    assert sorted(names) == ["s0", "s0", "s0", "s1"]
    with pytest.raises(ValueError):
        SmoothWeightedRoundRobin(servers, weights=[1])


def test_equal_weights_rotate_and_a_retry_does_not_move_the_rotation() -> None:
    servers = make_servers([1, 1, 1])
    selector = SmoothWeightedRoundRobin(servers)
    names = [s.name for s in (selector.pick(None, None) for _ in range(4)) if s]
    assert names == ["s0", "s1", "s2", "s0"]
    # s1 is next: a retry away from s0 (which just failed) gets it, and so does the next
    # client; a retry away from the next server itself gets the one after.
    picks = [selector.pick(None, servers[0]), selector.pick(None, servers[1]), selector.pick(None, None)]
    assert [s.name for s in picks if s] == ["s1", "s2", "s1"]


@pytest.mark.parametrize("weights", [[1, 1], [2, 1]])
def test_a_failing_server_is_tried_first_by_at_most_its_share_of_clients(weights: list[int]) -> None:
    """Each client's first pick, then a retry away from s0 when s0 was picked (it fails)."""
    servers = make_servers(weights)
    selector = SmoothWeightedRoundRobin(servers)
    first_on_s0 = 0
    for _ in range(30):
        first = selector.pick(None, None)
        if first is servers[0]:
            first_on_s0 += 1
            assert selector.pick(None, servers[0]) is servers[1]
    assert first_on_s0 <= 30 * weights[0] // sum(weights)
