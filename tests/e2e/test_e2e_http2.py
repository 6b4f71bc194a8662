"""HTTP/2 to clients, seen from outside: `balancer run -c FILE` with real HTTP/2 clients.

- curl `--http2` over TLS (ALPN h2) and `--http2-prior-knowledge` in cleartext (h2c):
  answers, the access log's HTTP/2.0 lines, a deny rule's 403, a large upload and download.
- nghttp: a response's trailers (gRPC's grpc-status) as a final HEADERS frame, 100 streams
  on one connection; h2load: thousands of multiplexed requests over
  TLS and h2c, and a server killed mid-run (retried as for HTTP/1.1: nothing lost).
- A rapid-reset flood (CVE-2023-44487: 100,000 HEADERS + RST_STREAM pairs) costs the worker
  under a second of CPU, ends in GOAWAY ENHANCE_YOUR_CALM, and never reaches a server as
  100,000 requests.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest
from tests.support import TaggedBackend, require_tool, wait_until
from tests.support.curl import curl_raw
from tests.support.ports import free_port
from tests.support.server_process import ServerProcess
from tests.support.site import Site
from tests.support.tls import Certificate, make_certificate

pytestmark = pytest.mark.e2e

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
NAME = "h2.example.test"


@dataclass
class H2World:
    site: Site
    tls_port: int
    cert: Certificate
    servers: list[TaggedBackend]

    def h2c(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.site.port}{path}"

    def tls(self, path: str = "/") -> str:
        return f"https://{NAME}:{self.tls_port}{path}"

    def curl_tls(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        return curl_raw(
            "--cacert", str(self.cert.crt), "--resolve", f"{NAME}:{self.tls_port}:127.0.0.1", *args, timeout=timeout
        )


def _config(site: Site, tls_port: int, cert: Certificate, servers: list[str], backend_extra: str = "") -> str:
    lines = [
        site.global_toml(),
        "[[frontend]]",
        'name = "h2c"',
        f'bind = "127.0.0.1:{site.port}"',
        'default_backend = "web"',
        "h2c = true",
        "  [[frontend.rule]]",
        '  if = { path_beg = ["/admin"] }',
        '  action = "deny"',
        "[[frontend]]",
        'name = "tls"',
        f'bind = "127.0.0.1:{tls_port}"',
        'default_backend = "web"',
        f'tls = {{ cert = ["{cert.pem}"], alpn = ["h2", "http/1.1"] }}',
        "  [[frontend.rule]]",
        '  if = { path_beg = ["/admin"] }',
        '  action = "deny"',
        "[[backend]]",
        'name = "web"',
        backend_extra,
    ]
    for index, address in enumerate(servers):
        lines += ["  [[backend.server]]", f'  name = "s{index + 1}"', f'  address = "{address}"']
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[H2World]:
    base = tmp_path_factory.mktemp("http2")
    cert = make_certificate(base / "certs", NAME)
    servers = [TaggedBackend("s1").start(), TaggedBackend("s2").start()]
    site = Site(base / "site")
    tls_port = free_port()
    try:
        site.start(_config(site, tls_port, cert, [s.address for s in servers]), ports=[site.port, tls_port])
        yield H2World(site, tls_port, cert, servers)
    finally:
        site.stop()
        for server in servers:
            server.stop()


def _status_and_version(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode().rsplit("\n", 1)[-1]


# -- curl ------------------------------------------------------------------------------------


def test_curl_over_tls_negotiates_h2_and_the_log_says_http2(world: H2World):
    after = len(world.site.log_lines())
    result = world.curl_tls("--http2", "-w", "\n%{http_code} %{http_version}", world.tls("/hello-tls"))
    assert _status_and_version(result) == "200 2"
    assert result.stdout.split(b"\n")[0] in (b"s1", b"s2")
    line = world.site.wait_log(lambda line: "/hello-tls" in line, after=after)
    assert '"GET /hello-tls HTTP/2.0"' in line and " tls web/s" in line
    # The same frontend still speaks HTTP/1.1 to a client that offers only that.
    result = world.curl_tls("--http1.1", "-w", "\n%{http_code} %{http_version}", world.tls("/hello-11"))
    assert _status_and_version(result) == "200 1.1"


def test_curl_with_prior_knowledge_speaks_h2c(world: H2World):
    result = curl_raw("--http2-prior-knowledge", "-w", "\n%{http_code} %{http_version}", world.h2c("/plain"))
    assert _status_and_version(result) == "200 2"
    result = curl_raw("--http1.1", "-w", "\n%{http_code} %{http_version}", world.h2c("/plain"))
    assert _status_and_version(result) == "200 1.1"


def test_a_deny_rule_answers_403_over_h2(world: H2World):
    before = sum(len(s.requests) for s in world.servers)
    for args in (["--http2-prior-knowledge", world.h2c("/admin/x")],):
        result = curl_raw("-o", "/dev/null", "-w", "%{http_code} %{http_version}", *args)
        assert result.stdout == b"403 2"
    result = world.curl_tls("--http2", "-o", "/dev/null", "-w", "%{http_code} %{http_version}", world.tls("/admin/y"))
    assert result.stdout == b"403 2"
    assert sum(len(s.requests) for s in world.servers) == before


def test_a_large_upload_and_download_over_h2(world: H2World, tmp_path: Path):
    upload = tmp_path / "upload.bin"
    upload.write_bytes(os.urandom(1 << 20) * 24)  # 24 MiB
    result = world.curl_tls("--http2", "--data-binary", f"@{upload}", world.tls("/echo"), timeout=120)
    assert result.returncode == 0, result.stderr
    echoed = result.stdout.decode()
    assert f'"body_length": {24 << 20}' in echoed
    assert hashlib.sha256(upload.read_bytes()).hexdigest() in echoed
    size = 64 << 20
    result = curl_raw(
        "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", world.h2c(f"/bytes/{size}")
    )
    assert result.stdout == f"200 {size}".encode()


# -- nghttp and h2load ------------------------------------------------------------------------


def test_nghttp_sends_100_streams_on_one_connection(world: H2World):
    nghttp = require_tool("nghttp")
    urls = [world.h2c(f"/many?i={i}") for i in range(100)]
    result = subprocess.run([nghttp, "-n", "-s", *urls], capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    # -s prints one line per stream: "responseEnd ... /many?i=N" with its timing.
    done = re.findall(rb"/many\?i=\d+", result.stdout)
    assert len(set(done)) == 100, result.stdout.decode(errors="replace")[-2000:]


@pytest.mark.parametrize("scheme", ["tls", "h2c"])
def test_nghttp_gets_a_response_s_trailers_as_the_last_headers_frame(world: H2World, scheme: str, tmp_path: Path):
    """gRPC-style trailers: the server's end the stream as a HEADERS frame after the DATA."""
    nghttp = require_tool("nghttp")
    url = world.h2c("/trailers") if scheme == "h2c" else f"https://127.0.0.1:{world.tls_port}/trailers"
    result = subprocess.run([nghttp, "-v", "-y", url], capture_output=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    out = result.stdout.decode(errors="replace")
    # After the DATA frames, a last HEADERS frame with END_STREAM: nghttp prints its fields
    # ("recv (stream_id=N) name: value") before the frame's own line.
    before, last = out.rsplit("recv HEADERS frame", 1)
    assert "; END_STREAM | END_HEADERS" in last.split("\n", 2)[1]
    fields = re.findall(r"recv \(stream_id=\d+\) ([^:\n][^\n]*)", before.rsplit("recv DATA frame", 1)[1])
    assert fields == ["x-checksum: 42", "grpc-status: 0", "grpc-message: all good"]
    # nghttp sends a body with its length: HTTP/1.1 has no place for trailers then, they are
    # dropped (as HAProxy does); te: trailers goes to the server. (A body without a length
    # carries them: tests/integration/test_integration_h2.py.)
    body = tmp_path / "body"
    body.write_bytes(b"upload")
    url = url.replace("/trailers", "/echo")
    command = [nghttp, "-y", "-d", str(body), "--trailer", "x-sum: 7", "-H", "te: trailers", url]
    result = subprocess.run(command, capture_output=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    echoed = json.loads(result.stdout)
    assert (echoed["body"], echoed["trailers"]) == ("upload", [])
    assert ["te", "trailers"] in echoed["headers"]


@pytest.mark.parametrize("scheme", ["tls", "h2c"])
def test_h2load_multiplexed_requests_all_succeed(world: H2World, scheme: str):
    h2load = require_tool("h2load")
    url = world.tls("/") if scheme == "tls" else world.h2c("/")
    url = url.replace(NAME, "127.0.0.1")
    result = subprocess.run(
        [h2load, "-n", "5000", "-c", "10", "-m", "100", url], capture_output=True, timeout=120, check=False
    )
    output = result.stdout.decode(errors="replace")
    assert "requests: 5000 total, 5000 started, 5000 done, 5000 succeeded, 0 failed" in output, output
    assert "status codes: 5000 2xx" in output, output
    if scheme == "tls":
        assert "Application protocol: h2" in output, output


def test_a_server_killed_mid_run_loses_no_h2_request(tmp_path: Path):
    h2load = require_tool("h2load")
    servers = [ServerProcess(name).start() for name in ("k1", "k2", "k3")]
    site = Site(tmp_path / "site")
    cert = make_certificate(tmp_path / "certs", NAME)
    try:
        extra = 'retries = 2\nredispatch = true\ntimeouts = { connect = "1s", server = "5s" }'
        site.start(_config(site, free_port(), cert, [s.address for s in servers], extra))
        load = subprocess.Popen(
            [h2load, "-n", "20000", "-c", "8", "-m", "20", site.url("/")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: len(site.log_lines()) > 2000, timeout=30, what="load under way")
        servers[0].kill()
        output = load.communicate(timeout=120)[0].decode(errors="replace")
        assert "20000 done, 20000 succeeded, 0 failed" in output, output
        assert "status codes: 20000 2xx" in output, output
    finally:
        site.stop()
        for server in servers:
            server.kill()


# -- rapid reset ------------------------------------------------------------------------------


def _frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream_id) + payload


def _literal(name: bytes, value: bytes) -> bytes:
    """An HPACK literal field without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _workers(master: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:
            found.append(int(stat.parent.name))
    return found


def test_a_rapid_reset_flood_costs_under_a_second_of_cpu_and_spares_the_server(tmp_path: Path):
    server = TaggedBackend("flooded").start()
    site = Site(tmp_path / "site")
    try:
        process = site.start(_config(site, free_port(), make_certificate(tmp_path, NAME), [server.address]))
        workers = wait_until(lambda: _workers(process.pid), what="a worker")
        (worker,) = workers
        block = b"".join(
            [
                b"\x82",  # :method GET (static index 2)
                b"\x86",  # :scheme http
                _literal(b":authority", b"flood.example"),
                b"\x84",  # :path /
            ]
        )
        cancel = struct.pack(">I", 8)
        flood = b"".join(_frame(0x1, 0x5, 1 + 2 * i, block) + _frame(0x3, 0, 1 + 2 * i, cancel) for i in range(100_000))
        cpu_before = _cpu_seconds(worker)
        received = bytearray()
        with socket.create_connection(("127.0.0.1", site.port), timeout=10) as sock:
            sock.sendall(PREFACE + _frame(0x4, 0, 0, b""))

            def read_all() -> None:
                while True:
                    try:
                        chunk = sock.recv(65536)
                    except OSError:
                        return
                    if not chunk:
                        return
                    received.extend(chunk)

            reader = threading.Thread(target=read_all, daemon=True)
            reader.start()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # closed mid-flood: the defence
                sock.sendall(flood)
            reader.join(10)
        cpu = _cpu_seconds(worker) - cpu_before
        print(f"rapid reset: worker CPU {cpu:.3f}s, {len(server.requests)} requests reached the server")
        assert cpu < 1.0, f"the flood cost the worker {cpu:.2f}s of CPU"
        goaway = received.find(b"\x00\x00\x08\x07\x00\x00\x00\x00\x00")  # GOAWAY, 8 bytes, stream 0
        assert goaway >= 0, "no GOAWAY"
        error_code = int.from_bytes(received[goaway + 13 : goaway + 17], "big")
        assert error_code == 0xB, f"GOAWAY error {error_code:#x}, not ENHANCE_YOUR_CALM"
        assert len(server.requests) < 1000, len(server.requests)
        # The worker still serves.
        result = curl_raw("--http2-prior-knowledge", "-w", "\n%{http_code}", site.url("/after"))
        assert result.stdout.endswith(b"\n200")
    finally:
        site.stop()
        server.stop()


# -- reload -----------------------------------------------------------------------------------


def test_a_stream_in_flight_finishes_across_a_reload_and_new_streams_go_to_the_new_workers(tmp_path: Path):
    server = TaggedBackend("r1").start()
    site = Site(tmp_path / "site")
    tls_port = free_port()
    cert = make_certificate(tmp_path / "certs", NAME)
    try:
        # The old workers' grace outlasts the slow answer: it must finish, not be cut.
        config = _config(site, tls_port, cert, [server.address]).replace('grace = "2s"', 'grace = "30s"')
        process = site.start(config, ports=[site.port, tls_port])
        slow = subprocess.Popen(
            [
                require_tool("curl"),
                "-sS",
                "--http2-prior-knowledge",
                "-w",
                "\n%{http_code} %{http_version}",
                site.url("/slow/4000"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        wait_until(lambda: any(r.path == "/slow/4000" for r in server.requests), what="the slow request")
        old_workers = set(_workers(process.pid))
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: set(_workers(process.pid)) - old_workers, timeout=15, what="new workers")
        # The slow stream's connection belongs to the old worker, stopping (GOAWAY sent); a
        # new connection reaches the new workers meanwhile.
        result = curl_raw("--http2-prior-knowledge", "-w", "\n%{http_code} %{http_version}", site.url("/during"))
        assert result.stdout.endswith(b"\n200 2")
        out, err = slow.communicate(timeout=60)
        assert out.decode() == "r1\n\n200 2", err.decode(errors="replace")
        assert slow.returncode == 0
    finally:
        site.stop()
        server.stop()


# -- conn_limit ---------------------------------------------------------------------------------


def _h2c_open(port: int) -> tuple[socket.socket, h2.connection.H2Connection]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def _h2c_get(sock: socket.socket, conn: h2.connection.H2Connection, streams: int) -> list[bytes]:
    """`streams` GETs at once on the open connection; the :status of each, in stream order."""
    ids: list[int] = []
    for _ in range(streams):
        stream_id = conn.get_next_available_stream_id()  # the same until its HEADERS are sent
        ids.append(stream_id)
        conn.send_headers(
            stream_id,
            [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"x"), (b":path", b"/")],
            end_stream=True,
        )
    sock.sendall(conn.data_to_send())
    status: dict[int, bytes] = {}
    ended: set[int] = set()
    for _ in range(1000):  # bounded: a few frames per stream
        if ended >= set(ids):
            break
        data = sock.recv(65536)
        assert data, "the connection closed before every stream ended"
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status[event.stream_id] = dict(event.headers)[b":status"]
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                ended.add(event.stream_id)
        sock.sendall(conn.data_to_send())
    return [status.get(stream_id, b"reset") for stream_id in ids]


def _h2c_limited_config(site: Site, server: TaggedBackend, limit: str) -> str:
    """An h2c frontend with the frontend key `limit` before one server."""
    lines = [
        site.global_toml(),
        "[[frontend]]",
        'name = "h2c"',
        f'bind = "127.0.0.1:{site.port}"',
        'default_backend = "web"',
        "h2c = true",
        limit,
        "[[backend]]",
        'name = "web"',
        "  [[backend.server]]",
        '  name = "s1"',
        f'  address = "{server.address}"',
    ]
    return "\n".join(lines) + "\n"


def test_conn_limit_counts_an_h2_connection_once_whatever_its_streams(tmp_path: Path):
    server = TaggedBackend("s1").start()
    site = Site(tmp_path / "site")
    try:
        site.start(_h2c_limited_config(site, server, "conn_limit = { per_src = 1 }"))
        first, first_conn = _h2c_open(site.port)
        with first:
            # Five streams on one connection are one connection of this client: all served.
            assert _h2c_get(first, first_conn, 5) == [b"200"] * 5
            # A second connection of the same client while the first is open: over per_src = 1.
            second, second_conn = _h2c_open(site.port)
            with second:
                assert _h2c_get(second, second_conn, 2) == [b"429"] * 2

        # Both closed: a new connection has its place back (polled: the close is asynchronous).
        def served() -> bool:
            sock, conn = _h2c_open(site.port)
            with sock:
                return _h2c_get(sock, conn, 1) == [b"200"]

        wait_until(served, what="a new h2c connection served after the others closed")
    finally:
        site.stop()
        server.stop()


def test_rate_limit_counts_every_h2_stream(tmp_path: Path):
    """A client cannot escape rate_limit by multiplexing: each stream is a request. With
    burst 2, three streams pass at once on one connection and the rest get 429."""
    server = TaggedBackend("s1").start()
    site = Site(tmp_path / "site")
    try:
        site.start(_h2c_limited_config(site, server, 'rate_limit = { requests = 1, per = "60s", burst = 2 }'))
        sock, conn = _h2c_open(site.port)
        with sock:
            statuses = _h2c_get(sock, conn, 8)
        assert sorted(statuses) == [b"200"] * 3 + [b"429"] * 5, statuses
    finally:
        site.stop()
        server.stop()
