"""The L4 node's tables computed ahead: the same slots as computing them on the spot, the
next likely tables ready after a change, and never one table computed twice at once."""

from __future__ import annotations

import json
import random
import threading
import time

import pytest

from balancer.cluster.l4 import compute_slots
from balancer.cluster.nft import changed_slots, render_slot_delta, render_slot_delta_json
from balancer.cluster.slot_cache import SlotCache
from balancer.config import parse_config
from balancer.config.model import L4


def table(nodes: int, size: int, weights: list[int] | None = None, method: str = "maglev") -> L4:
    text = f'[[l4]]\nname = "www"\nvip = "10.100.0.1"\nports = [80]\nmethod = "{method}"\nseed = 7\n'
    text += f"table_size = {size}\n"
    for n in range(nodes):
        weight = weights[n] if weights else 100
        text += f'[[l4.node]]\nname = "n{n}"\naddress = "10.0.3.{21 + n}"\nweight = {weight}\n'
    return parse_config(text).l4[0]


@pytest.mark.parametrize(
    ("nodes", "size", "weights"),
    [(3, 307, None), (10, 65537, None), (5, 4099, [100, 50, 200, 1, 100]), (2, 1009, [3, 1])],
)
def test_a_table_from_the_cache_is_the_one_computed_on_the_spot(nodes: int, size: int, weights: list[int]) -> None:
    config = table(nodes, size, weights)
    names = [node.name for node in config.node]
    cache = SlotCache(lambda t, usable: compute_slots(config, t, usable), limit=4 * nodes, delay=0.0)
    everybody = frozenset(names)
    cache.warm(0, everybody, names)
    assert cache.settle(60)

    for usable in [everybody, *(everybody - {name} for name in names)]:
        assert cache.get(0, usable) == compute_slots(config, 0, usable)
    # The warmer computed each neighbour once, the full set was computed by its get.
    assert (cache.misses, cache.hits) == (nodes + 1, nodes)


def test_after_a_change_the_tables_one_change_away_are_ready() -> None:
    config = table(4, 1009)
    names = [node.name for node in config.node]
    calls: list[frozenset[str]] = []

    def compute(t: int, usable: frozenset[str]) -> list[int]:
        calls.append(usable)
        return compute_slots(config, t, usable)

    cache = SlotCache(compute, limit=20, delay=0.0)
    current = frozenset(names) - {"n1"}
    cache.get(0, current)
    cache.warm(0, current, names)
    assert cache.settle(30)

    expected = {current | {"n1"}, *(current - {name} for name in current)}
    assert set(calls[1:]) == expected
    before = len(calls)
    for usable in expected:
        cache.get(0, usable)
    assert len(calls) == before


def test_a_table_being_computed_is_waited_for_not_computed_twice() -> None:
    started = threading.Event()
    release = threading.Event()
    calls = 0

    def compute(t: int, usable: frozenset[str]) -> list[int]:
        nonlocal calls
        calls += 1
        started.set()
        assert release.wait(10)
        return [len(usable)]

    cache = SlotCache(compute, limit=4)
    results: list[list[int]] = []
    first = threading.Thread(target=lambda: results.append(cache.get(0, frozenset({"a"}))))
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=lambda: results.append(cache.get(0, frozenset({"a"}))))
    second.start()
    deadline = time.monotonic() + 0.2  # the second get must still be waiting: nothing released
    while time.monotonic() < deadline and second.is_alive():
        second.join(0.02)
    assert second.is_alive()
    release.set()
    first.join(10)
    second.join(10)
    assert results == [[1], [1]] and calls == 1


def test_the_cache_keeps_at_most_its_limit() -> None:
    cache = SlotCache(lambda t, usable: [len(usable)], limit=3)
    for n in range(10):
        cache.get(0, frozenset({f"n{n}"}))
    assert len(cache.tables) == 3


def test_changed_slots_and_the_delta_match_a_plain_comparison() -> None:
    rng = random.Random(14)
    for size in (1, 13, 4099, 65537):
        old = [rng.randrange(4) for _ in range(size)]
        new = [rng.randrange(4) if rng.random() < 0.1 else mark for mark in old]
        plain = [slot for slot in range(size) if old[slot] != new[slot]]
        assert changed_slots(old, new) == plain
        assert render_slot_delta(0, old, new) == render_slot_delta(0, old, new, plain)
    with pytest.raises(ValueError):
        changed_slots([1, 2], [1])


def test_a_change_soon_after_the_last_one_stops_the_warmer_before_it_computes() -> None:
    calls: list[frozenset[str]] = []
    cache = SlotCache(lambda t, usable: calls.append(usable) or [len(usable)], limit=8, delay=30.0)
    warmer = cache.warm(0, frozenset({"a", "b"}), ["a", "b"])
    cache.quiet(0)
    warmer.join(10)
    assert not warmer.is_alive() and calls == []


def test_the_json_delta_is_the_text_delta() -> None:
    """set_usable sends the JSON form (parsed faster); the text form is the readable one."""
    old = [1, 2, 3, 1, 2]
    new = [1, 1, 3, 1, 1]
    document = json.loads(render_slot_delta_json(0, old, new))
    where = {"family": "ip", "table": "balancer_l4", "name": "slots_0"}
    assert document == {
        "nftables": [
            {"delete": {"element": {**where, "elem": [1, 4]}}},
            {"add": {"element": {**where, "elem": [[1, 1], [4, 1]]}}},
        ]
    }
    assert render_slot_delta(0, old, new).count("\n") == 2  # the same two commands as text
    assert render_slot_delta_json(0, old, old) == ""
    assert json.loads(render_slot_delta_json(2, old, [])) == {
        "nftables": [{"flush": {"map": {**where, "name": "slots_2"}}}]
    }
    assert json.loads(render_slot_delta_json(0, [], [5]))["nftables"][0]["add"]["element"]["elem"] == [[0, 5]]
