"""TLS termination, TLS to servers, the PROXY protocol in and out, and source-address spreading,
seen from outside: `balancer run -c FILE` against real peers.

- NGINX behind the balancer with `listen ... proxy_protocol` logs `$proxy_protocol_addr`: the
  balancer's `send_proxy = "v1" | "v2"` (HTTP and TCP mode) names the original client, and an
  `accept_proxy` frontend passes on the address a PROXY header gave it.
- `curl --haproxy-protocol` (v1) and hand-built v2 headers into an `accept_proxy` frontend set the
  client address that the access log, `src` rules and X-Forwarded-For see; a bad or missing
  header closes the connection and is logged.
- TLS frontend: SNI picks the certificate (ECDSA P-256 and RSA-2048), ALPN offers what is
  configured, TLS 1.0/1.1 are refused, sessions resume, X-Forwarded-Proto is https, a reload
  swaps a certificate while a long download over the old one completes, and sslyze finds the
  frontend compliant with Mozilla's "intermediate" profile.
- TLS to servers: `ssl = true` with `ca_file` and `sni` verifies the server; a wrong name or CA
  gives 503.
- `source = [...]`: server connections spread over 127.0.0.2-127.0.0.4.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import json
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.support import TaggedBackend, TlsTaggedBackend, parse_responses, raw_request, require_tool, wait_until
from tests.support.config import server_blocks
from tests.support.curl import curl, curl_raw
from tests.support.nginx import NginxProcess
from tests.support.ports import free_ports
from tests.support.site import Site
from tests.support.tls import Certificate, make_certificate, openssl_client

from balancer.net import tls as tls_module

pytestmark = pytest.mark.e2e

SOURCES = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


# -- helpers -------------------------------------------------------------------------------


def v2_header(source: str, source_port: int, dest: str, dest_port: int) -> bytes:
    """A PROXY v2 header built by hand from proxy-protocol.txt (not by the code under test)."""
    src, dst = ipaddress.ip_address(source), ipaddress.ip_address(dest)
    family = 0x11 if src.version == 4 else 0x21  # TCP over IPv4 / IPv6
    body = src.packed + dst.packed + struct.pack("!HH", source_port, dest_port)
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body


V2_LOCAL = V2_SIGNATURE + bytes([0x20, 0x00, 0x00, 0x00])


def http_get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: lb.example.test\r\nConnection: close\r\n\r\n".encode()


def exchange(port: int, *pieces: bytes, pause: float = 0.0, timeout: float = 5.0) -> tuple[int, bytes]:
    """Connect to 127.0.0.1:`port`, send `pieces` (`pause` seconds apart), read until the
    connection closes or `timeout` passes. Returns (our local port, every byte received)."""
    deadline = time.monotonic() + timeout
    received = bytearray()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.bind(("127.0.0.1", 0))
        sock.connect(("127.0.0.1", port))
        local_port = int(sock.getsockname()[1])
        try:
            for index, piece in enumerate(pieces):
                if index and pause:
                    time.sleep(pause)
                sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return local_port, bytes(received)
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            received += chunk
    return local_port, bytes(received)


def only_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    responses = parse_responses(data)
    assert len(responses) == 1, f"expected one response, got {data[:300]!r}"
    return responses[0]


def echoed_header(body: bytes, name: str) -> list[str]:
    """Values of header `name` in a TaggedBackend /echo answer."""
    return [value for key, value in json.loads(body)["headers"] if key.lower() == name.lower()]


def token(prefix: str) -> str:
    return f"/{prefix}/{uuid.uuid4().hex[:12]}"


def subject_of(output: str) -> str:
    match = re.search(r"^subject=(.*)$", output, re.M)
    assert match, f"no server certificate in s_client output:\n{output[-2000:]}"
    return match[1]


def global_toml(site: Site, grace: str = "2s") -> str:
    return f'[global]\nworkers = 1\ngrace = "{grace}"\nlog = "file:{site.log_path}"\nlog_format = "json"\n'


# -- certificates ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(module_dir: Path) -> dict[str, Certificate]:
    where = module_dir / "certs"
    return {
        "a": make_certificate(where, "a.example.test"),  # ECDSA P-256, the default
        "b": make_certificate(where, "b.example.test", key="rsa"),  # RSA-2048
        "backend": make_certificate(where, "backend.example.test"),
        "other": make_certificate(where, "other.example.test"),
    }


# -- PROXY protocol: nginx behind, accept_proxy in front ------------------------------------------


@dataclass
class ProxyWorld:
    site: Site
    ports: dict[str, int]
    nginx: NginxProcess
    nginx_log: Path
    web: TaggedBackend

    def nginx_line(self, path: str, timeout: float = 5) -> list[str]:
        """The fields of nginx's access-log line for `path`:
        proxy_protocol_addr, proxy_protocol_port, remote_addr, remote_port, request..., status."""

        def find() -> str | None:
            try:
                lines = self.nginx_log.read_text().splitlines()
            except FileNotFoundError:
                return None
            return next((line for line in lines if f" {path} " in line), None)

        try:
            line = wait_until(find, timeout=timeout, what=f"nginx access log line for {path}")
        except AssertionError:
            raise AssertionError(
                f"nginx logged no request for {path}\n--- nginx ---\n{self.nginx.output()[-2000:]}\n"
                f"--- balancer ---\n{self.site.process.output()[-2000:] if self.site.process else ''}"
            ) from None
        return str(line).split()


PROXY_FRONTENDS = [
    # name, mode, accept_proxy, backend
    ("http_v1", "http", False, "nginx_v1"),
    ("http_v2", "http", False, "nginx_v2"),
    ("tcp_v1", "tcp", False, "nginx_tcp_v1"),
    ("tcp_v2", "tcp", False, "nginx_tcp_v2"),
    ("accept_to_nginx", "http", True, "nginx_v2"),
    ("accept_to_nginx_tcp", "tcp", True, "nginx_tcp_v1"),
    ("accept", "http", True, "web"),
    ("accept_tcp", "tcp", True, "web_tcp"),
    ("http_tls_v2", "http", False, "nginx_tls_v2"),
]


@pytest.fixture(scope="module")
def proxy_world(module_dir: Path, certs: dict[str, Certificate]) -> Iterator[ProxyWorld]:
    nginx_port, nginx_tls_port, *ports = free_ports(2 + len(PROXY_FRONTENDS))
    backend_cert = certs["backend"]
    nginx_dir = module_dir / "nginx"
    nginx_log = nginx_dir / "access.log"
    nginx_conf = f"""
    log_format pp '$proxy_protocol_addr $proxy_protocol_port $remote_addr $remote_port "$request" $status';
    access_log {nginx_log} pp;
    server {{
        listen 127.0.0.1:{nginx_port} proxy_protocol;
        location / {{
            return 200 "nginx $proxy_protocol_addr\\n";
        }}
    }}
    server {{
        listen 127.0.0.1:{nginx_tls_port} ssl proxy_protocol;
        ssl_certificate {backend_cert.pem};
        ssl_certificate_key {backend_cert.pem};
        location / {{
            return 200 "nginx $proxy_protocol_addr\\n";
        }}
    }}
"""
    with TaggedBackend("web") as web, NginxProcess(nginx_dir, nginx_conf) as nginx:
        nginx.wait_ready(nginx_port)
        site = Site(module_dir / "proxy")
        by_name = dict(zip([f[0] for f in PROXY_FRONTENDS], ports, strict=True))
        text = global_toml(site)
        for name, mode, accept, backend in PROXY_FRONTENDS:
            text += f"""
[[frontend]]
name = "{name}"
bind = ["127.0.0.1:{by_name[name]}"]
mode = "{mode}"
accept_proxy = {str(accept).lower()}
default_backend = "{backend}"
timeouts = {{ http_request = "1s", client = "10s" }}
"""
            if name == "accept":
                text += """
  [[frontend.rule]]
  if = { src = ["203.0.113.0/24"] }
  action = "deny"
"""
        for name, mode, send_proxy in (
            ("nginx_v1", "http", "v1"),
            ("nginx_v2", "http", "v2"),
            ("nginx_tcp_v1", "tcp", "v1"),
            ("nginx_tcp_v2", "tcp", "v2"),
        ):
            text += f'\n[[backend]]\nname = "{name}"\nmode = "{mode}"\nsend_proxy = "{send_proxy}"\n'
            text += server_blocks([{"name": "nginx", "address": f"127.0.0.1:{nginx_port}"}])
        tls_server = {
            "name": "nginx",
            "address": f"127.0.0.1:{nginx_tls_port}",
            "ssl": True,
            "ca_file": str(backend_cert.crt),
            "sni": backend_cert.name,
        }
        text += '\n[[backend]]\nname = "nginx_tls_v2"\nsend_proxy = "v2"\n' + server_blocks([tls_server])
        text += '\n[[backend]]\nname = "web"\n' + server_blocks([web])
        text += '\n[[backend]]\nname = "web_tcp"\nmode = "tcp"\n' + server_blocks([web])
        site.start(text, ports=ports)
        try:
            yield ProxyWorld(site, by_name, nginx, nginx_log, web)
        finally:
            site.stop()


@pytest.mark.parametrize("frontend", ["http_v1", "http_v2", "tcp_v1", "tcp_v2"])
def test_nginx_sees_the_original_client_through_send_proxy(proxy_world: ProxyWorld, frontend: str):
    path = token(frontend)
    local_port, answer = exchange(proxy_world.ports[frontend], http_get(path))
    status, _, body = only_response(answer)
    assert (status, body) == (200, b"nginx 127.0.0.1\n")

    pp_addr, pp_port, remote_addr, remote_port = proxy_world.nginx_line(path)[:4]
    assert pp_addr == "127.0.0.1"
    assert int(pp_port) == local_port  # the client's own port: the header named our connection
    assert remote_addr == "127.0.0.1"
    assert int(remote_port) != local_port  # nginx's peer is the balancer


def test_send_proxy_to_a_tls_server_comes_before_the_handshake(proxy_world: ProxyWorld):
    """With `ssl = true` the PROXY header goes in clear, before the TLS handshake, as HAProxy
    sends it and as nginx `listen ... ssl proxy_protocol` expects it."""
    path = token("tls-server")
    local_port, answer = exchange(proxy_world.ports["http_tls_v2"], http_get(path))
    status, _, body = only_response(answer)
    assert (status, body) == (200, b"nginx 127.0.0.1\n")
    assert proxy_world.nginx_line(path)[:2] == ["127.0.0.1", str(local_port)]


@pytest.mark.parametrize("frontend", ["http_v1", "http_v2"])
def test_each_client_gets_its_own_proxy_header(proxy_world: ProxyWorld, frontend: str):
    """A server connection that began with one client's PROXY header never carries another's."""
    seen = []
    for _ in range(4):
        path = token(frontend)
        local_port, answer = exchange(proxy_world.ports[frontend], http_get(path))
        assert only_response(answer)[0] == 200
        seen.append((local_port, int(proxy_world.nginx_line(path)[1])))
    assert [mine for mine, _ in seen] == [named for _, named in seen]


def test_keep_alive_client_keeps_its_address_on_every_request(proxy_world: ProxyWorld):
    paths = [token("ka"), token("ka"), token("ka")]
    data = b"".join(
        f"GET {p} HTTP/1.1\r\nHost: x\r\n{'Connection: close' if i == 2 else 'X: y'}\r\n\r\n".encode()
        for i, p in enumerate(paths)
    )
    local_port, answer = exchange(proxy_world.ports["http_v2"], data)
    assert [r[0] for r in parse_responses(answer)] == [200, 200, 200]
    for path in paths:
        assert proxy_world.nginx_line(path)[:2] == ["127.0.0.1", str(local_port)]


@pytest.mark.parametrize("frontend", ["accept_to_nginx", "accept_to_nginx_tcp"])
def test_address_from_a_proxy_header_reaches_nginx(proxy_world: ProxyWorld, frontend: str):
    """accept_proxy in front, send_proxy behind: nginx must log the address the incoming
    PROXY v2 header named, not ours."""
    path = token(frontend)
    port = proxy_world.ports[frontend]
    _, answer = exchange(port, v2_header("203.0.113.9", 40123, "127.0.0.1", port) + http_get(path))
    status, _, body = only_response(answer)
    assert (status, body) == (200, b"nginx 203.0.113.9\n")
    assert proxy_world.nginx_line(path)[:2] == ["203.0.113.9", "40123"]


def test_curl_haproxy_protocol_sets_src(proxy_world: ProxyWorld):
    path = token("curl-v1")
    port = proxy_world.ports["accept"]
    done = curl_raw("--haproxy-protocol", "-w", "\n%{http_code} %{local_port}", f"http://127.0.0.1:{port}/echo{path}")
    assert done.returncode == 0, done.stderr
    body, _, tail = done.stdout.rpartition(b"\n")
    code, local_port = tail.decode().split()
    assert code == "200", done.stdout[-500:]
    assert echoed_header(body, "X-Forwarded-For") == ["127.0.0.1"]

    entry = proxy_world.site.wait_json_log(lambda e: path in str(e.get("request")), what=path)
    assert (entry["frontend"], entry["client_ip"], entry["client_port"]) == ("accept", "127.0.0.1", int(local_port))
    assert entry["status"] == 200


@pytest.mark.parametrize(
    ("header", "address", "port"),
    [
        (v2_header("192.0.2.7", 5555, "127.0.0.1", 80), "192.0.2.7", 5555),
        (v2_header("2001:db8::7", 6666, "::1", 80), "2001:db8::7", 6666),
        (b"PROXY TCP4 198.51.100.20 127.0.0.1 7777 80\r\n", "198.51.100.20", 7777),
    ],
    ids=["v2-tcp4", "v2-tcp6", "v1-tcp4"],
)
def test_proxy_header_sets_src_in_log_and_forwarded_for(
    proxy_world: ProxyWorld, header: bytes, address: str, port: int
):
    path = token("hdr")
    _, answer = exchange(proxy_world.ports["accept"], header + http_get(f"/echo{path}"))
    status, _, body = only_response(answer)
    assert status == 200
    assert echoed_header(body, "X-Forwarded-For") == [address]

    entry = proxy_world.site.wait_json_log(lambda e: path in str(e.get("request")), what=path)
    assert (entry["client_ip"], entry["client_port"]) == (address, port)


def test_src_rule_sees_the_proxy_address(proxy_world: ProxyWorld):
    port = proxy_world.ports["accept"]
    denied, allowed = token("denied"), token("allowed")
    _, answer = exchange(port, v2_header("203.0.113.9", 1111, "127.0.0.1", port) + http_get(denied))
    assert only_response(answer)[0] == 403
    _, answer = exchange(port, v2_header("203.0.114.9", 2222, "127.0.0.1", port) + http_get(allowed))
    assert only_response(answer)[0] == 200

    entry = proxy_world.site.wait_json_log(lambda e: denied in str(e.get("request")), what=denied)
    assert (entry["status"], entry["client_ip"]) == (403, "203.0.113.9")
    assert denied not in proxy_world.web.paths
    assert allowed in proxy_world.web.paths


@pytest.mark.parametrize("header", [V2_LOCAL, b"PROXY UNKNOWN\r\n"], ids=["v2-local", "v1-unknown"])
def test_local_header_keeps_the_real_peer(proxy_world: ProxyWorld, header: bytes):
    path = token("local")
    local_port, answer = exchange(proxy_world.ports["accept"], header + http_get(path))
    assert only_response(answer)[0] == 200
    entry = proxy_world.site.wait_json_log(lambda e: path in str(e.get("request")), what=path)
    assert (entry["client_ip"], entry["client_port"]) == ("127.0.0.1", local_port)


def test_header_arriving_in_pieces(proxy_world: ProxyWorld):
    port = proxy_world.ports["accept"]
    path = token("pieces")
    header = v2_header("192.0.2.99", 9999, "127.0.0.1", port)
    request = http_get(path)
    pieces = [header[:5], header[5:14], header[14:20], header[20:] + request[:7], request[7:]]
    _, answer = exchange(port, *pieces, pause=0.05)
    assert only_response(answer)[0] == 200
    entry = proxy_world.site.wait_json_log(lambda e: path in str(e.get("request")), what=path)
    assert entry["client_ip"] == "192.0.2.99"


def assert_refused_and_logged(site: Site, port: int, data: bytes, reason: str) -> None:
    """`data` sent to `port` gets no answer, the connection is closed within 3 s, and the
    balancer's log names the connection and `reason`."""
    started = time.monotonic()
    local_port, answer = exchange(port, data, timeout=5)
    assert answer == b"", f"a bad PROXY header must get no answer, got {answer[:200]!r}"
    assert time.monotonic() - started < 3, "the connection was not closed"
    process = site.process
    assert process is not None
    wait_until(
        lambda: re.search(rf"connection from 127\.0\.0\.1:{local_port} closed: .*{reason}", process.output()),
        timeout=5,
        what=f"the refusal of 127.0.0.1:{local_port} ({reason}) in the balancer's log",
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (http_get("/no-header"), "does not start with a PROXY protocol header"),
        (b"PROXY TCP4 203.0.113.9 127.0.0.1 99999 80\r\n" + http_get("/bad-port"), "bad port"),
        (b"PROXY TCP4 203.0.113.9 127.0.0.1 1 80 " + b"x" * 120, "longer than 107 bytes"),
        (V2_SIGNATURE + bytes([0x31, 0x11, 0, 12]) + bytes(12) + http_get("/v3"), "version 3"),
    ],
    ids=["http-without-header", "v1-bad-port", "v1-too-long", "v2-bad-version"],
)
def test_bad_header_closes_the_connection_and_is_logged(proxy_world: ProxyWorld, data: bytes, reason: str):
    assert_refused_and_logged(proxy_world.site, proxy_world.ports["accept"], data, reason)


def test_missing_header_times_out_and_is_logged(proxy_world: ProxyWorld):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", proxy_world.ports["accept"]), timeout=5) as sock:
        local_port = sock.getsockname()[1]
        sock.sendall(b"PROXY TCP4 203.0")  # then nothing
        assert sock.recv(100) == b""
    elapsed = time.monotonic() - started
    assert 0.8 <= elapsed < 3, f"closed after {elapsed:.2f}s; http_request is 1s"
    process = proxy_world.site.process
    assert process is not None
    wait_until(
        lambda: f"connection from 127.0.0.1:{local_port} closed: no PROXY header within 1s" in process.output(),
        timeout=5,
        what="the header timeout in the balancer's log",
    )


def test_tcp_mode_accept_proxy_sets_src(proxy_world: ProxyWorld):
    port = proxy_world.ports["accept_tcp"]
    path = token("tcp")
    _, answer = exchange(port, v2_header("192.0.2.55", 6000, "127.0.0.1", port) + http_get(path))
    assert only_response(answer)[0] == 200
    assert path in proxy_world.web.paths
    entry = proxy_world.site.wait_json_log(
        lambda e: e.get("frontend") == "accept_tcp" and e.get("client_port") == 6000, what="the TCP connection"
    )
    assert entry["client_ip"] == "192.0.2.55"


# -- TLS frontend, TLS to servers, source addresses --------------------------------------------


@dataclass
class TlsWorld:
    site: Site
    ports: dict[str, int]
    web: TaggedBackend
    tls_server: TlsTaggedBackend
    spread_http: TaggedBackend
    spread_tcp: TaggedBackend

    def url(self, frontend: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[frontend]}{path}"


@pytest.fixture(scope="module")
def tls_world(module_dir: Path, certs: dict[str, Certificate]) -> Iterator[TlsWorld]:
    names = ["tls", "tls_accept", "to_tls", "to_tls_bad_sni", "to_tls_bad_ca", "to_tls_no_sni"]
    names += ["spread_http", "spread_tcp"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    backend_cert = certs["backend"]
    with (
        TaggedBackend("web") as web,
        TlsTaggedBackend("tls1", str(backend_cert.pem)) as tls_server,
        TaggedBackend("spread-http") as spread_http,
        TaggedBackend("spread-tcp") as spread_tcp,
    ):
        site = Site(module_dir / "tls")
        text = global_toml(site)
        text += f"""
[[frontend]]
name = "tls"
bind = ["127.0.0.1:{ports["tls"]}"]
default_backend = "web"
tls = {{ cert = ["{certs["a"].pem}", "{certs["b"].pem}"], alpn = ["http/1.1", "http/1.0"] }}

[[frontend]]
name = "tls_accept"
bind = ["127.0.0.1:{ports["tls_accept"]}"]
default_backend = "web"
accept_proxy = true
timeouts = {{ http_request = "1s" }}
tls = {{ cert = ["{certs["a"].pem}"] }}
"""
        frontends = {
            "to_tls": "tls_ok",
            "to_tls_bad_sni": "tls_bad_sni",
            "to_tls_bad_ca": "tls_bad_ca",
            "to_tls_no_sni": "tls_no_sni",
            "spread_http": "spread_http",
        }
        for frontend, backend in frontends.items():
            text += f'\n[[frontend]]\nname = "{frontend}"\nbind = ["127.0.0.1:{ports[frontend]}"]\n'
            text += f'default_backend = "{backend}"\n'
        text += f"""
[[frontend]]
name = "spread_tcp"
bind = ["127.0.0.1:{ports["spread_tcp"]}"]
mode = "tcp"
default_backend = "spread_tcp"

[[backend]]
name = "web"
{server_blocks([web])}
"""
        for backend, sni, ca in (
            ("tls_ok", "backend.example.test", backend_cert.crt),
            ("tls_bad_sni", "wrong.example.test", backend_cert.crt),
            ("tls_bad_ca", "backend.example.test", certs["other"].crt),
            ("tls_no_sni", "", backend_cert.crt),  # then the name checked is 127.0.0.1
        ):
            server: dict[str, Any] = {"name": "tls1", "address": tls_server.address, "ssl": True, "ca_file": str(ca)}
            if sni:
                server["sni"] = sni
            text += f'\n[[backend]]\nname = "{backend}"\ntimeouts = {{ connect = "2s" }}\n' + server_blocks([server])
        text += f"""
[[backend]]
name = "spread_http"
source = {json.dumps(SOURCES)}
pool = {{ max_idle_per_server = 0 }}
{server_blocks([spread_http])}
[[backend]]
name = "spread_tcp"
mode = "tcp"
source = {json.dumps(SOURCES)}
{server_blocks([spread_tcp])}
"""
        site.start(text, ports=list(ports.values()))
        try:
            yield TlsWorld(site, ports, web, tls_server, spread_http, spread_tcp)
        finally:
            site.stop()


@pytest.mark.parametrize(("which", "bits"), [("a", 256), ("b", 2048)])
def test_sni_chooses_the_certificate(tls_world: TlsWorld, certs: dict[str, Certificate], which: str, bits: int):
    cert = certs[which]
    port = tls_world.ports["tls"]
    result = curl(
        "-v",
        "--resolve",
        f"{cert.name}:{port}:127.0.0.1",
        "--cacert",
        str(cert.crt),  # verification succeeds only with this very certificate
        f"https://{cert.name}:{port}/",
    )
    assert result.returncode == 0, result.stderr
    assert result.status == 200
    assert result.body == b"web\n"
    assert f"subject: CN={cert.name}" in result.stderr

    output = openssl_client(port, "-servername", cert.name)
    assert subject_of(output) == f"CN = {cert.name}"
    assert f"Server public key is {bits} bit" in output


@pytest.mark.parametrize(
    "args", [["-noservername"], ["-servername", "unknown.example.test"]], ids=["no-sni", "unknown-name"]
)
def test_default_certificate_without_a_matching_name(tls_world: TlsWorld, args: list[str]):
    output = openssl_client(tls_world.ports["tls"], *args)
    assert subject_of(output) == "CN = a.example.test"


@pytest.mark.parametrize(
    ("offer", "expected"),
    [
        ("http/1.1", "ALPN protocol: http/1.1"),
        ("h2,http/1.1", "ALPN protocol: http/1.1"),
        ("http/1.0", "ALPN protocol: http/1.0"),
        ("h2", "No ALPN negotiated"),
    ],
)
@pytest.mark.parametrize("name", ["a.example.test", "b.example.test"])
def test_alpn_offers_what_is_configured(tls_world: TlsWorld, name: str, offer: str, expected: str):
    output = openssl_client(tls_world.ports["tls"], "-servername", name, "-alpn", offer)
    assert expected in output, output[-2000:]
    assert subject_of(output) == f"CN = {name}"


@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
def test_old_protocol_versions_are_refused(tls_world: TlsWorld, version: str):
    # SECLEVEL=0 lets this client offer the old version at all (Debian's default refuses it),
    # so what refuses is the balancer.
    output = openssl_client(tls_world.ports["tls"], version, "-cipher", "DEFAULT:@SECLEVEL=0")
    assert "no protocols available" not in output, "the client did not even offer the version"
    assert "no peer certificate available" in output
    assert "Cipher is (NONE)" in output
    assert not output.startswith("exit=0")


def test_no_common_cipher_is_a_handshake_failure_alert(tls_world: TlsWorld):
    """A TLS 1.2 client offering only ciphers the intermediate profile excludes is told so
    (alert handshake_failure), not cut off."""
    output = openssl_client(tls_world.ports["tls"], "-tls1_2", "-cipher", "AES128-SHA")
    assert "alert handshake failure" in output, output[-1500:]


def test_old_protocol_refusal_is_a_protocol_version_alert(tls_world: TlsWorld):
    """RFC 8446 appendix D / RFC 5246 E.1: a server that does not support the client's version
    aborts the handshake with a `protocol_version` alert, so the client can say why (HAProxy and
    NGINX do). A bare close leaves the client with "unexpected eof while reading"."""
    output = openssl_client(tls_world.ports["tls"], "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert "alert protocol version" in output, output[-1500:]


@pytest.mark.parametrize(("version", "label"), [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_tls12_and_tls13_are_accepted(tls_world: TlsWorld, version: str, label: str):
    output = openssl_client(tls_world.ports["tls"], version, "-servername", "b.example.test")
    match = re.search(r"^New, (\S+), Cipher is (\S+)$", output, re.M)
    assert match, output[-2000:]
    assert match[1] == label
    if label == "TLSv1.2":
        assert re.fullmatch(r"ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)", match[2]), match[2]


@pytest.mark.parametrize(
    ("offer", "expected"),
    [
        # OpenSSL's own client order, AES-256 first: the server's order picks AES-128.
        ("TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256"),
        # A client without AES instructions lists ChaCha20 first, and gets it.
        ("TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"),
        ("TLS_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384"),
    ],
)
def test_tls13_suite_is_the_servers_choice_unless_the_client_wants_chacha20(
    tls_world: TlsWorld, offer: str, expected: str
):
    output = openssl_client(tls_world.ports["tls"], "-tls1_3", "-ciphersuites", offer, "-servername", "a.example.test")
    match = re.search(r"^New, TLSv1.3, Cipher is (\S+)$", output, re.M)
    assert match, output[-2000:]
    assert match[1] == expected


@contextlib.contextmanager
def one_tls_frontend(folder: Path, cert: Certificate, tls_keys: str) -> Iterator[int]:
    """A balancer of its own in `folder`: one TLS frontend (`cert` and the extra `tls`
    keys, TOML inline-table text) in front of one backend server; yields its port."""
    (port,) = free_ports(1)
    with TaggedBackend(folder.name) as web:
        site = Site(folder)
        site.start(
            global_toml(site)
            + f"""
[[frontend]]
name = "tls"
bind = ["127.0.0.1:{port}"]
default_backend = "web"
tls = {{ cert = ["{cert.pem}"], {tls_keys} }}

[[backend]]
name = "web"
{server_blocks([web])}
""",
            ports=[port],
        )
        try:
            yield port
        finally:
            site.stop()


def test_a_frontends_ciphersuites_are_its_only_tls13_suites_in_its_order(
    module_dir: Path, certs: dict[str, Certificate]
):
    """`tls.ciphersuites` (HAProxy's `ciphersuites`, NGINX's `ssl_conf_command Ciphersuites`):
    the frontend serves those TLS 1.3 suites, by its own order, and refuses a client that
    offers none of them; TLS 1.2 is untouched."""
    if tls_module._tls is None:
        pytest.skip("net/_tls.c is not built here (BALANCER_PURE=1): Python's ssl cannot set a frontend's suites")
    suites = 'ciphersuites = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"'
    everything = "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384"
    with one_tls_frontend(module_dir / "suites", certs["a"], suites) as port:
        # The default list would pick AES-128 for `everything`; this one does not hold it.
        chacha = "TLS_CHACHA20_POLY1305_SHA256"
        for offer, expected in [(everything, "TLS_AES_256_GCM_SHA384"), (chacha, chacha)]:
            output = openssl_client(port, "-tls1_3", "-ciphersuites", offer)
            match = re.search(r"^New, TLSv1.3, Cipher is (\S+)$", output, re.M)
            assert match, output[-2000:]
            assert match[1] == expected, offer
        refused = openssl_client(port, "-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256")
        assert "alert handshake failure" in refused, refused[-1500:]
        assert "New, TLSv1.2" in openssl_client(port, "-tls1_2"), "TLS 1.2 must still be served"
        result = curl("-k", "--tlsv1.3", f"https://127.0.0.1:{port}/")
        assert result.returncode == 0, result.stderr


def test_a_frontends_curves_are_its_only_key_exchange_groups(module_dir: Path, certs: dict[str, Certificate]):
    """`tls.curves` (HAProxy's `curves`, NGINX's `ssl_ecdh_curve`): the frontend exchanges
    keys over those groups only and refuses a client that offers none of them. In TLS 1.2
    the server's order picks among the groups both offer; in TLS 1.3 a key share the client
    sent in a listed group is taken as it is (no extra round trip), else the client is asked
    for one in the server's first shared group."""
    if tls_module._tls is None:
        pytest.skip("net/_tls.c is not built here (BALANCER_PURE=1): Python's ssl cannot set a frontend's groups")
    with one_tls_frontend(module_dir / "curves", certs["a"], 'curves = "secp384r1:X25519"') as port:
        for version, offer, expected in [
            ("-tls1_2", "X25519:P-256:P-384", "ECDH, secp384r1, 384 bits"),  # P-256: the certificate's
            ("-tls1_3", "X25519:P-384", "X25519, 253 bits"),
            ("-tls1_3", "P-256:P-384", "ECDH, secp384r1, 384 bits"),
        ]:
            output = openssl_client(port, version, "-groups", offer)
            assert f"\nServer Temp Key: {expected}\n" in output, (version, offer, output[-2000:])
        refused = openssl_client(port, "-tls1_3", "-groups", "P-256")
        assert "alert handshake failure" in refused, refused[-1500:]
        result = curl("-k", f"https://127.0.0.1:{port}/")
        assert result.returncode == 0, result.stderr


def test_prefer_client_ciphers_serves_the_clients_first_choice(module_dir: Path, certs: dict[str, Certificate]):
    """`tls.prefer_client_ciphers` (HAProxy `prefer-client-ciphers`): OpenSSL's own client
    order, AES-256 first, gets AES-256 in TLS 1.3 and TLS 1.2, where the server's order
    would give AES-128."""
    with one_tls_frontend(module_dir / "client_order", certs["a"], "prefer_client_ciphers = true") as port:
        offer = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"
        output = openssl_client(port, "-tls1_3", "-ciphersuites", offer)
        assert re.search(r"^New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384$", output, re.M), output[-2000:]
        output = openssl_client(
            port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256"
        )
        assert re.search(r"^New, TLSv1.2, Cipher is ECDHE-ECDSA-AES256-GCM-SHA384$", output, re.M), output[-2000:]


def test_a_tls12_client_with_only_dhe_suites_gets_ffdhe2048(tls_world: TlsWorld):
    """Mozilla's intermediate profile keeps DHE-RSA suites for TLS 1.2 clients without ECDHE,
    with RFC 7919's 2048-bit group, as HAProxy serves them by default."""
    output = openssl_client(
        tls_world.ports["tls"], "-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256", "-servername", "b.example.test"
    )
    assert "New, TLSv1.2, Cipher is DHE-RSA-AES128-GCM-SHA256" in output, output[-2000:]
    assert re.search(r"^Server Temp Key: DH, 2048 bits$", output, re.M), output[-2000:]


@pytest.mark.parametrize("name", ["a.example.test", "b.example.test"])
def test_sessions_resume_with_tickets(tls_world: TlsWorld, tmp_path: Path, name: str):
    session = tmp_path / "session.pem"
    port = tls_world.ports["tls"]
    first = openssl_client(port, "-tls1_2", "-servername", name, "-sess_out", str(session))
    assert "New, TLSv1.2" in first, first[-1500:]
    assert "TLS session ticket:" in first, "no session ticket issued"
    again = openssl_client(port, "-tls1_2", "-servername", name, "-sess_in", str(session))
    assert "Reused, TLSv1.2" in again, again[-1500:]


def test_without_tickets_sessions_resume_from_the_workers_cache(module_dir: Path, certs: dict[str, Certificate]):
    """`tls.tickets = false` (HAProxy `no-tls-tickets`): no stateless ticket is issued in
    TLS 1.2, and a session still resumes, by its id (TLS 1.2) or by a ticket naming it in
    the worker's cache (TLS 1.3), on the one worker that made it."""
    with one_tls_frontend(module_dir / "no_tickets", certs["a"], "tickets = false") as port:
        request = "GET / HTTP/1.1\r\nHost: a.example.test\r\nConnection: close\r\n\r\n"
        for version in ("-tls1_2", "-tls1_3"):
            session = module_dir / "no_tickets" / f"session{version}.pem"
            first = openssl_client(port, version, "-sess_out", str(session), send=request)
            assert "New, TLSv1." in first and "HTTP/1.1 200" in first, first[-1500:]
            if version == "-tls1_2":
                assert "TLS session ticket:" not in first, first[-1500:]
            again = openssl_client(port, version, "-sess_in", str(session), send=request)
            assert "Reused, TLSv1." in again, again[-1500:]


def test_x_forwarded_proto_is_https(tls_world: TlsWorld):
    result = curl("-k", f"https://127.0.0.1:{tls_world.ports['tls']}/echo")
    assert result.status == 200, result.stderr
    assert echoed_header(result.body, "X-Forwarded-Proto") == ["https"]
    assert echoed_header(result.body, "X-Forwarded-For") == ["127.0.0.1"]
    plain = curl(tls_world.url("spread_http", "/echo"))  # the same through a plain frontend
    assert echoed_header(plain.body, "X-Forwarded-Proto") == ["http"]


def test_curl_haproxy_protocol_into_a_tls_frontend(tls_world: TlsWorld):
    """accept_proxy on a TLS frontend: the PROXY header comes first, in clear, then the TLS
    handshake (what an L4 tier in front sends, and what `curl --haproxy-protocol https://` does)."""
    path = token("tls-pp")
    port = tls_world.ports["tls_accept"]
    done = curl_raw(
        "--haproxy-protocol", "-k", "-w", "\n%{http_code} %{local_port}", f"https://127.0.0.1:{port}/echo{path}"
    )
    assert done.returncode == 0, done.stderr
    body, _, tail = done.stdout.rpartition(b"\n")
    code, local_port = tail.decode().split()
    assert code == "200"
    assert echoed_header(body, "X-Forwarded-Proto") == ["https"]
    entry = tls_world.site.wait_json_log(lambda e: path in str(e.get("request")), what=path)
    assert (entry["client_ip"], entry["client_port"]) == ("127.0.0.1", int(local_port))


def proxied_tls_exchange(port: int, header_pieces: list[bytes], path: str) -> bytes:
    """A PROXY header sent in clear (in pieces 50 ms apart when several), then TLS and one
    GET of `path`; every byte of the answer until the server closes."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        for index, piece in enumerate(header_pieces):
            if index:
                time.sleep(0.05)  # pacing, so that the pieces arrive as separate reads
            raw.sendall(piece)
        with context.wrap_socket(raw, server_hostname="a.example.test") as tls:
            tls.sendall(http_get(path))
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                while chunk := tls.recv(65536):
                    received += chunk
    return bytes(received)


def test_v2_header_then_tls_handshake(tls_world: TlsWorld):
    path = token("tls-v2")
    port = tls_world.ports["tls_accept"]
    received = proxied_tls_exchange(port, [v2_header("192.0.2.8", 4444, "127.0.0.1", port)], f"/echo{path}")
    status, _, body = only_response(received)
    assert status == 200
    assert echoed_header(body, "X-Forwarded-For") == ["192.0.2.8"]
    entry = tls_world.site.wait_json_log(lambda e: path in str(e.get("request")), what=path)
    assert (entry["client_ip"], entry["client_port"]) == ("192.0.2.8", 4444)


def test_a_header_in_pieces_then_the_handshake_on_a_tls_frontend(tls_world: TlsWorld):
    """The header is read off the socket before TLS starts, however it arrives; the
    ClientHello right behind it is left to TLS."""
    path = token("tls-pieces")
    port = tls_world.ports["tls_accept"]
    header = b"PROXY TCP4 198.51.100.7 127.0.0.1 5555 443\r\n"
    received = proxied_tls_exchange(port, [header[:3], header[3:20], header[20:]], f"/echo{path}")
    status, _, body = only_response(received)
    assert status == 200
    assert echoed_header(body, "X-Forwarded-For") == ["198.51.100.7"]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x16\x03\x01\x00\xc8\x01" + bytes(200), "does not start with a PROXY protocol header"),
        (b"PROXY TCP4 203.0.113.9 127.0.0.1 99999 80\r\n", "bad port"),
        (b"PROXY TCP4 203.0", "no PROXY header within 1s"),
    ],
    ids=["tls-without-header", "v1-bad-port", "timeout"],
)
def test_a_tls_frontend_closes_a_connection_without_a_good_header_and_logs_it(
    tls_world: TlsWorld, data: bytes, reason: str
):
    assert_refused_and_logged(tls_world.site, tls_world.ports["tls_accept"], data, reason)


def test_tls_to_server_with_ca_and_sni(tls_world: TlsWorld):
    path = token("to-tls")
    result = curl(tls_world.url("to_tls", f"/echo{path}"))
    assert result.status == 200, result.body
    assert json.loads(result.body)["server"] == "tls1"
    assert f"/echo{path}" in tls_world.tls_server.paths
    assert "backend.example.test" in tls_world.tls_server.server_names


@pytest.mark.parametrize("frontend", ["to_tls_bad_sni", "to_tls_bad_ca", "to_tls_no_sni"])
def test_tls_to_server_refuses_an_unverified_server(tls_world: TlsWorld, frontend: str):
    path = token(frontend)
    result = curl(tls_world.url(frontend, path))
    assert result.status == 503
    assert path not in tls_world.tls_server.paths


def test_sources_spread_http_connections(tls_world: TlsWorld):
    paths = [token("spread") for _ in range(9)]
    for path in paths:
        answer = raw_request(tls_world.ports["spread_http"], http_get(path))
        assert only_response(answer)[0] == 200
    peers = {r.path: r.peer for r in tls_world.spread_http.requests if r.path in paths}
    assert len(peers) == 9
    counts = collections.Counter(peer[0] for peer in peers.values() if peer)
    assert counts == dict.fromkeys(SOURCES, 3), counts


def test_sources_spread_tcp_connections(tls_world: TlsWorld):
    paths = [token("spread-tcp") for _ in range(6)]
    for path in paths:
        answer = raw_request(tls_world.ports["spread_tcp"], http_get(path))
        assert only_response(answer)[0] == 200
    peers = {r.path: r.peer for r in tls_world.spread_tcp.requests if r.path in paths}
    counts = collections.Counter(peer[0] for peer in peers.values() if peer)
    assert counts == dict.fromkeys(SOURCES, 2), counts


def find_sslyze() -> str:
    beside = Path(sys.executable).parent / "sslyze"  # installed in this venv (the test extras)
    return str(beside) if beside.exists() else (shutil.which("sslyze") or require_tool("sslyze"))


def test_sslyze_mozilla_intermediate(tls_world: TlsWorld, certs: dict[str, Certificate], tmp_path: Path):
    sslyze = find_sslyze()
    trusted = tmp_path / "trusted.pem"
    trusted.write_bytes(certs["a"].crt.read_bytes() + certs["b"].crt.read_bytes())
    port = tls_world.ports["tls"]
    done = subprocess.run(
        [
            sslyze,
            "--mozilla_config=intermediate",
            "--certinfo_ca_file",
            str(trusted),
            f"a.example.test:{port}{{127.0.0.1}}",  # ECDSA certificate
            f"b.example.test:{port}{{127.0.0.1}}",  # RSA certificate
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = done.stdout[done.stdout.find("COMPLIANCE AGAINST") :] or done.stdout[-3000:]
    assert done.returncode == 0, f"sslyze exit {done.returncode}:\n{report}\n{done.stderr[-1000:]}"
    assert report.count("OK - Compliant") == 2, report


# -- reload -----------------------------------------------------------------------------------


def test_reload_swaps_a_certificate_while_a_download_continues(site: Site, tmp_path: Path):
    curl_exe = require_tool("curl")
    old = make_certificate(tmp_path / "old", "r.example.test", organization="old", stem="r")
    new = make_certificate(tmp_path / "new", "r.example.test", organization="new", stem="r")
    live = tmp_path / "live.pem"
    live.write_bytes(old.pem.read_bytes())
    size = 200_000_000
    with TaggedBackend("big") as big:
        process = site.start(
            global_toml(site, grace="60s")
            + f"""
[[frontend]]
name = "tls"
bind = ["127.0.0.1:{site.port}"]
default_backend = "big"
tls = {{ cert = ["{live}"] }}

[[backend]]
name = "big"
timeouts = {{ server = "60s" }}
{server_blocks([big])}
"""
        )
        resolve = f"r.example.test:{site.port}:127.0.0.1"
        url = f"https://r.example.test:{site.port}"
        trace = tmp_path / "download.trace"
        with trace.open("wb") as err:
            download = subprocess.Popen(
                [
                    *(curl_exe, "-sS", "-v", "--noproxy", "*", "--max-time", "90", "--resolve", resolve),
                    *("--cacert", str(old.crt), "--limit-rate", "25M", "-o", "/dev/null"),
                    *("-w", "%{http_code} %{size_download}", f"{url}/bytes/{size}"),
                ],
                stdout=subprocess.PIPE,
                stderr=err,
            )
        try:
            wait_until(lambda: "< HTTP/1.1 200" in trace.read_text(errors="replace"), timeout=10, what="the download")
            assert "O=old" in trace.read_text(errors="replace")

            live.write_bytes(new.pem.read_bytes())
            process.send_signal(signal.SIGHUP)
            wait_until(lambda: "reload complete" in process.output(), timeout=30, what="reload complete")
            assert download.poll() is None, "the download ended before the reload completed: nothing was tested"

            # A new connection gets the new certificate: it verifies against the new one only.
            fresh = curl("-v", "--resolve", resolve, "--cacert", str(new.crt), f"{url}/")
            assert fresh.returncode == 0 and fresh.status == 200, fresh.stderr
            assert "O=new" in fresh.stderr

            out, _ = download.communicate(timeout=90)
        finally:
            if download.poll() is None:
                download.kill()
                download.wait(5)
    trace_text = trace.read_text(errors="replace")
    assert download.returncode == 0, trace_text[-2000:]
    assert out.decode() == f"200 {size}", trace_text[-2000:]
