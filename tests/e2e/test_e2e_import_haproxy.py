"""`balancer import-haproxy` on a real haproxy.cfg, then `check` and `run` on what it printed.

The input is the classic lab: one frontend routing `/blog` to one backend and the rest to
another (round robin, HTTP checks), and a stats page with basic auth. When HAProxy is
installed (scripts/system-deps.sh test installs it) the input is first validated with
`haproxy -c -f`, so the test input is HAProxy syntax, not our idea of it.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.support import BalancerProcess, TaggedBackend, free_port, on_ci, run_balancer

pytestmark = pytest.mark.e2e

HAPROXY_CFG = """\
global
    maxconn 2000
    nbthread 2
    log stdout format raw local0
    stats socket {admin_socket} mode 600 level admin

defaults
    mode http
    log global
    option httplog
    option dontlognull
    option forwardfor
    option redispatch
    option http-server-close
    retries 3
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout check 1s

frontend www
    bind 127.0.0.1:{port}
    acl url_blog path_beg /blog
    use_backend blog-backend if url_blog
    default_backend web-backend

backend web-backend
    balance roundrobin
    option httpchk GET /
    http-check expect status 200
    server web1 127.0.0.1:{web1} check inter 2s rise 2 fall 3
    server web2 127.0.0.1:{web2} check inter 2s rise 2 fall 3

backend blog-backend
    balance roundrobin
    server blog1 127.0.0.1:{blog1} check

listen stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /haproxy-stats
    stats refresh 5s
    stats auth admin:lab-secret
"""


def haproxy_binary() -> str:
    """HAProxy for validating the input; skip without it, except on CI (a test dependency there)."""
    path = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None)
    if path is not None:
        return path
    reason = "haproxy is not installed (scripts/system-deps.sh test installs it): input not validated by HAProxy"
    if on_ci():
        pytest.fail(reason + "; CI=true, so this is a failure, not a skip", pytrace=False)
    pytest.skip(reason)
    raise AssertionError("unreachable")


def get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.fixture
def lab(tmp_path: Path, tagged: Callable[..., list[TaggedBackend]]) -> tuple[Path, dict[str, int], Path]:
    web1, web2, blog1 = tagged("web1", "web2", "blog1")
    ports = {"port": free_port(), "stats_port": free_port(), "web1": web1.port, "web2": web2.port, "blog1": blog1.port}
    admin_socket = tmp_path / "admin.sock"
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(admin_socket=admin_socket, **ports))
    return cfg, ports, admin_socket


def test_haproxy_accepts_the_input(lab):
    cfg, _, _ = lab
    result = subprocess.run([haproxy_binary(), "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_check_and_run_the_lab(lab, tmp_path: Path, balancer_process: Callable[..., BalancerProcess]):
    cfg, ports, admin_socket = lab

    imported = run_balancer("import-haproxy", str(cfg))

    assert imported.returncode == 0, imported.stderr
    assert imported.stderr.splitlines() == [
        f"{cfg}:14: cannot translate: option http-server-close (balancer keeps connections alive on both sides)"
    ]
    toml = imported.stdout
    assert f"# from {cfg}:21 frontend www" in toml
    assert f"# from {cfg}:38 listen stats" in toml
    assert "workers = 2" in toml
    converted = tmp_path / "balancer.toml"
    converted.write_text(toml)

    checked = run_balancer("check", "-c", str(converted))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "configuration is valid" in checked.stdout

    proc = balancer_process(toml, [ports["port"], ports["stats_port"]])

    answers = [get(f"http://127.0.0.1:{ports['port']}/page/{n}") for n in range(4)]
    assert [status for status, _, _ in answers] == [200] * 4
    # round robin is per worker (nbthread 2 -> workers = 2): a worker taking two of the four
    # new connections sends them to both servers
    assert {headers["Server-Name"] for _, headers, _ in answers} == {"web1", "web2"}
    for path in ("/blog", "/blog/post/1"):
        status, headers, _ = get(f"http://127.0.0.1:{ports['port']}{path}")
        assert (status, headers["Server-Name"]) == (200, "blog1")

    stats = f"http://127.0.0.1:{ports['stats_port']}/haproxy-stats"
    assert get(stats)[0] == 401
    status, _, body = get(stats, auth=("admin", "lab-secret"))
    assert status == 200 and b"<html" in body.lower()

    shown = run_balancer("ctl", "--socket", str(admin_socket), "--json", "show", "servers")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    for name in ("web1", "web2", "blog1"):
        assert f'"{name}"' in shown.stdout
    assert proc.alive


def test_unreadable_file_and_usage(tmp_path: Path):
    missing = run_balancer("import-haproxy", str(tmp_path / "nope.cfg"))
    assert missing.returncode == 1
    assert "cannot read" in missing.stderr and missing.stdout == ""
    assert run_balancer("import-haproxy").returncode == 2
