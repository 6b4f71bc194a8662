"""[dns] as an operator and a resolver meet it: one `balancer run -c FILE` holding only [dns]
(and [admin]) on 127.0.0.1, asked with dnspython's `dns.query` and, where installed, `dig`.

Answer targets are loopback addresses (127.0.0.2, 127.0.0.3) with a plain listening TCP
socket each: closing one is "the server was killed", listening again "it restarted".
Every change is polled with a deadline. One process serves the whole module (its checks run
every 200 ms), so the file stays well under 40 s.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from tests.support import BalancerProcess, free_port, run_balancer, wait_until

pytestmark = pytest.mark.e2e

TARGETS = ("127.0.0.2", "127.0.0.3")
CHECK_INTERVAL = 0.2
TIMEOUT = 2.0


class Target:
    """A listening TCP socket on `host:port`: what a tcp check finds alive."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.sock: socket.socket | None = None

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(64)
        self.sock = sock

    def kill(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def config(dns_port: int, admin_port: int, check_port: int) -> str:
    big = ", ".join(f'{{ address = "10.9.0.{n}" }}' for n in range(1, 61))
    check = f'{{ type = "tcp", port = {check_port}, interval = "{CHECK_INTERVAL}s", rise = 1, fall = 2 }}'
    return f"""\
[admin]
bind = "127.0.0.1:{admin_port}"

[dns]
bind = ["127.0.0.1:{dns_port}"]
zone = "example.com"
ttl = "30s"
tcp_idle_timeout = "1s"
  [[dns.record]]
  name = "www"
  answers = [ {{ address = "{TARGETS[0]}", check = {check} }},
              {{ address = "{TARGETS[1]}", check = {check} }} ]
  [[dns.record]]
  name = "near"
  policy = "nearest"
  answers = [ {{ address = "192.0.2.1", site = "eu" }}, {{ address = "198.51.100.1", site = "us" }} ]
  [[dns.record]]
  name = "big"
  answers = [ {big} ]
  [[dns.site]]
  name = "eu"
  prefixes = ["10.1.0.0/16", "127.0.1.0/24"]
  [[dns.site]]
  name = "us"
  prefixes = ["10.2.0.0/16", "127.0.2.0/24"]
"""


class Node:
    def __init__(self, path: Path, dns_port: int, admin_port: int, process: BalancerProcess) -> None:
        self.path, self.port, self.admin_port, self.process = path, dns_port, admin_port, process

    def udp(self, query: dns.message.Message) -> dns.message.Message:
        return dns.query.udp(query, "127.0.0.1", port=self.port, timeout=TIMEOUT)

    def tcp(self, query: dns.message.Message) -> dns.message.Message:
        return dns.query.tcp(query, "127.0.0.1", port=self.port, timeout=TIMEOUT)

    def addresses(self, name: str, **options: Any) -> list[str]:
        response = self.udp(dns.message.make_query(name, "A", **options))
        assert response.rcode() == dns.rcode.NOERROR
        return [rdata.to_text() for rrset in response.answer for rdata in rrset]

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as reply:
            body = reply.read()
        return body.decode() if path == "/metrics" else json.loads(body)


@pytest.fixture(scope="module")
def targets() -> Iterator[dict[str, Target]]:
    port = free_port()
    started = {host: Target(host, port) for host in TARGETS}
    for target in started.values():
        target.start()
    yield started
    for target in started.values():
        target.kill()


@pytest.fixture(scope="module")
def node(module_dir: Path, targets: dict[str, Target]) -> Iterator[Node]:
    dns_port, admin_port = free_port(), free_port()
    check_port = next(iter(targets.values())).port
    path = module_dir / "dns.toml"
    path.write_text(config(dns_port, admin_port, check_port))
    process = BalancerProcess(path, log_dir=module_dir / "log")
    try:
        process.wait_ready(dns_port)
        process.wait_ready(admin_port)
        yield Node(path, dns_port, admin_port, process)
    finally:
        if process.alive():
            process.stop()


def test_a_file_with_only_dns_passes_check(node: Node) -> None:
    result = run_balancer("check", "-c", str(node.path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_answers_follow_a_server_killed_and_restarted(node: Node, targets: dict[str, Target]) -> None:
    assert sorted(node.addresses("www.example.com")) == list(TARGETS)
    targets[TARGETS[1]].kill()
    started = time.monotonic()
    wait_until(lambda: node.addresses("www.example.com") == [TARGETS[0]], timeout=5, what="the dead target to leave")
    # fall = 2 at 200 ms (±10% jitter), plus one check in flight: within a few intervals.
    assert time.monotonic() - started < 6 * CHECK_INTERVAL + 0.5
    for _ in range(10):  # and it stays out
        assert node.addresses("www.example.com") == [TARGETS[0]]
    status = node.api("/api/dns")
    (www,) = [record for record in status["records"] if record["name"] == "www.example.com"]
    dead = next(answer for answer in www["answers"] if answer["address"] == TARGETS[1])
    assert (dead["health"], dead["served"]) == ("down", False) and "tcp connect" in dead["check"]
    metrics = node.api("/metrics")
    assert 'balancer_dns_answers_up{name="www.example.com",type="A"} 1.0' in metrics
    assert f"dns answer www.example.com A {TARGETS[1]} is DOWN" in node.process.output()
    shown = run_balancer("ctl", "--url", f"http://127.0.0.1:{node.admin_port}", "show", "dns")
    assert shown.returncode == 0 and "www.example.com" in shown.stdout and "down" in shown.stdout
    targets[TARGETS[1]].start()
    wait_until(
        lambda: sorted(node.addresses("www.example.com")) == list(TARGETS), timeout=5, what="the target to return"
    )
    assert f"dns answer www.example.com A {TARGETS[1]} is UP" in node.process.output()


def test_rcodes_a_resolver_sees(node: Node) -> None:
    missing = node.udp(dns.message.make_query("nope.example.com", "A"))
    assert missing.rcode() == dns.rcode.NXDOMAIN and missing.flags & dns.flags.AA
    assert missing.authority[0].rdtype == dns.rdatatype.SOA
    assert node.udp(dns.message.make_query("www.example.org", "A")).rcode() == dns.rcode.REFUSED
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07garbage", ("127.0.0.1", node.port))
        reply = dns.message.from_wire(sock.recv(4096))
    assert reply.id == 0x1234 and reply.rcode() == dns.rcode.FORMERR


def test_any_is_minimal_and_nothing_amplifies(node: Node) -> None:
    for name, rdtype in (("www.example.com", "ANY"), ("example.com", "ANY"), ("nothing.here.example.com", "A")):
        query = dns.message.make_query(name, rdtype, use_edns=0, payload=4096)
        response = node.udp(query)
        size = len(response.to_wire())
        assert size <= 3 * len(query.to_wire()), f"{name} {rdtype}: {size} bytes for {len(query.to_wire())}"
    any_answer = node.udp(dns.message.make_query("www.example.com", "ANY"))
    assert [rrset.rdtype for rrset in any_answer.answer] == [dns.rdatatype.HINFO]


def test_truncation_and_tcp_fallback(node: Node) -> None:
    plain = node.udp(dns.message.make_query("big.example.com", "A", use_edns=False))
    assert plain.flags & dns.flags.TC and not plain.answer
    response, over_tcp = dns.query.udp_with_fallback(
        dns.message.make_query("big.example.com", "A", use_edns=False), "127.0.0.1", port=node.port, timeout=TIMEOUT
    )
    assert over_tcp and len(response.answer[0]) == 60


def test_tcp_several_queries_per_connection_and_idle_timeout(node: Node) -> None:
    queries = [dns.message.make_query(name, "A") for name in ("www.example.com", "near.example.com")]
    with socket.create_connection(("127.0.0.1", node.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"".join(len(w).to_bytes(2, "big") + w for w in (q.to_wire() for q in queries)))
        for query in queries:
            response, _ = dns.query.receive_tcp(sock, time.time() + TIMEOUT)
            assert response.id == query.id and response.answer
        started = time.monotonic()
        sock.settimeout(5)
        assert sock.recv(1) == b""  # closed by the server after tcp_idle_timeout = 1s
        assert 0.5 < time.monotonic() - started < 3


def test_nearest_by_client_subnet(node: Node) -> None:
    for subnet, first in (("10.1.7.0", "192.0.2.1"), ("10.2.7.0", "198.51.100.1")):
        options = [dns.edns.ECSOption(subnet, 24)]
        response = node.udp(dns.message.make_query("near.example.com", "A", use_edns=0, options=options))
        assert response.answer[0][0].to_text() == first
        (echo,) = response.options
        assert isinstance(echo, dns.edns.ECSOption) and echo.scopelen == 24


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig (bind9-dnsutils) not installed")
def test_dig(node: Node) -> None:
    def dig(*args: str) -> str:
        command = ["dig", "@127.0.0.1", "-p", str(node.port), "+time=2", "+tries=1", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=10, check=True).stdout

    assert sorted(dig("+short", "www.example.com").split()) == list(TARGETS)
    assert "status: NXDOMAIN" in dig("nope.example.com") and "flags: qr aa" in dig("nope.example.com")
    assert "status: REFUSED" in dig("www.example.org")
    assert dig("+short", "+subnet=10.2.1.0/24", "near.example.com").split()[0] == "198.51.100.1"
    assert dig("+short", "+subnet=10.1.1.0/24", "near.example.com").split()[0] == "192.0.2.1"
    # By the client's own address: dig sending from a source in each site's prefix.
    assert dig("-b", "127.0.1.9", "+short", "near.example.com").split()[0] == "192.0.2.1"
    assert dig("-b", "127.0.2.9", "+short", "near.example.com").split()[0] == "198.51.100.1"
    assert dig("-b", "127.0.2.9", "+short", "+tcp", "near.example.com").split()[0] == "198.51.100.1"
    assert len(dig("+short", "+tcp", "big.example.com").split()) == 60
    assert len(dig("+short", "+noedns", "big.example.com").split()) == 60  # TC, then dig retries over TCP


def test_reload_adds_a_name_without_rebinding(node: Node) -> None:
    text = node.path.read_text()
    node.path.write_text(text + '  [[dns.record]]\n  name = "new"\n  answers = [ { address = "192.0.2.99" } ]\n')
    try:
        node.process.send_signal(signal.SIGHUP)
        wait_until(
            lambda: node.udp(dns.message.make_query("new.example.com", "A")).rcode() == dns.rcode.NOERROR,
            timeout=10,
            what="the reloaded name",
        )
        assert node.addresses("new.example.com") == ["192.0.2.99"]
        assert sorted(node.addresses("www.example.com")) == list(TARGETS)
    finally:
        node.path.write_text(text)


def test_an_address_taken_at_start_is_exit_1_naming_it(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        path = tmp_path / "dns.toml"
        path.write_text(f'[dns]\nbind = ["127.0.0.1:{port}"]\nzone = "example.com"\n')
        process = BalancerProcess(path, log_dir=tmp_path / "log")
        assert process.wait(timeout=20) == 1
    # UDP is taken here; the same port number over TCP may be taken too by some outgoing
    # connection of the machine (it is an ephemeral port): either way the line names it.
    output = process.output()
    assert f"[dns] cannot bind 127.0.0.1:{port} (" in output and "in use" in output.lower(), output
    assert "Traceback" not in output
