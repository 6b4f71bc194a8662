"""A server dies, or stops answering, under 200 keep-alive clients: no request is lost.

The way it happens in production: hundreds of clients on kept-alive connections, requests
in flight on every server, and one server process killed with SIGKILL (its connections
reset, its port refusing) or frozen with SIGSTOP (its port still completes handshakes but
nothing answers). What a user checks: every request got an answer, the ones that could be
saved were saved (a refused or reset connection before any byte of the response: retried
on another server within `retries`), and every request has its access-log line.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

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


GARBAGE_SERVER = """
import socket, sys, threading
server = socket.create_server(("127.0.0.1", int(sys.argv[1])), backlog=512, reuse_port=True)
print("ready", flush=True)
def answer(connection):
    with connection:
        try:
            if connection.recv(65536):
                connection.sendall(b"garbage, not HTTP at all\\r\\n\\r\\n")
        except OSError:
            pass
while True:
    connection, _ = server.accept()
    threading.Thread(target=answer, args=(connection,), daemon=True).start()
"""


def test_a_server_answering_garbage_costs_only_its_answers_and_nothing_crashes(
    site: Site, servers: list[ServerProcess]
) -> None:
    """w2 is replaced mid-run by a process that answers every request with bytes that are not
    HTTP. Those answers become 502 (a response was received: replaying it is not known to be
    safe, as HAProxy without `retry-on junk-response`), the HTTP check takes w2 out, and from
    then on nothing fails; no worker dies, no traceback, every request answered and logged."""
    check = '{ type = "http", path = "/", interval = "300ms", timeout = "200ms", fall = 2, rise = 2 }'
    proc = site.start(_config(site, servers, check))
    workers_before = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    w2 = servers[1]
    garbage: subprocess.Popen[str] | None = None
    swapped_at = 0.0

    def swap() -> None:
        nonlocal garbage, swapped_at
        w2.kill()
        garbage = subprocess.Popen(
            [sys.executable, "-c", GARBAGE_SERVER, str(w2.port)], stdout=subprocess.PIPE, text=True
        )
        assert garbage.stdout is not None and garbage.stdout.readline().strip() == "ready"
        swapped_at = time.monotonic()

    try:
        load = _run_load(site, during=3.0, action=swap)
    finally:
        if garbage is not None:
            garbage.kill()
            garbage.wait(10)
    outcomes = load.snapshot()
    failures = load.failures()
    print(f"\n{len(outcomes)} requests, w2 answering garbage mid-run: {len(failures)} answered 502")
    assert {o.status for o in failures} <= {502}, f"unexpected failures: {[o for o in failures if o.status != 502][:5]}"
    late = [o for o in failures if o.sent_at > swapped_at + 2 * 0.3 + 0.2 + 0.5]
    assert late == [], f"{len(late)} requests failed after the check should have taken w2 out: {late[:5]}"
    _assert_all_logged(site, load)
    assert proc.alive()
    assert Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split() == workers_before, "a worker died"
    assert "Traceback" not in proc.output()


def test_a_killed_worker_is_replaced_and_only_its_connections_see_it(site: Site, servers: list[ServerProcess]) -> None:
    """workers = 2, one SIGKILLed under load: the requests in flight on its connections are
    lost with it (nothing can answer them), its clients reconnect to the other worker at
    once, the master starts a new worker in its slot, and every request that got an answer
    is logged."""
    config = _config(site, servers, '{ type = "tcp", interval = "500ms" }')
    config = config.replace(site.global_toml(), site.global_toml(extra="workers = 2"), 1)
    proc = site.start(config)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    wait_until(lambda: len(children.read_text().split()) == 2, timeout=10, what="two workers")
    victim = 0
    killed_at = 0.0
    held = 0

    def kill_worker() -> None:
        """Kill the worker that holds the most client connections (the kernel may have
        given them all to one)."""
        nonlocal victim, killed_at, held
        held, victim = max(
            (_client_connections_of(int(pid), site.port), int(pid)) for pid in children.read_text().split()
        )
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()

    load = _run_load(site, during=3.0, action=kill_worker)
    outcomes = load.snapshot()
    failures = load.failures()
    workers_now = children.read_text().split()
    print(
        f"\n{len(outcomes)} requests from {CLIENTS} clients, one of 2 workers killed: {len(failures)} failed,"
        f" {load.connections_opened} connections opened ({held} were the killed worker's), workers {workers_now}"
    )
    assert len(workers_now) == 2 and str(victim) not in workers_now, "the master did not replace the worker"
    # At most one request per connection the killed worker held (in flight, or sent on the
    # connection it left behind); none once the clients reconnected.
    assert held > 0 and len(failures) <= held, (held, failures[:5])
    late = [o for o in failures if o.sent_at > killed_at + 1.0]
    assert late == [], f"{len(late)} requests failed after the clients reconnected: {late[:5]}"
    assert proc.alive()
    _assert_logged_but_the_killed_workers_last_moments(site, load, killed_at)


def _client_connections_of(pid: int, port: int) -> int:
    """Established client connections to `port` that process `pid` holds (ss -p)."""
    listed = subprocess.run(
        ["ss", "-Htnp", "state", "established", "( sport = :%d )" % port],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    return sum(1 for line in listed.splitlines() if f"pid={pid}," in line)


def _assert_logged_but_the_killed_workers_last_moments(site: Site, load: KeepAliveLoad, killed_at: float) -> None:
    """Every answered request is logged, but for those the killed worker answered in its
    last moments: a worker writes its access log in batches (every 50 ms, later when its
    loop is busy), and SIGKILL leaves no chance to write the last one. A request sent a
    second before the kill was answered and written long before it."""
    answered = {o.target: o for o in load.snapshot() if o.status}
    recent = {t for t, o in answered.items() if killed_at - 1.0 <= o.sent_at <= killed_at}

    def unlogged() -> set[str]:
        return set(answered) - set(_logged_targets(site))

    wait_until(
        lambda: not unlogged() - recent,
        timeout=5,
        what=f"answers logged (unlogged, sent this long before the kill: "
        f"{sorted(round(killed_at - answered[t].sent_at, 3) for t in unlogged())[:10]})",
    )
    print(f"answered but not logged: {len(unlogged())} (all sent within 1 s before the kill)")
