"""`balancer demo`: what a newcomer sees after `make demo`."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode

import pytest
from tests.support.ports import free_port

pytestmark = pytest.mark.e2e


def _wait_for(pattern: str, proc: subprocess.Popen[str], lines: list[str], timeout: float = 20) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line)
        match = re.search(pattern, line)
        if match:
            return match
    raise AssertionError(f"{pattern!r} not printed within {timeout}s:\n{''.join(lines)}")


def test_demo_balances_three_servers_and_shows_its_stats_page():
    port, stats_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "balancer", "demo", "--port", str(port), "--stats-port", str(stats_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        _wait_for(rf"http://127\.0\.0\.1:{port}/", proc, lines)
        password = _wait_for(r"user admin, password (\S+)", proc, lines).group(1)
        names = []
        for _ in range(6):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                names.append(response.headers["Server-Name"])
        # Two workers, each with its own round robin: whichever worker takes three or more of
        # the six connections (one always does) rotates through all three servers.
        assert set(names) == {"s1", "s2", "s3"}, names

        stats = f"http://127.0.0.1:{stats_port}/stats"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(stats, timeout=5)
        assert refused.value.code == 401
        token = b64encode(f"admin:{password}".encode()).decode()
        request = urllib.request.Request(stats, headers={"Authorization": f"Basic {token}"})
        with urllib.request.urlopen(request, timeout=5) as page:
            assert page.status == 200
            assert b"<html" in page.read(4096).lower()
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C does
        try:
            output, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        lines.append(output or "")
    assert proc.returncode == 0, "".join(lines)
    assert "balancer demo: stopped" in "".join(lines)
