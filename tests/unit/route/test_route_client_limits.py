"""rate_limit and conn_limit without sockets: the windows, Retry-After, allow lists, the
open-connection gauge, and two workers counting one client."""

from __future__ import annotations

from typing import Any

from balancer.config.model import ConnLimit, RateLimit
from balancer.route.client_limits import REFUSED, ClientLimits
from balancer.runtime.client_table import ClientTable


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limits(
    rate: dict[str, Any] | None = None, conn: dict[str, Any] | None = None, slots: int = 1, clock: Clock | None = None
) -> list[ClientLimits]:
    """One ClientLimits per worker slot over one table."""
    table = ClientTable.create(1024, 600, 8, slots)
    rate_limit = RateLimit(**rate) if rate is not None else None
    conn_limit = ConnLimit(**conn) if conn is not None else None
    return [ClientLimits(rate_limit, conn_limit, table, slot, clock or Clock()) for slot in range(slots)]


def test_burst_plus_one_pass_at_once_then_the_steady_rate() -> None:
    clock = Clock(1000.0)
    (worker,) = limits({"requests": 10, "per": "1s", "burst": 4}, clock=clock)
    key = worker.rate_key("192.0.2.1")
    assert key is not None
    answers = [worker.request(key) for _ in range(8)]
    assert answers[:5] == [0] * 5, "burst + 1 at once"
    assert all(wait >= 1 for wait in answers[5:])
    assert worker.rate_limited == 3
    # Steady: 10 per second. Over 5 seconds at 20 per second about half pass.
    passed = 0
    for _ in range(100):
        clock.now += 0.05
        passed += worker.request(key) == 0
    assert 45 <= passed <= 56, passed


def test_retry_after_says_when_a_request_would_pass() -> None:
    clock = Clock(1000.0)
    (worker,) = limits({"requests": 1, "per": "10s"}, clock=clock)  # one per 10 s
    key = worker.rate_key("192.0.2.1")
    assert key is not None
    assert worker.request(key) == 0
    wait = worker.request(key)
    assert 1 <= wait <= 20
    clock.now += wait
    assert worker.request(key) == 0, "Retry-After was enough"


def test_allow_lists_and_addresses_without_a_network() -> None:
    (worker,) = limits(
        {"requests": 1, "allow": ["10.0.0.0/8", "2001:db8::/32"]}, {"per_src": 1, "allow": ["192.0.2.0/24"]}
    )
    assert worker.rate_key("10.1.2.3") is None and worker.rate_key("::ffff:10.1.2.3") is None
    assert worker.rate_key("2001:db8::5") is None
    assert worker.rate_key("192.0.2.1") is not None
    assert worker.conn_key("192.0.2.1") is None and worker.conn_key("10.1.2.3") is not None
    assert worker.rate_key("unix") is None and worker.conn_key("-") is None


def test_two_workers_share_one_allowance() -> None:
    clock = Clock(1000.0)
    first, second = limits({"requests": 6, "per": "60s", "burst": 5}, slots=2, clock=clock)
    key = first.rate_key("198.51.100.7")
    assert key is not None
    admitted = [(first if i % 2 else second).request(key) == 0 for i in range(20)]
    assert admitted.count(True) == 6, "one allowance for the node, not one per worker"
    other = first.rate_key("198.51.100.8")
    assert other is not None and second.request(other) == 0, "another client is unaffected"


def test_per_src_counts_open_connections_across_workers() -> None:
    first, second = limits(conn={"per_src": 3}, slots=2)
    key = first.conn_key("203.0.113.9")
    assert key is not None
    opened = [first.opened(key), second.opened(key), first.opened(key)]
    assert REFUSED not in opened
    assert second.opened(key) == REFUSED
    assert first.conn_limited + second.conn_limited == 1
    entry = opened[1]
    second.closed(entry, second.tag(entry))
    assert second.opened(key) != REFUSED, "a closed connection frees its place"
    first.table.clear_slot(0)  # the worker of slot 0 died with its two connections
    assert first.opened(key) != REFUSED and second.opened(key) != REFUSED, "1 + 2 open"
    assert first.opened(key) == REFUSED


def test_conn_rate_limits_new_connections_per_period() -> None:
    clock = Clock(1000.0)
    (worker,) = limits(conn={"rate": 3, "per": "1s"}, clock=clock)
    key = worker.conn_key("203.0.113.10")
    assert key is not None
    results = []
    for _ in range(5):
        entry = worker.opened(key)
        results.append(entry != REFUSED)
        if entry != REFUSED:
            worker.closed(entry, worker.tag(entry))
    assert results == [True, True, True, False, False]
    clock.now += 2.5
    assert worker.opened(key) != REFUSED, "a new period"


def test_a_connection_reuses_its_entry_until_the_entry_changes_hands() -> None:
    (worker,) = limits({"requests": 100, "burst": 100})
    key = worker.rate_key("192.0.2.44")
    assert key is not None
    assert worker.request(key) == 0
    entry = worker.entry
    assert worker.request(key, entry) == 0 and worker.entry == entry
    other = worker.rate_key("192.0.2.45")
    assert other is not None
    assert worker.request(other, entry) == 0, "a stale hint is looked up again"
    assert worker.entry != entry
