"""Regression tests for the fixes of one review that need `balancer` as a process.

- `balancer check` and `balancer run` refuse settings this version cannot run (tls, accept_proxy,
  an algorithm not built yet, syslog) with FILE:LINE, before any worker starts
- `set_header` / `del_header` on framing headers (Content-Length, Transfer-Encoding) are refused
- a stop signal that arrives while the first workers start still serves the connections already
  waiting in the accept queue, then exits 0
"""

from __future__ import annotations

import re
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.support import BalancerProcess, free_port, run_balancer
from tests.support.config import server_blocks

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Case:
    """One setting to refuse: the config line that holds it (the marker) and where it goes."""

    id: str
    marker: str
    section: str  # "global", "frontend", "backend" or "rule"
    message: str  # a regex the problem's message must match


def config_with(case: Case, port: int) -> tuple[str, int]:
    """A valid config with `case.marker` added to its section, and the marker's line number."""
    sections = {"global": 'log = "none"\n', "frontend": "", "backend": "", "rule": ""}
    sections[case.section] = case.marker + "\n"  # in [global], instead of log = "none"
    text = f"""[global]
{sections["global"]}
[[frontend]]
name = "www"
bind = ["127.0.0.1:{port}"]
default_backend = "web"
{sections["frontend"]}
  [[frontend.rule]]
  if = {{ path_beg = ["/x"] }}
  use_backend = "web"
{sections["rule"]}
[[backend]]
name = "web"
{sections["backend"]}
  [[backend.server]]
  name = "s1"
  address = "127.0.0.1:9"
"""
    lines = text.splitlines()
    return text, lines.index(case.marker) + 1


def problem_lines(output: str, filename: str, message: str) -> set[int]:
    """Line numbers of `FILE:LINE: message` problems whose message matches `message`."""
    pattern = re.compile(rf"{re.escape(filename)}:(\d+): (.*)$", re.MULTILINE)
    return {int(m[1]) for m in pattern.finditer(output) if re.search(message, m[2])}


# -- 2. settings this version cannot run -----------------------------------------------------------


# What this build still refuses (tls, accept_proxy, syslog and ALPN h2 have been built since).
UNSUPPORTED = [
    Case(
        "alpn_spdy",
        '  tls = { cert = ["www.pem"], alpn = ["spdy/3", "http/1.1"] }',
        "frontend",
        r"spdy/3: an HTTP frontend speaks h2",
    ),
    Case("bad_cert", '  tls = { cert = ["www.pem"] }', "frontend", r"cannot load certificate"),
]


def _write_unsupported(tmp_path: Path, case: Case) -> tuple[Path, int]:
    text, line = config_with(case, free_port())
    (tmp_path / "www.pem").write_text("not checked before tls is refused\n")
    path = tmp_path / f"{case.id}.toml"
    path.write_text(text)
    return path, line


@pytest.mark.parametrize("case", UNSUPPORTED, ids=[c.id for c in UNSUPPORTED])
def test_check_refuses_a_setting_this_version_cannot_run_with_its_line(tmp_path, case):
    path, line = _write_unsupported(tmp_path, case)

    result = run_balancer("check", "-c", path.name, cwd=tmp_path)

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "configuration is valid" not in output
    assert problem_lines(output, path.name, case.message) == {line}, f"expected {path.name}:{line}:\n{output}"


@pytest.mark.parametrize("case", UNSUPPORTED, ids=[c.id for c in UNSUPPORTED])
def test_run_refuses_a_setting_this_version_cannot_run_before_starting_workers(tmp_path, case):
    path, line = _write_unsupported(tmp_path, case)

    result = run_balancer("run", "-c", path.name, cwd=tmp_path, timeout=20)

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert problem_lines(output, path.name, case.message) == {line}, f"expected {path.name}:{line}:\n{output}"
    assert "worker started" not in output, f"workers were started for a config that cannot run:\n{output}"


# -- 8. set_header / del_header on framing headers ---------------------------------------------------

FRAMING = [
    Case("set-content-length", '  set_header = { "Content-Length" = "5" }', "rule", r"Content-Length"),
    Case("del-transfer-encoding", '  del_header = ["Transfer-Encoding"]', "rule", r"Transfer-Encoding"),
]


@pytest.mark.parametrize("case", FRAMING, ids=[c.id for c in FRAMING])
def test_check_refuses_rules_that_rewrite_framing_headers(tmp_path, case):
    text, line = config_with(case, free_port())
    (tmp_path / "rules.toml").write_text(text)

    result = run_balancer("check", "-c", "rules.toml", cwd=tmp_path)

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert problem_lines(output, "rules.toml", case.message) == {line}, f"expected rules.toml:{line}:\n{output}"


ORDINARY = [
    Case("set-x-env", '  set_header = { "X-Env" = "5" }', "rule", ""),
    Case("del-x-debug", '  del_header = ["X-Debug"]', "rule", ""),
]


@pytest.mark.parametrize("case", ORDINARY, ids=[c.id for c in ORDINARY])
def test_check_accepts_rules_that_rewrite_ordinary_headers(tmp_path, case):
    """The control for the test above: the same rule with an ordinary header is valid."""
    text, _ = config_with(case, free_port())
    (tmp_path / "rules.toml").write_text(text)

    result = run_balancer("check", "-c", "rules.toml", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "configuration is valid" in result.stdout + result.stderr


# -- 11. a stop signal while the first workers start -----------------------------------------------


def _connect_when_listening(proc: BalancerProcess, port: int, timeout: float = 15) -> socket.socket:
    """The first connection the port accepts (into the accept queue, served or not)."""
    deadline = time.monotonic() + timeout
    while True:
        if not proc.alive():
            raise AssertionError(f"balancer exited ({proc.returncode}) before listening\n{proc.output()}")
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=0.5)
        except OSError:
            if time.monotonic() >= deadline:
                raise AssertionError(f"balancer did not listen on {port} within {timeout}s\n{proc.output()}") from None
            time.sleep(0.005)  # poll interval, not a synchronisation


def _read_response(sock: socket.socket, timeout: float) -> tuple[bytes, str]:
    """Everything until the peer closes (the request said Connection: close), within `timeout`;
    and how the connection ended when it did not end with a close ("" when it did)."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bytes(data), f"still open after {timeout}s"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return bytes(data), "reset"
        if not chunk:
            return bytes(data), ""
        data += chunk


def test_sigterm_while_workers_start_still_serves_a_queued_request(tmp_path, tagged):
    (s1,) = tagged("s1")
    port = free_port()
    config = tmp_path / "balancer.toml"
    config.write_text(
        f"""[global]
workers = 2
grace = "5s"
log = "none"

[[frontend]]
name = "www"
bind = ["127.0.0.1:{port}"]
default_backend = "web"

[[backend]]
name = "web"
"""
        + server_blocks([s1])
    )
    with BalancerProcess(config, log_dir=tmp_path / "proc") as proc:
        # The master listens before its workers are ready: the connection waits in the queue.
        with _connect_when_listening(proc, port) as sock:
            sock.sendall(b"GET /queued HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n")
            early = "balancer running" not in proc.output()
            proc.send_signal(signal.SIGTERM)
            data, ended = _read_response(sock, timeout=20)
        code = proc.wait(timeout=20)
        output = proc.output()

    assert early, f"the workers were ready before SIGTERM; the test did not hit the window:\n{output}"
    assert not ended, f"the queued request's connection was {ended} after {data[:300]!r}\n{output}"
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), f"the queued request got {data[:300]!r}\n{output}"
    assert body == b"s1\n"
    assert [r.target for r in s1.requests] == ["/queued"]
    assert code == 0, output
    # A graceful stop waits for the workers: none outlives the master.
    started = {int(m[1]) for m in re.finditer(r"worker started: pid=(\d+)", output)}
    exited = {int(m[1]) for m in re.finditer(r"worker exited: pid=(\d+)", output)}
    assert started, output
    assert started <= exited, f"the master exited before its workers {sorted(started - exited)}:\n{output}"
