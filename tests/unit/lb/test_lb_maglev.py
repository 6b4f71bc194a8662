"""Maglev: the NSDI 2016 table, its balance and its minimal disruption, as numbers."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator

import pytest
from lbkit import (
    assert_shares_follow_weights,
    make_servers,
    moved_fraction,
    owners,
    random_keys,
    shares,
)

from balancer.lb.maglev import DEFAULT_TABLE_SIZE, Maglev, build_table, forget_tables

M = DEFAULT_TABLE_SIZE


@pytest.fixture(autouse=True)
def _fresh_tables() -> Iterator[None]:
    """Stable tables remember each backend's last fresh table: start every test without."""
    forget_tables()
    yield
    forget_tables()


def paper_table(identities: list[bytes], weights: list[int], size: int) -> list[int]:
    """Pseudocode 1 of the paper, literally (full permutations, probing only), with the same
    proportional turns for weights: the reference the fast builder must equal."""
    n = len(identities)
    permutation = []
    for identity in identities:
        digest = hashlib.blake2b(identity, digest_size=16, person=b"maglev").digest()
        h1, h2 = int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little")
        offset, skip = h1 % size, h2 % (size - 1) + 1
        permutation.append([(offset + j * skip) % size for j in range(size)])
    following = [0] * n
    entry = [-1] * size
    credits = [0] * n
    heaviest = max(weights)
    filled = 0
    while True:
        for i in range(n):
            credits[i] += weights[i]
            if credits[i] < heaviest:
                continue
            credits[i] -= heaviest
            c = permutation[i][following[i]]
            while entry[c] >= 0:
                following[i] += 1
                c = permutation[i][following[i]]
            entry[c] = i
            following[i] += 1
            filled += 1
            if filled == size:
                return entry


@pytest.mark.parametrize(
    ("size", "weights"),
    [(7, [1, 1, 1]), (101, [1] * 5), (1009, [1] * 13), (1009, [100, 50, 256, 1, 30]), (4099, [3, 1] * 20)],
)
def test_fast_builder_equals_the_paper(size: int, weights: list[int]) -> None:
    identities = [f"s{i}".encode() for i in range(len(weights))]
    assert build_table(identities, weights, size) == paper_table(identities, weights, size)


def test_table_size_must_be_a_prime_above_the_server_count() -> None:
    servers = make_servers([100] * 3)
    with pytest.raises(ValueError):
        Maglev(servers, table_size=65536)
    with pytest.raises(ValueError):
        Maglev(servers, table_size=3)
    assert sorted(Maglev(servers, table_size=5).slot_counts().values()) == [1, 2, 2]


def test_imbalance_within_one_percent_for_100_servers() -> None:
    """Issue 5: max/mean - 1 <= 1% for N = 100, M = 65537. Equal weights give every server
    floor(M/N) or ceil(M/N) slots (655 or 656): 0.1%."""
    counts = Maglev(make_servers([100] * 100), stable=False).slot_counts()
    assert set(counts.values()) <= {M // 100, M // 100 + 1}
    imbalance = max(counts.values()) / (M / 100) - 1
    assert imbalance <= 0.01


def test_removing_one_of_100_moves_at_most_1_2_over_n() -> None:
    """Issue 5: removing 1 of N moves <= 1.2/N of keys: the removed server's own share plus
    at most 0.2/N taken from survivors. With stable tables (the default) it is exactly the
    removed server's share, and the survivors stay balanced to within one slot.
    Measured on the table (exact) and on 100,000 keys."""
    n = 100
    servers = make_servers([100] * n, backend="remove-one")
    before = Maglev(servers)
    survivors = servers[:37] + servers[38:]
    after = Maglev(survivors)
    slots_moved = sum(a is not b for a, b in zip(before._lookup, after._lookup, strict=True)) / M
    own = before.slot_counts()["s37"] / M
    assert slots_moved == own <= 1.2 / n
    counts = after.slot_counts()
    assert set(counts.values()) <= {M // (n - 1), M // (n - 1) + 1}
    keys = random_keys()
    keys_moved = moved_fraction(owners(before, keys), owners(after, keys))
    assert keys_moved <= 1.2 / n
    # Back to the full set: the very same table as before.
    assert Maglev(servers)._lookup == before._lookup


@pytest.mark.parametrize(("n", "bound"), [(10, 1.05), (20, 1.1), (50, 1.3), (100, 1.6)])
def test_paper_table_disruption(n: int, bound: float) -> None:
    """The paper's table alone (stable=False), as a pure function of the set: removing 1 of N
    moves about 1.02/N of the slots for N = 10, 1.07/N for 20, 1.23/N for 50 and 1.55/N for
    100 at M = 65537. So the issue's 1.2/N holds for the plain table only up to N of about
    40; stable tables (above) are what makes it hold for N = 100."""
    servers = make_servers([100] * n, backend=f"paper-{n}")
    before = Maglev(servers, stable=False)
    gone = n // 3
    after = Maglev(servers[:gone] + servers[gone + 1 :], stable=False)
    moved = sum(a is not b for a, b in zip(before._lookup, after._lookup, strict=True)) / M
    assert before.slot_counts()[f"s{gone}"] / M <= moved <= bound / n


def test_stable_tables_after_several_removals_and_returns() -> None:
    """Servers going and coming back in any order: only the slots of the missing servers
    move, the survivors stay balanced, and the full set gets its original table back."""
    n = 40
    servers = make_servers([100] * n, backend="churn")
    full = Maglev(servers)._lookup
    down: set[int] = set()
    for index in [3, 17, 29, 17, 5, 3, 29, 5]:
        down ^= {index}
        current = [s for i, s in enumerate(servers) if i not in down]
        table = Maglev(current)._lookup
        for old, new in zip(full, table, strict=True):
            assert old is new or servers.index(old) in down
        counts = Counter(s.name for s in table)
        assert max(counts.values()) - min(counts.values()) <= 1
    assert not down and table == full


def test_a_weight_change_builds_a_fresh_table() -> None:
    servers = make_servers([100] * 10, backend="reweigh")
    Maglev(servers)
    servers[4].weight = 200
    assert Maglev(servers)._lookup == Maglev(servers, stable=False)._lookup
    counts = Maglev(servers).slot_counts()
    assert abs(counts["s4"] / M - 2 / 11) < 0.001


def test_a_large_outage_builds_a_fresh_table() -> None:
    servers = make_servers([100] * 16, backend="outage")
    Maglev(servers)
    half = servers[:8]
    assert Maglev(half)._lookup == Maglev(half, stable=False)._lookup


def test_simulation_key_shares_follow_weights() -> None:
    servers = make_servers([10, 50, 100, 150, 200, 256, 100, 100])
    observed = shares(owners(Maglev(servers), random_keys()))
    assert_shares_follow_weights(observed, servers)


def test_weighted_slot_counts_are_proportional() -> None:
    servers = make_servers([1, 2, 3, 4, 256])
    counts = Maglev(servers, stable=False).slot_counts()
    total_weight = sum(s.weight for s in servers)
    for server in servers:
        assert abs(counts[server.name] - M * server.weight / total_weight) <= 2


def test_same_key_same_server_and_retry_is_stable() -> None:
    servers = make_servers([100] * 5)
    selector = Maglev(servers, stable=False)
    first = selector.pick(b"10.1.2.3", None)
    assert first is not None
    assert all(selector.pick(b"10.1.2.3", None) is first for _ in range(10))
    second = selector.pick(b"10.1.2.3", first)
    assert second is not None and second is not first
    assert Maglev(list(reversed(servers)), stable=False).pick(b"10.1.2.3", first) is second


def test_no_key_falls_back_to_weighted_round_robin() -> None:
    servers = make_servers([100, 100])
    selector = Maglev(servers)
    picks = Counter(s.name for s in (selector.pick(None, None) for _ in range(10)) if s)
    assert picks == {"s0": 5, "s1": 5}
