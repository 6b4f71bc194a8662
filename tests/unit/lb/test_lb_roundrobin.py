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
