"""A server dies, or stops answering, under 200 keep-alive clients: no request is lost.

The way it happens in production: hundreds of clients on kept-alive connections, requests
in flight on every server, and one server process killed with SIGKILL (its connections
reset, its port refusing) or frozen with SIGSTOP (its port still completes handshakes but
nothing answers). What a user checks: every request got an answer, the ones that could be
saved were saved (a refused or reset connection before any byte of the response: retried
on another server within `retries`), and every request has its access-log line.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator

import pytest
from tests.support.load import KeepAliveLoad
from tests.support.process import wait_until
from tests.support.server_process import ServerProcess
from tests.support.site import Site

pytestmark = pytest.mark.e2e

CLIENTS = 200
INTERVAL = 0.2  # each client sends a request every 200 ms: ~1000 requests/s in all


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    procs = [ServerProcess(name) for name in ("w1", "w2", "w3")]
    try:
        for proc in procs:
            proc.start()
        yield procs
    finally:
        for proc in procs:
            proc.resume()
            proc.kill()


def _config(site: Site, servers: list[ServerProcess], check: str, server_timeout: str = "5s") -> str:
    lines = [
        site.global_toml(),
        "[[frontend]]",
        'name = "www"',
        f'bind = ["127.0.0.1:{site.port}"]',
        'default_backend = "web"',
        "[[backend]]",
        'name = "web"',
        "retries = 2",
        "redispatch = true",
        f"check = {check}",
        f'timeouts = {{ connect = "1s", server = "{server_timeout}" }}',
    ]
    for server in servers:
        lines += ["[[backend.server]]", f'name = "{server.name}"', f'address = "{server.address}"']
    return "\n".join(lines) + "\n"


_TARGET = re.compile(r'"GET (/\?c=\d+&n=\d+) HTTP/1.1"')


def _logged_targets(site: Site) -> list[str]:
    return [m.group(1) for line in site.log_lines() for m in [_TARGET.search(line)] if m]


def _run_load(site: Site, during: float, action: Callable[[], None]) -> KeepAliveLoad:
    load = KeepAliveLoad(site.port, clients=CLIENTS, interval=INTERVAL, timeout=3.0).start()
    try:
        wait_until(lambda: load.count() >= 2 * CLIENTS, timeout=15, what="two rounds of requests before the fault")
        action()
        count = load.count()
        deadline = time.monotonic() + during
        wait_until(lambda: time.monotonic() >= deadline, timeout=during + 1, interval=0.05)
        assert load.count() > count + CLIENTS, "the clients stopped making progress after the fault"
    finally:
        load.finish()
    return load


def _assert_all_logged(site: Site, load: KeepAliveLoad) -> None:
    answered = sorted(o.target for o in load.snapshot() if o.status)
    # The access log is written in batches (at most 50 ms late): poll until it holds them all.
    wait_until(lambda: len(_logged_targets(site)) >= len(answered), timeout=5, what="every request logged")
    logged = _logged_targets(site)
    assert sorted(logged) == answered, (
        f"{len(answered)} requests answered, {len(logged)} logged; "
        f"missing: {sorted(set(answered) - set(logged))[:5]}, extra: {sorted(set(logged) - set(answered))[:5]}"
    )


def test_a_killed_server_loses_no_request(site: Site, servers: list[ServerProcess]) -> None:
    site.start(_config(site, servers, '{ type = "tcp", interval = "500ms", fall = 2, rise = 2 }'))
    w2 = servers[1]
    load = _run_load(site, during=3.0, action=w2.kill)

    outcomes = load.snapshot()
    failures = load.failures()
    served = load.served()
    print(
        f"\n{len(outcomes)} requests from {CLIENTS} keep-alive clients, w2 killed mid-run: "
        f"{len(failures)} failed, served {dict(served)}, {load.connections_opened} connections opened"
    )
    assert failures == [], f"{len(failures)} of {len(outcomes)} requests failed: {failures[:5]}"
    assert served["w2"] > 0 and served["w1"] > 0 and served["w3"] > 0, served
    # The clients kept their connections: a kill must not close them.
    assert load.connections_opened <= CLIENTS + 5, f"{load.connections_opened} connections for {CLIENTS} clients"
    _assert_all_logged(site, load)


def test_a_server_that_stops_answering_costs_only_its_requests_in_flight(
    site: Site, servers: list[ServerProcess]
) -> None:
    """SIGSTOP: the kernel still accepts connections to w2, nothing answers. Requests already
    sent to it cannot be replayed safely once sent (the server may have acted), so they get
    504 after `timeouts.server`; the HTTP check takes w2 out, and then nothing fails."""
    check = '{ type = "http", path = "/", interval = "300ms", timeout = "200ms", fall = 2, rise = 2 }'
    site.start(_config(site, servers, check, server_timeout="1s"))
    w2 = servers[1]
    stopped_at = 0.0

    def freeze() -> None:
        nonlocal stopped_at
        stopped_at = time.monotonic()
        w2.stop_answering()

    load = _run_load(site, during=4.0, action=freeze)
    outcomes = load.snapshot()
    failures = load.failures()
    print(f"\n{len(outcomes)} requests, w2 frozen mid-run: {len(failures)} answered 504, served {dict(load.served())}")
    assert {o.status for o in failures} <= {504}, f"unexpected failures: {[o for o in failures if o.status != 504][:5]}"
    # Only requests sent before the check took w2 out (fall 2 x 300 ms + a 100 ms state beat,
    # plus the 1 s server timeout they waited) may fail.
    late = [o for o in failures if o.sent_at > stopped_at + 2 * 0.3 + 0.2 + 0.5]
    assert late == [], f"{len(late)} requests failed after w2 should have been out: {late[:5]}"
    assert len(failures) < len(outcomes) / 10, f"{len(failures)} of {len(outcomes)} failed"
    _assert_all_logged(site, load)
