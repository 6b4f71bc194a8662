"""The registry and the interface every algorithm keeps: built by name from the usable
servers, `pick(key, avoid)` answers None only without servers and honours `avoid` whenever
another server exists."""

from __future__ import annotations

import random
from typing import Any, get_args

import pytest
from lbkit import make_servers, random_keys

from balancer.config.model import Balance
from balancer.lb.base import KEYED, REGISTRY, USES_KEY, build_selector
from balancer.lb.keyhash import KeyHash

# Injectables that keep picks deterministic where an algorithm takes them.
OPTIONS: dict[str, dict[str, Any]] = {"random": {"rng": random.Random(5)}}


def test_every_spec_algorithm_is_registered() -> None:
    assert set(get_args(Balance)) == set(REGISTRY)
    assert {"source", "uri", "hdr", "url_param"} == KEYED
    assert KEYED | {"maglev", "ring"} <= USES_KEY


def test_unknown_algorithm_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        build_selector("nope", [])


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_no_servers_no_pick(name: str) -> None:
    selector = build_selector(name, [], **OPTIONS.get(name, {}))
    assert selector.pick(None, None) is None
    assert selector.pick(b"10.0.0.1", None) is None


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_single_server_takes_everything_even_when_to_be_avoided(name: str) -> None:
    [only] = servers = make_servers([100])
    selector = build_selector(name, servers, **OPTIONS.get(name, {}))
    for key in (None, b"k1", b"k2"):
        assert selector.pick(key, None) is only
        assert selector.pick(key, only) is only


@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.parametrize("hash_type", ["map", "consistent"])
def test_avoid_is_honoured_whenever_another_server_exists(name: str, hash_type: str) -> None:
    servers = make_servers([256, 1, 100])
    selector = build_selector(name, servers, hash_type=hash_type, **OPTIONS.get(name, {}))
    for key in [None, *random_keys(300, seed=3)]:
        for avoid in servers:
            server = selector.pick(key, avoid)
            assert server is not None and server is not avoid, (name, key, avoid)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_picks_only_from_the_servers_given(name: str) -> None:
    servers = make_servers([100, 50, 200, 10])
    selector = build_selector(name, servers[1:3], **OPTIONS.get(name, {}))
    for key in [None, *random_keys(200, seed=4)]:
        assert selector.pick(key, None) in servers[1:3]


def test_keyed_algorithms_get_the_hash_type() -> None:
    servers = make_servers([100, 100])
    for name in KEYED:
        selector = build_selector(name, servers, hash_type="consistent")
        assert isinstance(selector, KeyHash) and selector._ring is not None
        assert isinstance(build_selector(name, servers), KeyHash)
    # Non-keyed algorithms accept and ignore it, so the pool can always pass the backend's.
    build_selector("roundrobin", servers, hash_type="consistent")
    with pytest.raises(ValueError):
        build_selector("source", servers, hash_type="modulo")


def test_options_reach_the_constructor() -> None:
    servers = make_servers([100, 100])
    with pytest.raises(ValueError, match="prime"):
        build_selector("maglev", servers, table_size=65536)
