"""rate_limit and conn_limit (issue #18 item 1) as an operator checks them: `balancer run`
with `workers = 2`, clients on several source addresses (127.0.0.1, .2, .3), the access log
and /metrics. Every client connection is new (Connection: close), so a client's requests
land on both workers and the limits must hold for the node, not per worker."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.support import TcpEchoServer, free_port, wait_until
from tests.support.config import server_blocks

pytestmark = pytest.mark.e2e

LOG_FORMAT = "%pid %ci %ST %ts %{+Q}r"


def site_config(site, servers, frontend_extra: str, admin_port: int = 0, mode: str = "http") -> str:
    admin = f'\n[admin]\nbind = "127.0.0.1:{admin_port}"\n' if admin_port else ""
    return (
        site.global_toml(log_format=LOG_FORMAT, extra="workers = 2")
        + admin
        + f'\n[[frontend]]\nname = "www"\nbind = ["127.0.0.1:{site.port}"]\nmode = "{mode}"\n'
        + f'default_backend = "web"\n{frontend_extra}\n'
        + f'\n[[backend]]\nname = "web"\nmode = "{mode}"\n'
        + server_blocks(servers)
    )


def get(site, source: str, path: str = "/", close: bool = True) -> tuple[int, dict[str, str]]:
    """One request from `source` on a new connection: (status, headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", path, headers={"Connection": "close"} if close else {})
        response = conn.getresponse()
        response.read()
        return response.status, {name.lower(): value for name, value in response.getheaders()}
    finally:
        conn.close()


def metrics(admin_port: int) -> dict[str, float]:
    """frontend www's samples of /metrics by name."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{admin_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("frontend") == "www":
                samples[sample.name] = sample.value
    return samples


def log_codes(site) -> list[str]:
    return [line.split()[3] for line in site.log_lines()]


def test_a_client_over_its_rate_gets_429_within_its_burst_and_others_are_unaffected(site, tagged):
    """(b), (c), (e): 10 per 10 s with a burst of 5: 6 at once, then 429 with Retry-After;
    a second address has its own allowance; an allowed network is exempt; the access log
    says RR and /metrics counts them."""
    admin_port = free_port()
    servers = tagged("s1")
    limit = 'rate_limit = { requests = 10, per = "10s", burst = 5, allow = ["127.0.0.3/32"] }'
    process = site.start(site_config(site, servers, limit, admin_port))
    wait_until(lambda: "balancer running" in process.output(), timeout=15, what="both workers to serve")

    with ThreadPoolExecutor(3) as pool:  # a few at once: both workers accept some
        first = list(pool.map(lambda i: get(site, "127.0.0.1", f"/a{i}"), range(30)))
    ok = sum(status == 200 for status, _ in first)
    refused = [headers for status, headers in first if status == 429]
    second = [get(site, "127.0.0.2", f"/b{i}")[0] for i in range(6)]
    exempt = [get(site, "127.0.0.3", f"/c{i}")[0] for i in range(30)]
    wait_until(lambda: len(site.log_lines()) >= 66, what="66 access lines")
    pids = {line.split()[0] for line in site.log_lines()}
    print(
        f"\n127.0.0.1: {ok} x 200, {len(refused)} x 429 of 30 (burst 5: 6 expected); "
        f"127.0.0.2: {second.count(200)} x 200 of 6; 127.0.0.3 (allowed): {exempt.count(200)} x 200 of 30; "
        f"workers serving: {len(pids)}"
    )
    assert 6 <= ok <= 7, "burst + 1 at once (7: a period boundary fell inside the run)"
    assert ok + len(refused) == 30
    assert all(1 <= int(headers["retry-after"]) <= 7 for headers in refused), refused[:1]
    assert second == [200] * 6, "another address has its own allowance"
    assert exempt == [200] * 30, "allow exempts"
    assert len(pids) == 2, "both workers served: the limit is the node's"
    assert log_codes(site).count("RR") == len(refused)
    assert all(line.split()[2] == "429" for line in site.log_lines() if line.split()[3] == "RR")

    def counted() -> dict[str, float] | None:
        found = metrics(admin_port)
        return found if found.get("balancer_frontend_rate_limited_total") == len(refused) else None

    samples = wait_until(counted, timeout=5, what="rate_limited in /metrics")
    assert samples["balancer_frontend_conn_limited_total"] == 0

    # The steady rate: a request passes again within a second or so (10 per 10 s).
    wait_until(lambda: get(site, "127.0.0.1", "/later")[0] == 200, timeout=10, interval=0.2, what="a token")


def test_tarpit_holds_the_request_then_answers_429(site, tagged):
    servers = tagged("s1")
    limit = 'rate_limit = { requests = 1, per = "60s", action = "tarpit" }\ntimeouts = { tarpit = "1s" }'
    site.start(site_config(site, servers, limit))
    assert get(site, "127.0.0.1")[0] == 200
    started = time.monotonic()
    status, headers = get(site, "127.0.0.1", close=False)
    held = time.monotonic() - started
    print(f"\ntarpit: 429 after {held:.2f}s")
    assert status == 429 and headers["connection"] == "close"
    assert 0.9 <= held < 5
    wait_until(lambda: "PT" in log_codes(site), what="a PT access line")
    assert len(servers[0].requests) == 1


def test_conn_limit_per_src_refuses_the_connection_over_it_with_a_429(site, tagged):
    """(d), (e): three open connections per address; the fourth is answered 429 and
    closed (RC in the log); another address is unaffected; a freed place is free again."""
    admin_port = free_port()
    servers = tagged("s1")
    site.start(site_config(site, servers, "conn_limit = { per_src = 3 }", admin_port))
    held = []
    for i in range(3):
        conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=10, source_address=("127.0.0.1", 0))
        conn.request("GET", f"/keep{i}")  # kept alive: the connection stays open and counted
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        held.append(conn)
    status, headers = get(site, "127.0.0.1", "/fourth", close=False)
    assert status == 429 and headers["connection"] == "close"
    assert get(site, "127.0.0.2", "/other")[0] == 200, "another address is unaffected"
    # A refused connection that sends nothing is not held for http_request (10 s).
    silent = socket.create_connection(("127.0.0.1", site.port), timeout=10, source_address=("127.0.0.1", 0))
    started = time.monotonic()
    assert silent.recv(1) == b""
    print(f"\na silent refused connection closed after {time.monotonic() - started:.2f}s")
    assert time.monotonic() - started < 3
    silent.close()
    held.pop().close()
    wait_until(lambda: get(site, "127.0.0.1", "/again")[0] == 200, timeout=5, what="the freed place")
    for conn in held:
        conn.close()
    wait_until(lambda: "RC" in log_codes(site), what="an RC access line")
    refused = log_codes(site).count("RC")
    print(f"\nconn_limit per_src = 3: {refused} connection(s) refused (RC)")
    wait_until(
        lambda: metrics(admin_port).get("balancer_frontend_conn_limited_total") == refused + 1,  # + the silent one
        what="conn_limited in /metrics",
    )


def test_tcp_mode_limits_connections_by_rate_and_per_src(site):
    with TcpEchoServer() as echo:
        limit = 'rate_limit = { requests = 2, per = "60s", burst = 2 }\nconn_limit = { per_src = 2 }'
        site.start(site_config(site, [echo], limit, mode="tcp"))

        def echoes(sock: socket.socket) -> bool:
            try:
                sock.sendall(b"ping")
                return sock.recv(16) == b"ping"
            except OSError:
                return False

        def connect(source: str) -> socket.socket:
            return socket.create_connection(("127.0.0.1", site.port), timeout=5, source_address=(source, 0))

        # 127.0.0.5: not the address whose connections tell the test the port listens.
        first, second = connect("127.0.0.5"), connect("127.0.0.5")
        assert echoes(first) and echoes(second)
        third = connect("127.0.0.5")
        assert not echoes(third), "per_src = 2: the third open connection is closed"
        third.close()
        other = connect("127.0.0.2")
        assert echoes(other), "another address is unaffected"
        other.close()
        first.close()
        second.close()

        def one_more() -> bool:
            with connect("127.0.0.5") as sock:
                return echoes(sock)

        # rate_limit: burst 2 means 3 connections at once; two were admitted before, so the
        # third is admitted once per_src has their places back (until then it is refused by
        # conn_limit, which does not count against the rate), and no fourth one.
        wait_until(one_more, what="a third connection admitted once the first two closed")
        results = [one_more() for _ in range(2)]
        print(f"\ntcp: connections after 3 admitted (rate 2/60s, burst 2): {results}")
        assert results == [False, False], results
        wait_until(lambda: "RR" in log_codes(site) and "RC" in log_codes(site), what="RR and RC access lines")


def test_a_worker_killed_with_open_connections_frees_their_places(site, tagged):
    """The master clears what a dead worker counted: its connections died with it."""
    servers = tagged("s1")
    process = site.start(site_config(site, servers, "conn_limit = { per_src = 2 }"))
    wait_until(lambda: "balancer running" in process.output(), timeout=15, what="both workers to serve")
    held = []
    for i in range(2):
        conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=10, source_address=("127.0.0.6", 0))
        conn.request("GET", f"/keep{i}")
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        held.append(conn)
    assert get(site, "127.0.0.6", "/third", close=False)[0] == 429
    wait_until(lambda: len(site.log_lines()) >= 3, what="the three access lines")  # which workers hold them
    pids = {int(line.split()[0]) for line in site.log_lines() if line.split()[1] == "127.0.0.6"}
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: process.output().count("restarting it") >= len(pids), timeout=10, what="the worker(s) restarted")
    for conn in held:
        conn.close()
    statuses = wait_until(
        lambda: [s for s in (get(site, "127.0.0.6", "/a")[0], get(site, "127.0.0.6", "/b")[0])] == [200, 200],
        timeout=10,
        interval=0.2,
        what="both places free again",
    )
    print(f"\nworkers {sorted(pids)} killed with the client's 2 connections: its places are free again")
    assert statuses
