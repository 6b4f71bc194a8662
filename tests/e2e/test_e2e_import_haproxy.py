"""`balancer import-haproxy` on a real haproxy.cfg, then `check` and `run` on what it printed.

The input is the classic lab: one frontend routing `/blog` to one backend and the rest to
another (round robin, HTTP checks), and a stats page with basic auth. When HAProxy is
installed (scripts/system-deps.sh test installs it) the input is first validated with
`haproxy -c -f`, so the test input is HAProxy syntax, not our idea of it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest
from tests.support import BalancerProcess, TaggedBackend, free_port, on_ci, run_balancer
from tests.support.backends import TcpEchoServer
from tests.support.process import wait_until

from balancer.config.haproxy.keys import product_keys

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


def get(url: str, auth: tuple[str, str] | None = None, cookie: str = "") -> tuple[int, Message, bytes]:
    """One GET; the headers compare names case-insensitively (HAProxy sends them in lower case)."""
    request = urllib.request.Request(url)
    if cookie:
        request.add_header("Cookie", cookie)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


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


# -- the imported configuration behaves as HAProxy does (issue 13, "Found" 3) ----------------
#
# Each test writes one haproxy.cfg, runs HAProxy on it and balancer on its import side by
# side (the same servers, two frontend ports), and asserts what a client sees from both.


class HAProxyProcess:
    """`haproxy -db -f FILE` in the foreground, stopped (by its pid) at teardown."""

    def __init__(self, cfg: Path, port: int) -> None:
        self.log = cfg.with_suffix(".log").open("wb")
        self.proc = subprocess.Popen(
            [haproxy_binary(), "-db", "-f", str(cfg)], stdout=self.log, stderr=subprocess.STDOUT
        )
        wait_until(lambda: self.listening(port) or self.proc.poll() is not None, timeout=10, what="haproxy listening")
        assert self.proc.poll() is None, cfg.with_suffix(".log").read_text()

    @staticmethod
    def listening(port: int) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
        return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


@dataclass
class SideBySide:
    haproxy: int  # the frontend port of each
    balancer: int
    toml: str

    def both(self) -> dict[str, int]:
        return {"haproxy": self.haproxy, "balancer": self.balancer}


@pytest.fixture
def side_by_side(
    tmp_path: Path, balancer_process: Callable[..., BalancerProcess]
) -> Iterator[Callable[..., SideBySide]]:
    """`side_by_side(CFG, **ports)`: CFG has `{port}` for its frontend and the given ports;
    HAProxy runs it as written, balancer runs what `import-haproxy` makes of it."""
    started: list[HAProxyProcess] = []

    def start(cfg: str, *flags: str, **ports: int) -> SideBySide:
        ours, theirs = free_port(), free_port()
        source = tmp_path / "haproxy.cfg"
        source.write_text(cfg.format(port=theirs, **ports))
        started.append(HAProxyProcess(source, theirs))
        ported = tmp_path / "import.cfg"
        ported.write_text(cfg.format(port=ours, **ports))
        imported = run_balancer("import-haproxy", *flags, str(ported))
        assert imported.returncode == 0, imported.stderr
        balancer_process(imported.stdout, ours)
        return SideBySide(theirs, ours, imported.stdout)

    yield start
    for proc in started:
        proc.stop()


def needs_keys(*keys: str) -> None:
    """Mark the test an expected failure while this build's model lacks keys of issue 13."""
    missing = sorted(set(keys) - product_keys())
    if missing:
        pytest.xfail(f"the keys {missing} are built on i13-product")


HTTP_DEFAULTS = """\
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
"""


def test_a_server_answering_302_to_option_httpchk_stays_up_in_both(side_by_side, tagged):
    ok, bad = tagged("ok", "bad")
    run = side_by_side(
        HTTP_DEFAULTS
        + """\
frontend www
    bind 127.0.0.1:{port}
    use_backend bad if {{ path_beg /bad }}
    default_backend ok
backend ok
    option httpchk GET /status/302
    server ok 127.0.0.1:{ok} check inter 200 rise 1 fall 1
backend bad
    option httpchk GET /status/500
    server bad 127.0.0.1:{bad} check inter 200 rise 1 fall 1
""",
        ok=ok.port,
        bad=bad.port,
    )
    assert 'expect = "2xx,3xx"' in run.toml and 'method = "GET"' in run.toml
    for name, port in run.both().items():
        # the 500 server going down shows the checks ran; the 302 one is still up
        wait_until(
            lambda port=port: get(f"http://127.0.0.1:{port}/bad")[0] == 503, timeout=10, what=f"{name}: bad down"
        )
        status, headers, _ = get(f"http://127.0.0.1:{port}/page")
        assert (status, headers.get("Server-Name")) == (200, "ok"), name


def test_a_denied_source_is_denied_in_both(side_by_side, tagged):
    (web,) = tagged("web")
    run = side_by_side(
        HTTP_DEFAULTS
        + """\
frontend www
    bind 127.0.0.1:{port}
    acl blocked src 127.0.0.0/8
    http-request deny if blocked
    default_backend web
backend web
    server web 127.0.0.1:{web}
""",
        web=web.port,
    )
    for name, port in run.both().items():
        assert get(f"http://127.0.0.1:{port}/")[0] == 403, name
    assert web.paths == []


def test_an_idle_tcp_connection_is_closed_after_timeout_client_in_both(side_by_side):
    with TcpEchoServer("echo") as echo:
        run = side_by_side(
            """\
defaults
    mode tcp
    timeout connect 2s
    timeout client 1s
    timeout server 30s
frontend db
    bind 127.0.0.1:{port}
    default_backend db
backend db
    server echo 127.0.0.1:{echo}
""",
            echo=echo.port,
        )
        assert 'tunnel = "1s"' in run.toml
        for name, port in run.both().items():
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                for round_ in range(6):  # traffic for 2 s, longer than timeout client: kept open
                    if round_:
                        time.sleep(0.4)  # pacing the traffic, not waiting for an event
                    client.sendall(b"ping")
                    assert client.recv(16) == b"ping", name
                idle_since = time.monotonic()
                assert client.recv(16) == b"", name  # closed by the proxy, not by the 10 s timeout
                idle = time.monotonic() - idle_since
            assert 0.8 <= idle <= 3.0, (name, idle)


def test_path_end_with_i_reaches_the_same_backend_in_both(side_by_side, tagged):
    static, web = tagged("static", "web")
    run = side_by_side(
        HTTP_DEFAULTS
        + """\
frontend www
    bind 127.0.0.1:{port}
    acl css path_end -i .css
    use_backend static if css
    default_backend web
backend static
    server static 127.0.0.1:{static}
backend web
    server web 127.0.0.1:{web}
""",
        static=static.port,
        web=web.port,
    )
    needs_keys("ignore_case")
    for name, port in run.both().items():
        assert get(f"http://127.0.0.1:{port}/Page.CSS")[1].get("Server-Name") == "static", name
        assert get(f"http://127.0.0.1:{port}/page.html")[1].get("Server-Name") == "web", name


def test_redirect_scheme_https_redirects_in_both(side_by_side, tagged):
    (web,) = tagged("web")
    cfg = (
        HTTP_DEFAULTS
        + """\
frontend www
    bind 127.0.0.1:{port}
    http-request redirect scheme https code 301 unless {{ ssl_fc }}
    default_backend web
backend web
    server web 127.0.0.1:{web}
"""
    )
    needs_keys("redirect_scheme")
    run = side_by_side(cfg, web=web.port)
    for name, port in run.both().items():
        status, headers, _ = get_no_redirect(f"http://127.0.0.1:{port}/a/b?c=1", host="shop.example")
        assert (status, headers.get("Location")) == (301, "https://shop.example/a/b?c=1"), name


def test_a_cookie_naming_a_down_server_is_balanced_anew_in_both(side_by_side, tagged):
    s1, s2 = tagged("s1", "s2")
    cfg = (
        HTTP_DEFAULTS
        + """\
frontend www
    bind 127.0.0.1:{port}
    default_backend app
backend app
    cookie SRV insert indirect nocache
    option httpchk GET /
    server s1 127.0.0.1:{s1} cookie s1 check inter 200 rise 1 fall 1
    server s2 127.0.0.1:{s2} cookie s2 check inter 200 rise 1 fall 1
"""
    )
    needs_keys("persist", "cookie_options")
    run = side_by_side(cfg, s1=s1.port, s2=s2.port)
    s1.stop()
    for name, port in run.both().items():

        def rebalanced(port: int = port) -> bool:
            status, headers, _ = get(f"http://127.0.0.1:{port}/", cookie="SRV=s1")
            return status == 200 and headers.get("Server-Name") == "s2"

        wait_until(rebalanced, timeout=10, what=f"{name}: SRV=s1 answered by s2")


def get_no_redirect(url: str, host: str) -> tuple[int, Message, bytes]:
    """One GET that does not follow a redirect, with the given Host."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    request = urllib.request.Request(url, headers={"Host": host})
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()
