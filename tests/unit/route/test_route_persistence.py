"""Session persistence without sockets: cookie values in and out, the stick table, and where
a persisted client goes for each state of its server. Clocks are injected."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pydantic import ValidationError

from balancer.config.model import Backend, Cookie, StickTable
from balancer.route.persistence import (
    CookiePersistence,
    CookieValue,
    Persistence,
    StickEntries,
    base36,
    keeps_sessions,
)
from balancer.runtime.state import BackendRuntime

NOW = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def cookie(clock: Clock | None = None, **settings: Any) -> CookiePersistence:
    config = Cookie(**{"name": "SERVERID", **settings})
    return CookiePersistence(config, clock or Clock())


def request_cookie(value: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"Host", b"example.test"), (b"Cookie", value)]


def inserted_value(line: bytes, name: bytes = b"SERVERID") -> bytes:
    """The cookie value of the Set-Cookie line an insert-mode response got."""
    assert line.startswith(b"Set-Cookie: " + name + b"="), line
    return line.split(b"\r\n")[0].split(b"=", 1)[1].split(b";")[0]


# -- insert: indirect, preserve, postonly (issue #13, #16) ----------------------------------


def test_indirect_removes_the_cookie_before_the_server_sees_it() -> None:
    headers = [*request_cookie(b"theme=dark; SERVERID=s1; lang=en"), (b"cookie", b"SERVERID=s1")]
    assert cookie().find(headers) == CookieValue("s1")
    assert headers == [(b"Host", b"example.test"), (b"Cookie", b"theme=dark; lang=en")]
    kept = request_cookie(b"theme=dark; SERVERID=s1")
    assert cookie(indirect=False).find(kept) == CookieValue("s1")
    assert kept == request_cookie(b"theme=dark; SERVERID=s1"), "indirect = false forwards it"
    forged = request_cookie(b"SERVERID=<bad>")
    assert cookie().find(forged) is None and forged == [(b"Host", b"example.test")], "any value is removed"


def test_without_preserve_the_servers_own_cookie_of_that_name_is_replaced() -> None:
    head = b"\r\nSet-Cookie: SERVERID=app; path=/app\r\nX-A: 1"
    assert cookie(nocache=False).response(head, None, "s1") == (b"\r\nX-A: 1", b"Set-Cookie: SERVERID=s1; path=/\r\n")
    assert cookie(preserve=True).response(head, None, "s1") == (head, b""), "preserve: untouched"


def test_postonly_inserts_only_into_responses_to_post() -> None:
    postonly = cookie(postonly=True, nocache=False)
    assert postonly.response(b"", None, "s1", b"GET") == (b"", b"")
    assert postonly.response(b"", None, "s1", b"POST")[1] == b"Set-Cookie: SERVERID=s1; path=/\r\n"


# -- insert: the value and the header ------------------------------------------------------


def test_insert_sets_the_server_name_with_path_and_flags() -> None:
    plain = cookie()
    assert plain.response(b"\r\nContent-Length: 2", None, "s1") == (
        b"\r\nContent-Length: 2",
        b"Set-Cookie: SERVERID=s1; path=/\r\nCache-Control: private\r\n",
    )
    flagged = cookie(httponly=True, secure=True, nocache=False)
    assert flagged.response(b"", None, "s2")[1] == b"Set-Cookie: SERVERID=s2; path=/; HttpOnly; Secure\r\n"


def test_insert_only_when_the_client_lacks_a_valid_cookie_for_that_server() -> None:
    persistence = cookie()
    found = persistence.find(request_cookie(b"theme=dark; SERVERID=s1; lang=en"))
    assert found == CookieValue("s1")
    assert persistence.response(b"", found, "s1") == (b"", b""), "already pinned: no Set-Cookie"
    # Redispatched elsewhere: the cookie is rewritten to the new server.
    assert inserted_value(persistence.response(b"", found, "s2")[1]) == b"s2"


def test_nocache_leaves_responses_already_private_or_no_store_alone() -> None:
    persistence = cookie()
    for lines in (b"\r\nCache-Control: private, max-age=5", b"\r\ncache-control: no-store"):
        assert b"Cache-Control" not in persistence.response(lines, None, "s1")[1]
    public = persistence.response(b"\r\nCache-Control: public, max-age=600", None, "s1")[1]
    assert public.endswith(b"\r\nCache-Control: private\r\n")


def test_request_cookie_matching_is_exact_and_the_first_valid_one_wins() -> None:
    persistence = cookie()
    assert persistence.find(request_cookie(b"XSERVERID=s1; serverid=s2")) is None, "names are case-sensitive"
    assert persistence.find(request_cookie(b"a=1;SERVERID = s3 ;b=2")) == CookieValue("s3")
    headers = [(b"cookie", b"SERVERID=s4"), (b"COOKIE", b"SERVERID=s5")]
    assert persistence.find(headers) == CookieValue("s4")
    assert persistence.find([(b"X-Cookie", b"SERVERID=s1")]) is None


@pytest.mark.parametrize(
    "value",
    [b"", b"s1,x", b"s1 s2", b'"s1"', b"s1|", b"s1|10|", b"s1|+1|1", b"s1|1_0|1", b"s1|-5|1", b"s1|1|2|3", b"\xffs1"],
)
def test_malformed_values_are_no_cookie(value: bytes) -> None:
    persistence = cookie(maxidle="1h")
    assert persistence.find(request_cookie(b"SERVERID=" + value)) is None


def test_a_response_header_never_carries_client_bytes() -> None:
    """Whatever the client sent, the Set-Cookie names a configured server and nothing else."""
    persistence = cookie(maxlife="1h")
    hostile = b"SERVERID=s1|0|0\r\nX-Evil: 1; SERVERID=s1%0d%0aX: y"
    found = persistence.find(request_cookie(hostile))
    line = persistence.response(b"", found, "s2")[1]
    assert line.count(b"\r\n") == 2 and b"Evil" not in line and b"%" not in line
    assert inserted_value(line).startswith(b"s2|")


@pytest.mark.parametrize("mode", ["insert", "prefix", "rewrite"])
def test_a_long_hostile_cookie_header_is_read_in_linear_time(mode: str) -> None:
    """32 KB of blanks inside the value: a backtracking pattern would take seconds."""
    persistence = cookie(mode=mode)
    value = b"SERVERID=s1" + b" " * 32_000 + b"x; " + b"SERVERID " * 50
    started = time.perf_counter()
    for _ in range(10):
        persistence.find(request_cookie(value))
    assert time.perf_counter() - started < 0.5


# -- insert with dates: maxidle and maxlife ------------------------------------------------


def test_dated_value_round_trips() -> None:
    clock = Clock()
    persistence = cookie(clock, maxidle="30m", maxlife="1d")
    value = inserted_value(persistence.response(b"", None, "web-1.a_b")[1])
    stamp = base36(int(NOW)).encode()
    assert value == b"web-1.a_b|" + stamp + b"|" + stamp
    assert persistence.find(request_cookie(b"SERVERID=" + value)) == CookieValue("web-1.a_b", int(NOW), int(NOW))
    assert int(base36(123456789), 36) == 123456789 and base36(0) == "0"


def test_maxidle_expires_an_idle_cookie() -> None:
    clock = Clock()
    persistence = cookie(clock, maxidle="60s")
    value = b"SERVERID=" + inserted_value(persistence.response(b"", None, "s1")[1])
    clock.now += 60
    assert persistence.find(request_cookie(value)) == CookieValue("s1", int(NOW), int(NOW))
    clock.now += 1
    assert persistence.find(request_cookie(value)) is None, "idle 61s > maxidle 60s"


def test_maxidle_refreshes_the_last_seen_date_and_keeps_the_first() -> None:
    clock = Clock()
    persistence = cookie(clock, maxidle="60s", maxlife="1h")
    value = b"SERVERID=" + inserted_value(persistence.response(b"", None, "s1")[1])
    clock.now += 14
    assert persistence.response(b"", persistence.find(request_cookie(value)), "s1")[1] == b"", "fresh enough"
    clock.now += 1  # 15s = maxidle / 4: due for a refresh
    refreshed = inserted_value(persistence.response(b"", persistence.find(request_cookie(value)), "s1")[1])
    assert refreshed == f"s1|{base36(int(NOW) + 15)}|{base36(int(NOW))}".encode()
    # Kept alive by refreshes, the cookie still dies at maxlife.
    value = b"SERVERID=" + refreshed
    for _ in range(239):
        clock.now += 15
        found = persistence.find(request_cookie(value))
        assert found is not None
        line = persistence.response(b"", found, "s1")[1]
        if line:
            value = b"SERVERID=" + inserted_value(line)
    clock.now += 15  # now - first = 3600 + 15 > maxlife
    assert persistence.find(request_cookie(value)) is None


def test_maxlife_alone_never_refreshes() -> None:
    clock = Clock()
    persistence = cookie(clock, maxlife="10m")
    value = b"SERVERID=" + inserted_value(persistence.response(b"", None, "s1")[1])
    clock.now += 599
    found = persistence.find(request_cookie(value))
    assert found is not None and persistence.response(b"", found, "s1")[1] == b""
    clock.now += 2
    assert persistence.find(request_cookie(value)) is None


def test_an_undated_cookie_is_accepted_and_dated_and_dates_are_dropped_when_unwanted() -> None:
    dated = cookie(maxidle="1h")
    found = dated.find(request_cookie(b"SERVERID=s1"))
    assert found == CookieValue("s1")
    stamp = base36(int(NOW))
    assert inserted_value(dated.response(b"", found, "s1")[1]) == f"s1|{stamp}|{stamp}".encode()
    undated = cookie()
    found = undated.find(request_cookie(f"SERVERID=s1|{stamp}|{stamp}".encode()))
    assert found is not None and found.server == "s1"
    assert inserted_value(undated.response(b"", found, "s1")[1]) == b"s1"


# -- prefix and rewrite --------------------------------------------------------------------


def test_prefix_marks_the_servers_cookie_and_strips_the_mark_on_the_way_in() -> None:
    persistence = cookie(name="JSESSIONID", mode="prefix")
    head = b"\r\nSet-Cookie: JSESSIONID=abc~123; Path=/app; HttpOnly\r\nSet-Cookie: other=1\r\nX-Note: JSESSIONID=x"
    lines, extra = persistence.response(head, None, "s2")
    assert extra == b""
    assert lines == (
        b"\r\nSet-Cookie: JSESSIONID=s2~abc~123; Path=/app; HttpOnly\r\nSet-Cookie: other=1\r\nX-Note: JSESSIONID=x"
    )
    headers = request_cookie(b"theme=dark; JSESSIONID=s2~abc~123; x=y")
    assert persistence.find(headers) == CookieValue("s2")
    assert headers[1] == (b"Cookie", b"theme=dark; JSESSIONID=abc~123; x=y"), "the server gets its own value back"


def test_prefix_leaves_unmarked_cookies_alone_and_strips_every_mark() -> None:
    persistence = cookie(name="SID", mode="prefix")
    headers = request_cookie(b"SID=plain; a=1")
    assert persistence.find(headers) is None
    assert headers[1] == (b"Cookie", b"SID=plain; a=1")
    headers = [(b"Cookie", b"SID=bad id~v1"), (b"cookie", b"SID=s3~v2")]
    assert persistence.find(headers) == CookieValue("s3"), "an invalid id persists nothing"
    assert headers == [(b"Cookie", b"SID=v1"), (b"cookie", b"SID=v2")]
    # A server that sets no such cookie: the head passes untouched.
    assert persistence.response(b"\r\nSet-Cookie: SIDE=1", None, "s1") == (b"\r\nSet-Cookie: SIDE=1", b"")


def test_rewrite_replaces_the_servers_value_by_its_name() -> None:
    persistence = cookie(name="SID", mode="rewrite", maxidle="1m", httponly=True)
    lines, extra = persistence.response(b"\r\nset-cookie: SID=whatever; Secure\r\nContent-Length: 0", None, "s3")
    assert (lines, extra) == (b"\r\nset-cookie: SID=s3; Secure\r\nContent-Length: 0", b"")
    headers = request_cookie(b"SID=s3")
    assert persistence.find(headers) == CookieValue("s3"), "dates only exist in insert mode"
    assert headers[1] == (b"Cookie", b"SID=s3"), "rewrite mode forwards the cookie as sent"


def test_cookie_names_are_tokens() -> None:
    for bad in ("a;b", "a b", "a=b", "", "é"):
        with pytest.raises(ValidationError):
            Cookie(name=bad)
    assert Cookie(name="__Host-sid").name == "__Host-sid"


# -- the stick table ------------------------------------------------------------------------


def stick(size: int = 3, expire: str = "60s", clock: Clock | None = None) -> StickEntries:
    return StickEntries(StickTable(size=size, expire=expire), clock or Clock(0.0))


def test_stick_table_evicts_the_least_recently_used() -> None:
    clock = Clock(0.0)
    table = stick(size=3, clock=clock)
    for client, server in (("10.0.0.1", "s1"), ("10.0.0.2", "s2"), ("10.0.0.3", "s3")):
        clock.now += 1
        table.put(client, server)
    clock.now += 1
    assert table.get("10.0.0.1") == "s1"  # now the most recently used
    clock.now += 1
    table.put("10.0.0.4", "s1")
    assert len(table) == 3
    assert table.get("10.0.0.2") == "", "least recently used, evicted"
    assert [table.get(c) for c in ("10.0.0.1", "10.0.0.3", "10.0.0.4")] == ["s1", "s3", "s1"]
    table.put("10.0.0.3", "s2")  # a new assignment replaces the old one
    assert table.get("10.0.0.3") == "s2" and len(table) == 3


def test_stick_table_forgets_entries_idle_longer_than_expire() -> None:
    clock = Clock(0.0)
    table = stick(size=100, expire="60s", clock=clock)
    table.put("10.0.0.1", "s1")
    table.put("10.0.0.2", "s2")
    clock.now = 50
    assert table.get("10.0.0.1") == "s1"  # a use: idle time starts again
    clock.now = 100
    assert table.get("10.0.0.1") == "s1", "used 50s ago"
    assert table.get("10.0.0.2") == "", "idle 100s > 60s"
    clock.now = 161
    table.put("10.0.0.3", "s3")
    assert len(table) == 1 and table.get("10.0.0.3") == "s3"


def test_stick_table_of_a_hundred_thousand_clients_stays_bounded() -> None:
    """Set-associative: a new client evicts the least recently used of its bucket, so the
    table holds at most `size` and nearly that many once many more clients came."""
    clock = Clock(0.0)
    table = stick(size=100_000, expire="30m", clock=clock)
    for i in range(150_000):
        clock.now = i / 1000
        table.put(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", f"s{i % 3}")
    assert 95_000 <= len(table) <= 100_000
    last = [2 * 65536 + 73 * 256 + i for i in range(200, 240)]  # 10.2.73.200-239
    assert [table.get(f"10.2.73.{i & 255}") for i in last] == [f"s{i % 3}" for i in last], "the latest are there"
    assert sum(table.get(f"10.0.0.{i}") != "" for i in range(100)) < 25, "the first are mostly gone"


def test_stick_table_names_servers_by_name_whatever_their_order() -> None:
    """A shared table outlives a reload: its entries must name the same server when the new
    config lists the servers in another order, and nobody when the server is gone."""
    first = stick(size=10)
    first.put("192.0.2.1", "b")
    first.put("2001:db8::1", "gone")
    later = StickEntries(StickTable(size=10, expire="60s"), Clock(0.0), first.table)
    later.know(["c", "b", "a"])
    assert later.get("192.0.2.1") == "b"
    assert later.get("2001:db8::1") == "", "a server the config no longer has"


# -- where a persisted client goes ----------------------------------------------------------


def backend_with(redispatch: bool = True, **settings: Any) -> tuple[Persistence, BackendRuntime]:
    config = Backend.model_validate(
        {
            "name": "web",
            "redispatch": redispatch,
            "server": [{"name": f"s{i}", "address": f"127.0.0.1:{9000 + i}"} for i in (1, 2, 3)],
            **settings,
        }
    )
    runtime = BackendRuntime(config)
    persistence = Persistence.of(config, runtime)
    assert persistence is not None
    return persistence, runtime


def test_no_persistence_configured_costs_nothing() -> None:
    config = Backend.model_validate({"name": "web", "server": [{"name": "s1", "address": "127.0.0.1:1"}]})
    assert Persistence.of(config, BackendRuntime(config)) is None


def test_ready_and_drain_keep_their_clients_maint_down_and_ejected_do_not() -> None:
    persistence, runtime = backend_with(cookie={"name": "SERVERID"})
    s1 = runtime.by_name["s1"]
    assert persistence.lookup(CookieValue("s1"), "10.0.0.1") == s1
    runtime.set_state(s1, "drain")
    assert persistence.lookup(CookieValue("s1"), "10.0.0.1") == s1, "drain keeps persisted sessions"
    runtime.set_state(s1, "ready")
    runtime.set_weight(s1, 0)
    assert persistence.lookup(CookieValue("s1"), "10.0.0.1") == s1, "weight 0 drains softly"
    runtime.set_state(s1, "maint")
    assert persistence.lookup(CookieValue("s1"), "10.0.0.1") is None, "maint: redispatch"
    runtime.set_state(s1, "ready")
    runtime.set_health(s1, "down")
    assert not keeps_sessions(s1)
    assert persistence.lookup(CookieValue("s1"), "10.0.0.1") is None, "down: redispatch"
    runtime.set_health(s1, "up")
    s1.ejected = True
    assert persistence.lookup(CookieValue("s1"), "10.0.0.1") is None, "ejected: redispatch"


def test_without_redispatch_a_client_of_a_lost_server_is_still_balanced_anew() -> None:
    """Issue #13: HAProxy re-balances a client whose cookie names a down or maint server
    whatever `option redispatch` says (that option is about retries)."""
    persistence, runtime = backend_with(redispatch=False, cookie={"name": "SERVERID"})
    runtime.set_state(runtime.by_name["s2"], "maint")
    assert persistence.lookup(CookieValue("s2"), "10.0.0.1") is None
    runtime.set_health(runtime.by_name["s1"], "down")
    assert persistence.lookup(CookieValue("s1"), "10.0.0.1") is None
    assert persistence.lookup(CookieValue("nope"), "10.0.0.1") is None, "an unknown server: balance"
    assert persistence.lookup(None, "10.0.0.1") is None


def test_persist_keeps_a_client_on_its_down_or_maint_server() -> None:
    persistence, runtime = backend_with(persist=True, cookie={"name": "SERVERID"}, stick={"expire": "30m"})
    s1, s2 = runtime.by_name["s1"], runtime.by_name["s2"]
    runtime.set_state(s1, "maint")
    assert persistence.lookup(CookieValue("s1"), "10.0.0.1") == s1
    runtime.set_health(s2, "down")
    persistence.assigned("10.0.0.9", s2)
    assert persistence.lookup(None, "10.0.0.9") == s2, "a stick entry too"


def test_stick_table_learns_assignments_and_yields_to_a_cookie() -> None:
    persistence, runtime = backend_with(cookie={"name": "SERVERID"}, stick={"expire": "30m", "size": 10})
    s2, s3 = runtime.by_name["s2"], runtime.by_name["s3"]
    assert persistence.lookup(None, "10.0.0.7") is None
    persistence.assigned("10.0.0.7", s2)
    assert persistence.lookup(None, "10.0.0.7") == s2
    assert persistence.lookup(CookieValue("s3"), "10.0.0.7") is s3, "the cookie comes first"
    assert persistence.lookup(CookieValue("gone"), "10.0.0.7") == s2, "then the table"
    for nowhere in ("", "-", "unix"):  # a unix-socket client has no address to stick
        persistence.assigned(nowhere, s3)
        assert persistence.lookup(None, nowhere) is None
    assert persistence.stick is not None and len(persistence.stick) == 1


def test_two_first_connections_at_once_agree_on_one_server() -> None:
    """Two workers miss the same new client at once and balance it each: the first to
    claim the entry wins, and the other sends the client there too."""
    persistence, runtime = backend_with(stick={"expire": "30m", "size": 10})
    s1, s2 = runtime.by_name["s1"], runtime.by_name["s2"]
    assert persistence.stick is not None
    other_worker = StickEntries(persistence.stick.config, table=persistence.stick.table)
    other_worker.know(runtime.by_name)
    assert other_worker.claim("10.0.0.5", "s1") == "s1"
    assert persistence.lookup(None, "10.0.0.5") == s1  # (had it looked a moment later)
    assert persistence.claim("10.0.0.5", s2) is s1, "the first writer wins"
    runtime.set_health(s1, "down")
    assert persistence.lookup(None, "10.0.0.5") is None
    assert persistence.claim("10.0.0.5", s2) is s2, "not to a server that cannot take it"
    persistence.assigned("10.0.0.5", s2)
    assert other_worker.get("10.0.0.5") == "s2"
