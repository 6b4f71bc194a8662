"""Stick tables shared by every worker of a node (issue #15 item 3), as an operator sees it:
`balancer run` with `workers = 2`, new connections landing on both workers (the access log
names the worker: `%pid`), and a reload that reorders the servers."""

from __future__ import annotations

import http.client
import signal
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from tests.support import wait_until
from tests.support.config import server_blocks

pytestmark = pytest.mark.e2e

LOG_FORMAT = "%pid %ci %s %ST"


def config(site, servers) -> str:
    return (
        site.global_toml(log_format=LOG_FORMAT, extra="workers = 2")
        + f'\n[[frontend]]\nname = "www"\nbind = ["127.0.0.1:{site.port}"]\nmode = "http"\ndefault_backend = "web"\n'
        + '\n[[backend]]\nname = "web"\nbalance = "roundrobin"\nstick = { on = "src", expire = "30m", size = 1000 }\n'
        + server_blocks(servers)
    )


def fetch_many(site, paths: list[str]) -> list[str]:
    """Each path on a new connection, four at a time (so both workers accept some)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def one(path: str) -> str:
        with opener.open(site.url(path), timeout=10) as response:
            assert response.status == 200
            return str(response.headers["Server-Name"])

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, paths))


def workers_in_log(site, after: int) -> Counter[str]:
    wait_until(lambda: len(site.log_lines()) >= after + 1, what="access lines")
    return Counter(line.split()[0] for line in site.log_lines()[after:])


def test_a_stick_entry_learned_by_one_worker_holds_on_the_other_and_across_a_reload(site, tagged):
    servers = tagged("s1", "s2", "s3")
    process = site.start(config(site, servers))
    wait_until(lambda: "balancer running" in process.output(), timeout=15, what="the workers to serve")

    # Another client first: one worker's round robin moves on, the other's does not, so
    # workers with tables of their own would send the next client to different servers.
    stranger = http.client.HTTPConnection("127.0.0.1", site.port, timeout=10, source_address=("127.0.0.2", 0))
    stranger.request("GET", "/stranger")
    assert stranger.getresponse().status == 200
    stranger.close()
    wait_until(lambda: len(site.log_lines()) >= 1, what="the stranger's access line")

    names = fetch_many(site, [f"/a{i}" for i in range(60)])
    wait_until(lambda: len(site.log_lines()) >= 61, what="60 more access lines")
    pids = workers_in_log(site, 1)
    print(f"60 new connections: servers {Counter(names)}, per worker {dict(pids)}")
    assert len(pids) == 2, f"connections landed on both workers: {pids}"
    assert len(set(names)) == 1, Counter(names)
    owner = names[0]

    # A reload listing the servers in another order: the entry names the server, not its place.
    site.config_path.write_text(config(site, list(reversed(servers))))
    reloads = process.output().count("reload complete")
    process.send_signal(signal.SIGHUP)
    wait_until(lambda: process.output().count("reload complete") > reloads, timeout=30, what="reload complete")

    before = len(site.log_lines())
    after = fetch_many(site, [f"/b{i}" for i in range(40)])
    wait_until(lambda: len(site.log_lines()) >= before + 40, what="40 more access lines")
    new_pids = workers_in_log(site, before)
    print(f"after the reload: servers {Counter(after)}, per worker {dict(new_pids)}")
    assert not set(new_pids) & set(pids), "the new generation served them"
    assert Counter(after) == {owner: 40}, "the table survived the reload"
    others = [s for s in servers if s.name != owner]
    assert all(r.target == "/stranger" for s in others for r in s.requests), "the client reached its server only"
