"""lb/_tables.c builds exactly what the Python beside it builds: Maglev tables (weighted or
not, small and large tables, the rank-finding end included) and ring orders (collisions
kept in server order). Every L4 node computes its kernel table from the same file, so one
slot of difference would send flows to different L7 nodes."""

from __future__ import annotations

import os
import random
from array import array

import pytest
from lbkit import make_servers, random_keys

from balancer.lb import maglev, ring

_tables = maglev._tables
if _tables is None:  # a BALANCER_PURE=1 build has no C module; CI builds it
    pytestmark = pytest.mark.skipif(
        os.environ.get("BALANCER_PURE") == "1", reason="built with BALANCER_PURE=1: no lb/_tables"
    )


@pytest.mark.parametrize(
    ("servers", "size"), [(2, 3), (3, 7), (10, 101), (57, 4099), (100, 65537), (1000, 65537), (7, 65537)]
)
def test_maglev_fill_equals_the_python_loop(servers: int, size: int) -> None:
    assert _tables is not None, "lb/_tables was not built (make native)"
    rng = random.Random(servers * size)
    identities = [rng.randbytes(8) for _ in range(servers)]
    digests = [maglev._digest(identity) for identity in identities]
    pairs = [maglev.preferences(identity, size) for identity in identities]
    offsets, skips = [offset for offset, _ in pairs], [skip for _, skip in pairs]
    for weights in ([1] * servers, [rng.randint(1, 256) for _ in range(servers)], [3] * (servers - 1) + [1]):
        assert _tables.maglev_fill(b"".join(digests), weights, size) == maglev._fill(offsets, skips, weights, size)


def test_maglev_fill_refuses_what_python_refuses() -> None:
    assert _tables is not None
    two = bytes(32)
    with pytest.raises(ValueError):
        _tables.maglev_fill(two, [1, 1], 2)  # not more slots than servers
    with pytest.raises(ValueError):
        _tables.maglev_fill(two[:-1], [1, 1], 7)  # not 16 bytes per server
    with pytest.raises(ValueError):
        _tables.maglev_fill(two, [1, 0], 7)  # a weight of 0
    with pytest.raises(ValueError):
        _tables.maglev_fill(two, [1, 1], 9)  # not a prime: a skip of 3 would walk a third
    with pytest.raises(TypeError):
        _tables.maglev_fill(two, [1, "1"], 7)


def test_ring_build_equals_the_python_sort(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _tables is not None
    servers = make_servers([100, 50, 1, 256, 100] * 20)
    built_in_c = ring.Ring(servers)
    monkeypatch.setattr(ring, "_tables", None)
    built_in_python = ring.Ring(servers)
    assert built_in_c._positions == built_in_python._positions
    assert built_in_c._owners == built_in_python._owners
    for key in random_keys(2000):
        assert built_in_c.owner(key) is built_in_python.owner(key)


def test_ring_build_keeps_equal_positions_in_server_order() -> None:
    assert _tables is not None
    each = [array("I", [5 << 2, 3 << 2]), array("I", [5 << 2 | 3, 1 << 31]), array("I"), array("I", [3 << 2 | 1, 2])]
    positions, indexes = array("I", [0]) * 6, array("I", [0]) * 6
    _tables.ring_build(each, positions, indexes)  # positions are the draws' top 30 bits
    assert positions.tolist() == [0, 3, 3, 5, 5, 1 << 29]
    assert indexes.tolist() == [3, 0, 3, 0, 1, 1]
    _tables.ring_build([], array("I"), array("I"))


def test_ring_build_refuses_what_is_not_a_ring() -> None:
    assert _tables is not None
    two = array("I", [0, 0])
    with pytest.raises(ValueError, match="uint32"):
        _tables.ring_build([b"abc"], two, two)
    with pytest.raises(ValueError, match="outputs"):
        _tables.ring_build([array("I", [1, 2, 3])], two, two)
    with pytest.raises(TypeError):
        _tables.ring_build([array("I", [1]), "not a buffer"], two, two)
    with pytest.raises(TypeError):
        _tables.ring_build([array("I", [1, 2])], b"12345678", two)  # not writable


@pytest.mark.parametrize(("servers", "size", "gone"), [(3, 7, 1), (10, 101, 2), (100, 65537, 1), (1000, 65537, 7)])
def test_maglev_deal_equals_the_python_walk(
    monkeypatch: pytest.MonkeyPatch, servers: int, size: int, gone: int
) -> None:
    """The stable table after servers go, dealt in C and in Python: the same slots."""
    assert _tables is not None
    rng = random.Random(servers + size)
    identities = [rng.randbytes(8) for _ in range(servers)]
    weights = [rng.randint(1, 10) for _ in range(servers)]
    kept = sorted(rng.sample(range(servers), servers - gone))
    tables = []
    for module in (_tables, None):
        monkeypatch.setattr(maglev, "_tables", module)
        maglev.forget_tables()
        maglev.stable_table("deal", identities, weights, size)
        tables.append(maglev.stable_table("deal", [identities[i] for i in kept], [weights[i] for i in kept], size))
    maglev.forget_tables()
    in_c, in_python = tables
    assert in_c == in_python
    assert min(in_c) == 0 and max(in_c) == len(kept) - 1


def test_maglev_deal_refuses_a_walk_that_cannot_end() -> None:
    assert _tables is not None
    with pytest.raises(ValueError):
        _tables.maglev_deal([0, -1, 0, 1, 0, 1], [0], [1], [0], [2])  # skip 2 of 6 never reaches slot 1
    with pytest.raises(ValueError):
        _tables.maglev_deal([0, -1, 1], [0], [1], [3], [1])  # a position past the table
