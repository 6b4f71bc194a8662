"""Slow and hostile clients (slowhttptest, 1,000 connections each) do not take the service
down: a second client's requests keep being answered, and the timeouts close what never
completes.

- slowloris (`-H`): request heads that never end, a header line every few seconds: closed
  by `timeouts.http_request` (408), every one of them, before slowhttptest's time is up;
- slow body (`-B`): a POST whose body trickles in: closed by the client timeout;
- slow read (`-X`): pipelined requests whose responses are read a few bytes at a time.
Meanwhile a second client opens a new connection every 50 ms and asks for a page: at least
99% of them are answered 200 within 2 s (issue 18). The access log has a line for each
slow request the proxy refused.
"""

from __future__ import annotations

import csv
import http.client
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.process import wait_until
from tests.support.server_process import ServerProcess
from tests.support.site import Site
from tests.support.tools import require_tool

pytestmark = pytest.mark.e2e

CONNECTIONS = 1000
SECONDS = 10
PROBE_INTERVAL = 0.05
MODES = {
    "slowloris": ["-H", "-i", "5"],
    "slow-body": ["-B", "-i", "5", "-s", "8192", "-t", "POST"],
    "slow-read": ["-X", "-k", "3", "-n", "2", "-w", "10", "-y", "20", "-z", "32"],
}


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    with ServerProcess("web") as proc:
        yield proc


class Prober(threading.Thread):
    """A second client: a new connection and a GET every PROBE_INTERVAL, until stopped."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stopped = threading.Event()
        self.answered = 0
        self.failed: list[str] = []

    def run(self) -> None:
        while not self.stopped.wait(PROBE_INTERVAL):
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                connection.request("GET", "/probe")
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    self.answered += 1
                else:
                    self.failed.append(f"status {response.status}")
            except OSError as exc:
                self.failed.append(repr(exc))
            finally:
                connection.close()


@pytest.mark.parametrize("mode", list(MODES))
def test_slow_clients_leave_the_service_available(site: Site, server: ServerProcess, mode: str, tmp_path: Path) -> None:
    slowhttptest = require_tool("slowhttptest")
    config = (
        site.global_toml()
        + f"""
[[frontend]]
name = "www"
bind = ["127.0.0.1:{site.port}"]
default_backend = "web"
timeouts = {{ http_request = "4s", client = "3s" }}

[[backend]]
name = "web"
  [[backend.server]]
  name = "web"
  address = "{server.address}"
"""
    )
    site.start(config)
    prober = Prober(site.port)
    prober.start()
    started = time.monotonic()
    try:
        url = f"http://127.0.0.1:{site.port}/slow"
        rate = ["-c", str(CONNECTIONS), "-r", "1000", "-l", str(SECONDS), "-p", "2"]
        result = subprocess.run(
            [slowhttptest, *MODES[mode], *rate, "-u", url, "-g", "-o", str(tmp_path / "stats")],
            capture_output=True,
            text=True,
            timeout=SECONDS + 60,
        )
    finally:
        prober.stopped.set()
        prober.join(10)
    took = time.monotonic() - started
    output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)
    ended = re.search(r"Exit status:\s*(.*)", output)
    # Per second: seconds, closed, pending, connected, service available (slowhttptest -g).
    with (tmp_path / "stats.csv").open() as stats:
        peak = max((int(row["Connected"]) for row in csv.DictReader(stats)), default=0)
    probes = prober.answered + len(prober.failed)
    share = prober.answered / probes if probes else 0.0
    print(
        f"\n{mode}: {peak} slow connections at the peak, ended after {took:.1f} s"
        f" ({ended.group(1).strip() if ended else '?'}); second client: {prober.answered}/{probes}"
        f" answered ({share:.1%}){', failures: ' + ', '.join(prober.failed[:3]) if prober.failed else ''}"
    )
    assert peak >= CONNECTIONS * 0.9, f"slowhttptest held only {peak} connections:\n{output[-1500:]}"
    assert probes >= SECONDS / PROBE_INTERVAL / 4, f"the second client made only {probes} requests"
    assert share >= 0.99, prober.failed[:10]
    if mode in ("slowloris", "slow-body"):
        # Closed by the timeouts, all of them, well before the test's own limit.
        assert ended and "No open connections left" in ended.group(1), output[-1500:]
        # Every slow connection refused with a log line (the log is written as they close).
        wait_until(
            lambda: sum(1 for line in site.log_lines() if " 408 " in line) >= peak,
            timeout=10,
            what=f"{peak} requests logged with 408",
        )
