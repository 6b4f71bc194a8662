"""source / uri / hdr / url_param: hashing the request key, map-based or consistent."""

from __future__ import annotations

from collections import Counter

from lbkit import (
    assert_shares_follow_weights,
    make_servers,
    moved_fraction,
    owners,
    random_keys,
    shares,
)

from balancer.lb.keyhash import HashType, KeyHash

HASH_TYPES: tuple[HashType, ...] = ("map", "consistent")


def test_same_key_same_server() -> None:
    servers = make_servers([100] * 5)
    for hash_type in HASH_TYPES:
        selector = KeyHash(servers, hash_type=hash_type)
        first = selector.pick(b"192.0.2.7", None)
        assert all(selector.pick(b"192.0.2.7", None) is first for _ in range(20))
        # The same in another selector built from the same servers (another worker, a rebuild).
        assert KeyHash(list(servers), hash_type=hash_type).pick(b"192.0.2.7", None) is first


def test_simulation_map_shares_follow_weights() -> None:
    servers = make_servers([1, 50, 100, 150, 256])
    observed = shares(owners(KeyHash(servers), random_keys()))
    assert_shares_follow_weights(observed, servers)


def test_simulation_consistent_shares_follow_weights() -> None:
    servers = make_servers([50, 100, 150, 200, 256, 100, 100, 80, 120, 100] * 2)
    observed = shares(owners(KeyHash(servers, hash_type="consistent"), random_keys()))
    assert_shares_follow_weights(observed, servers)


def test_map_based_hashing_moves_most_keys_when_a_server_goes() -> None:
    """Documented behaviour, not a wish: map-based hashing indexes a table as long as the
    total weight, so removing 1 of 10 servers remaps about 9 keys in 10, most of them
    between servers that stayed. Use hash_type = "consistent" (or maglev, ring) when keys
    must stay where they are."""
    servers = make_servers([100] * 10)
    keys = random_keys()
    before = owners(KeyHash(servers), keys)
    after = owners(KeyHash(servers[:4] + servers[5:]), keys)
    moved = moved_fraction(before, after)
    assert moved > 0.8
    needless = sum(a != b and a != "s4" for a, b in zip(before, after, strict=True)) / len(keys)
    assert needless > 0.7


def test_consistent_hashing_moves_about_one_over_n() -> None:
    n = 50
    servers = make_servers([100] * n)
    keys = random_keys()
    before = owners(KeyHash(servers, hash_type="consistent"), keys)
    after = owners(KeyHash(servers[:20] + servers[21:], hash_type="consistent"), keys)
    assert moved_fraction(before, after) <= 1.3 / n
    assert all(a == b or a == "s20" for a, b in zip(before, after, strict=True))


def test_no_key_falls_back_to_weighted_round_robin() -> None:
    servers = make_servers([100, 200])
    selector = KeyHash(servers)
    picks = Counter(s.name for s in (selector.pick(None, None) for _ in range(30)) if s)
    assert picks == {"s0": 10, "s1": 20}


def test_retry_moves_to_a_stable_second_choice() -> None:
    servers = make_servers([100] * 4)
    for hash_type in HASH_TYPES:
        selector = KeyHash(servers, hash_type=hash_type)
        for key in random_keys(300, seed=6):
            home = selector.pick(key, None)
            other = selector.pick(key, home)
            assert other is not None and other is not home
            assert selector.pick(key, home) is other
