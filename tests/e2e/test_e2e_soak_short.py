"""bench/soak.py in its short mode: 20 s of load at half of the measured peak, a reload every
5 s, and not one request lost across them (issue 18 item 7; the 30-minute run is in
bench/README.md).

The tool itself is what runs: NGINX as the backend, `balancer run` with two workers, wrk for
the peak, its own paced client for the load, reloads through the admin API.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.tools import require_tool

pytestmark = pytest.mark.e2e

SOAK = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


def require_nginx() -> None:
    # Debian puts nginx in /usr/sbin, which a normal user's PATH lacks (bench/run.py looks there too).
    if shutil.which("nginx") is None and shutil.which("nginx", path="/usr/sbin:/usr/local/sbin") is None:
        require_tool("nginx")


def test_short_soak_reloads_every_5s_without_a_failed_request(tmp_path: Path) -> None:
    require_tool("wrk")
    require_nginx()
    output = tmp_path / "soak.json"
    done = subprocess.run(
        [
            sys.executable,
            str(SOAK),
            *("--duration", "20", "--reload-every", "5", "--sample-every", "1", "--peak-seconds", "1"),
            *("--output", str(output)),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    report = json.loads(output.read_text())
    summary = report["summary"]
    assert summary["requests_failed"] == 0, summary["failed_by_kind"]
    assert summary["requests_ok"] > 1000
    # Reloads at 5, 10 and 15 s, each answered with its new generation.
    assert summary["reloads"] == 3
    assert summary["reloads_refused"] == 0
    assert [r["generation"] for r in report["reloads"]] == [2, 3, 4]
    assert summary["worker_restarts_by_generation"] == {}
    assert report["master_log"]["tracebacks"] == 0
    assert report["access_log_bytes"] > 0
    # What a user reads at the end of a run.
    assert f"{summary['requests_ok']:,} ok, 0 failed" in done.stdout
    assert "RSS master + workers:" in done.stdout
    assert "p99: first window" in done.stdout
