"""bench/all.py in its quickest mode produces the JSON with every section (issue 17 item 1).

Real processes throughout: HAProxy, NGINX (backend), iperf3 (sink), wrk, openssl s_time, h2load and
`python -m balancer run` from this tree. 1 s runs and tiny idle counts, so the figures mean
nothing; what is checked is that every part ran and every summary row has both proxies' figure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.tools import require_tool

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_bench_all_quick_writes_every_section(tmp_path: Path) -> None:
    for tool in ("haproxy", "nginx", "wrk", "iperf3", "openssl", "h2load"):
        require_tool(tool)
    command = [
        sys.executable,
        str(REPO / "bench" / "all.py"),
        "--quick",
        "--no-plots",
        "--output-dir",
        str(tmp_path),
        "--balancer-cmd",
        f"{sys.executable} -m balancer run -c {{config}}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=280, check=False, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    report = json.loads((tmp_path / "all-latest.json").read_text())
    assert set(report) >= {"summary", "run", "tls", "tcp", "h2", "latency"}
    scenarios = {(r["proxy"], r["scenario"]) for r in report["run"]["results"]}
    for scenario in ("varied", "varied-close", "keepalive", "close", "post-1k", "post-100k"):
        assert {("haproxy", scenario), ("balancer", scenario)} <= scenarios
    assert {(h["proxy"], h["key"]) for h in report["tls"]["handshakes"]} == {
        (p, k) for p in ("haproxy", "balancer") for k in ("ecdsa", "rsa")
    }
    assert all(i["held"] == i["wanted"] for i in report["tls"]["idle"]), report["tls"]["idle"]
    assert {b["proxy"] for b in report["tcp"]["bulk"]} == {"haproxy", "balancer"}
    assert {(r["proxy"], r["streams"]) for r in report["h2"]["runs"]} == {
        (p, m) for p in ("haproxy", "balancer") for m in (1, 100)
    }
    assert all(r["failed"] == 0 for r in report["h2"]["runs"]), report["h2"]["runs"]
    assert {p["target"] for p in report["latency"]["paced"]} == {"direct", "haproxy", "balancer"}
    for row in report["summary"]:
        assert row["balancer"] is not None and row["haproxy"] is not None, row
    assert "=== summary" in done.stdout
