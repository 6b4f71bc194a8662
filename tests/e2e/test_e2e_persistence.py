"""Session persistence as an operator checks it: `balancer run`, curl with a cookie jar, urllib.

Cookies need no shared state (the value names the server), so they hold across two workers
and across a reload; stick tables live in each worker, so their test runs one worker.
"""

from __future__ import annotations

import json
import signal
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from tests.support import wait_until
from tests.support.config import server_blocks
from tests.support.curl import curl

pytestmark = pytest.mark.e2e


def config(site, backend_extra: str, servers, workers: int) -> str:
    return (
        site.global_toml(extra=f"workers = {workers}")
        + f'\n[[frontend]]\nname = "www"\nbind = ["127.0.0.1:{site.port}"]\nmode = "http"\ndefault_backend = "web"\n'
        + f'\n[[backend]]\nname = "web"\nbalance = "roundrobin"\n{backend_extra}\n'
        + server_blocks(servers)
    )


def start(site, text: str):
    process = site.start(text)
    wait_until(lambda: "balancer running" in process.output(), timeout=15, what="the first workers to serve")
    return process


def jar_cookies(jar: Path) -> dict[str, str]:
    """name -> value of the cookies in a curl (Netscape format) cookie jar."""
    cookies = {}
    for line in jar.read_text().splitlines():
        if line.startswith("#HttpOnly_"):
            line = line[len("#HttpOnly_") :]
        elif line.startswith("#") or not line.strip():
            continue
        fields = line.split("\t")
        cookies[fields[5]] = fields[6]
    return cookies


def fetch_with_jar(site, jar: Path, paths: list[str]) -> list[tuple[int, dict[str, str], bytes]]:
    """One curl run: every path on a new connection (so across workers), the jar read and written."""
    result = curl("-b", str(jar), "-c", str(jar), "-H", "Connection: close", *[site.url(p) for p in paths])
    finals = result.finals
    assert len(finals) == len(paths), result.stderr
    assert all(status == 200 for status, _, _ in finals), [status for status, _, _ in finals]
    return finals


def test_cookie_insert_pins_a_client_across_50_requests_two_workers_and_a_reload(site, tagged, tmp_path):
    servers = tagged("s1", "s2", "s3")
    text = config(site, 'cookie = { name = "SERVERID", mode = "insert", httponly = true }', servers, workers=2)
    process = start(site, text)
    jar = tmp_path / "jar.txt"

    before = fetch_with_jar(site, jar, [f"/before/{i}" for i in range(50)])
    owner = before[0][1]["server-name"]
    assert jar_cookies(jar) == {"SERVERID": owner}
    assert "HttpOnly" in before[0][1]["set-cookie"] and before[0][1]["cache-control"] == "private"
    assert Counter(h["server-name"] for _, h, _ in before) == {owner: 50}
    assert all("set-cookie" not in h for _, h, _ in before[1:]), "the cookie is set once"

    reloads = process.output().count("reload complete")
    process.send_signal(signal.SIGHUP)
    wait_until(lambda: process.output().count("reload complete") > reloads, timeout=30, what="reload complete")

    after = fetch_with_jar(site, jar, [f"/after/{i}" for i in range(50)])
    assert Counter(h["server-name"] for _, h, _ in after) == {owner: 50}, "the new workers read the same cookie"
    others = [s for s in servers if s.name != owner]
    assert all(not s.requests for s in others)

    # Without the cookie the same site balances: persistence is what pinned the client.
    strangers = curl("-H", "Connection: close", *[site.url(f"/x/{i}") for i in range(12)])
    assert {h["server-name"] for _, h, _ in strangers.finals} == {"s1", "s2", "s3"}


def test_cookie_prefix_round_trips_the_servers_own_cookie(site, tagged, tmp_path):
    servers = tagged("s1", "s2", "s3")
    start(site, config(site, 'cookie = { name = "JSESSIONID", mode = "prefix" }', servers, workers=2))
    jar = tmp_path / "jar.txt"

    (login,) = fetch_with_jar(site, jar, ["/set-cookie/JSESSIONID/abc123"])
    owner = login[1]["server-name"]
    assert jar_cookies(jar) == {"JSESSIONID": f"{owner}~abc123"}

    echoes = fetch_with_jar(site, jar, ["/echo"] * 20)
    for _, headers, body in echoes:
        assert headers["server-name"] == owner
        seen = {name.lower(): value for name, value in json.loads(body)["headers"]}
        assert seen["cookie"] == "JSESSIONID=abc123", "the application gets its own value back"
    assert jar_cookies(jar) == {"JSESSIONID": f"{owner}~abc123"}


def test_stick_table_pins_a_source_address(site, tagged):
    servers = tagged("s1", "s2", "s3")
    start(site, config(site, 'stick = { on = "src", expire = "30m", size = 1000 }', servers, workers=1))

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy from the environment

    def server_name(path: str) -> str:
        with opener.open(site.url(path), timeout=10) as response:  # one connection each
            assert response.status == 200
            return str(response.headers["Server-Name"])

    names = [server_name(f"/r{i}") for i in range(30)]
    assert len(set(names)) == 1, Counter(names)
    assert sorted(len(s.requests) for s in servers) == [0, 0, 30]
