"""HTTP/1.1 behaviour through a real `balancer run` process, seen with curl and raw sockets."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator

import pytest
from tests.support import TaggedBackend, parse_responses, raw_request
from tests.support.config import server_blocks
from tests.support.curl import curl, curl_raw
from tests.support.site import Site

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def web(module_dir) -> Iterator[tuple[Site, TaggedBackend]]:
    """One frontend, one backend with one server: every answer comes from s1."""
    with TaggedBackend("s1") as s1:
        site = Site(module_dir / "site")
        site.start(
            site.global_toml()
            + f"""
[[frontend]]
name = "www"
bind = ["127.0.0.1:{site.port}"]
default_backend = "web"

[[backend]]
name = "web"
"""
            + server_blocks([s1])
        )
        try:
            yield site, s1
        finally:
            site.stop()


def echo(result) -> dict:
    assert result.status == 200, (result.status, result.body[:300])
    return json.loads(result.body)


def header_values(echoed: dict, name: str) -> list[str]:
    return [value for key, value in echoed["headers"] if key.lower() == name.lower()]


# -- connections -------------------------------------------------------------------------------


def test_curl_reuses_one_connection_for_several_urls(web):
    site, _ = web
    proc = curl_raw("-v", "-w", "[connects=%{num_connects}]\n", *[site.url(f"/ka{i}") for i in range(4)])

    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()
    assert out.count("s1\n") == 4
    assert out.count("[connects=1]") == 1 and out.count("[connects=0]") == 3, out
    assert proc.stderr.decode().count("Re-using existing connection") == 3


def test_client_connection_close_wins_over_server_keepalive(web):
    site, _ = web
    result = curl("-H", "Connection: close", site.url("/keepalive-header"))

    assert result.status == 200
    tokens = {t.strip().lower() for t in result.headers.get("connection", "").split(",")}
    assert "close" in tokens
    assert "keep-alive" not in tokens


def test_connection_close_request_is_answered_then_closed(web):
    site, _ = web
    started = time.monotonic()
    data = raw_request(site.port, b"GET /keepalive-header HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", timeout=8)
    elapsed = time.monotonic() - started

    (status, headers, body) = parse_responses(data)[0]
    assert status == 200 and body == b"s1\n"
    assert "close" in headers.get("connection", "").lower()
    assert elapsed < 4, "the balancer kept the connection open after answering Connection: close"


def test_server_connections_are_pooled_across_client_connections(web):
    """DESIGN.md: pooled keep-alive upstream connections (like HAProxy's `http-reuse always`)."""
    site, s1 = web
    before = s1.connections

    for i in range(8):  # eight curl processes: eight client connections, one after another
        assert curl(site.url(f"/pooled/{i}")).status == 200

    assert s1.connections - before <= 2, "server connections were not kept alive and reused"


def test_http10_client_is_served(web):
    site, _ = web
    result = curl("--http1.0", site.url("/"))

    assert result.status == 200
    assert result.body == b"s1\n"


def test_pipelined_requests_answered_in_order(web):
    site, _ = web
    data = raw_request(
        site.port,
        b"GET /p1 HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /echo/p2 HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /p3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        timeout=8,
    )

    responses = parse_responses(data)
    assert [status for status, _, _ in responses] == [200, 200, 200]
    assert json.loads(responses[1][2])["target"] == "/echo/p2"


# -- request bodies ------------------------------------------------------------------------------


@pytest.fixture
def payload(tmp_path):
    def make(size: int):
        data = os.urandom(size)
        path = tmp_path / f"body-{size}.bin"
        path.write_bytes(data)
        return path, hashlib.sha256(data).hexdigest()

    return make


def test_post_with_content_length(web, payload):
    site, _ = web
    path, digest = payload(100_000)

    echoed = echo(curl("--data-binary", f"@{path}", "-H", "Content-Type: application/octet-stream", site.url("/echo")))

    assert echoed["method"] == "POST"
    assert echoed["body_length"] == 100_000
    assert echoed["body_sha256"] == digest


def test_post_with_chunked_transfer_encoding(web, payload):
    site, _ = web
    path, digest = payload(300_000)

    echoed = echo(curl("--data-binary", f"@{path}", "-H", "Transfer-Encoding: chunked", site.url("/echo")))

    assert echoed["body_length"] == 300_000
    assert echoed["body_sha256"] == digest


def test_expect_100_continue_is_answered(web, payload):
    site, _ = web
    path, digest = payload(5_000)
    started = time.monotonic()

    # With a 10 s expect timeout, a proxy that swallowed the 100 would make curl wait 10 s.
    result = curl(
        "--expect100-timeout",
        "10",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        f"@{path}",
        site.url("/echo"),
    )

    assert time.monotonic() - started < 5
    assert result.responses[0][0] == 100
    assert echo(result)["body_sha256"] == digest


def test_large_upload_over_one_mib(web, payload):
    site, _ = web
    path, digest = payload(3 * 1024 * 1024)

    started = time.monotonic()

    # curl asks `Expect: 100-continue` by itself for a body this large
    result = curl("--expect100-timeout", "10", "--data-binary", f"@{path}", site.url("/echo"), timeout=60)

    assert result.responses[0][0] == 100
    assert time.monotonic() - started < 8
    echoed = echo(result)
    assert echoed["body_length"] == 3 * 1024 * 1024
    assert echoed["body_sha256"] == digest


# -- response bodies -----------------------------------------------------------------------------


def test_large_download_arrives_complete(web, tmp_path):
    site, _ = web
    size = 50_000_000
    out = tmp_path / "download.bin"

    proc = curl_raw("-o", str(out), "-w", "%{http_code} %{size_download}", site.url(f"/bytes/{size}"), timeout=90)

    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode() == f"200 {size}"
    expected = hashlib.sha256()
    block = b"x" * 1_000_000
    for _ in range(size // len(block)):
        expected.update(block)
    digest = hashlib.sha256()
    with open(out, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == expected.hexdigest()


def test_head_has_headers_but_no_body(web):
    site, _ = web
    data = raw_request(
        site.port,
        b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\nGET /after-head HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        timeout=8,
    )

    end = data.index(b"\r\n\r\n") + 4
    (status, headers, _) = parse_responses(data[:end], head=True)[0]
    assert status == 200
    assert headers.get("content-length") == "3"  # the length a GET would have had
    # the next bytes on the connection are the next response, not a body
    rest = parse_responses(data[end:])
    assert [(s, b) for s, _, b in rest] == [(200, b"s1\n")]


def test_head_with_curl(web):
    site, _ = web
    result = curl("-I", site.url("/"), head=True)

    assert result.status == 200
    assert result.headers["server-name"] == "s1"
    assert result.body == b""


@pytest.mark.parametrize("code", [204, 304])
def test_bodyless_statuses_have_no_body(web, code):
    site, _ = web
    data = raw_request(
        site.port,
        f"GET /status/{code} HTTP/1.1\r\nHost: t\r\n\r\n"
        f"GET /status/{code} HTTP/1.1\r\nHost: t\r\n\r\n"
        "GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode(),
        timeout=8,
    )

    responses = parse_responses(data)
    assert [(s, b) for s, _, b in responses] == [(code, b""), (code, b""), (200, b"s1\n")]
    assert "chunked" not in responses[0][1].get("transfer-encoding", "")


def test_chunked_response(web):
    site, _ = web
    result = curl(site.url("/chunked/5"))

    assert result.status == 200
    assert result.body == b"".join(f"chunk-{i}\n".encode() for i in range(5))


def test_many_chunks_response(web):
    site, _ = web
    result = curl(site.url("/chunked/2000"))

    assert result.status == 200
    assert result.body == b"".join(f"chunk-{i}\n".encode() for i in range(2000))


def test_chunked_response_framing_on_the_wire(web):
    site, _ = web
    data = raw_request(
        site.port,
        b"GET /chunked/3 HTTP/1.1\r\nHost: t\r\n\r\nGET /z HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        timeout=8,
    )

    responses = parse_responses(data)
    assert [(s, b) for s, _, b in responses] == [(200, b"chunk-0\nchunk-1\nchunk-2\n"), (200, b"s1\n")]


# -- what the server is told --------------------------------------------------------------------


def test_x_forwarded_for_is_appended_and_proto_set(web):
    site, _ = web
    echoed = echo(curl("-H", "X-Forwarded-For: 203.0.113.7", site.url("/echo")))

    assert ", ".join(header_values(echoed, "X-Forwarded-For")) == "203.0.113.7, 127.0.0.1"
    assert header_values(echoed, "X-Forwarded-Proto") == ["http"]


def test_x_forwarded_for_is_added(web):
    site, _ = web
    echoed = echo(curl(site.url("/echo")))

    assert header_values(echoed, "X-Forwarded-For") == ["127.0.0.1"]


def test_method_target_host_and_headers_pass_through(web):
    site, _ = web
    echoed = echo(curl("-X", "PUT", "-H", "X-Custom: Keep Me", site.url("/echo/a?b=1&c=%20")))

    assert echoed["method"] == "PUT"
    assert echoed["target"] == "/echo/a?b=1&c=%20"
    assert header_values(echoed, "Host") == [f"127.0.0.1:{site.port}"]
    assert header_values(echoed, "X-Custom") == ["Keep Me"]


def test_keepalive_connection_survives_an_error_status(web):
    site, _ = web
    with socket.create_connection(("127.0.0.1", site.port), timeout=5) as sock:
        sock.sendall(b"GET /status/404 HTTP/1.1\r\nHost: t\r\n\r\n")
        first = sock.recv(65536)
        sock.sendall(b"GET /again HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
    assert parse_responses(first)[0][0] == 404
    assert parse_responses(rest)[0][2] == b"s1\n"


def test_a_request_read_after_connection_close_is_not_served(web):
    """A second head written after a request that closes the connection is not served,
    whichever parser reads it (httptools, or proto/_heads.c for a plain head in its own
    read): the first request is answered, once, and the connection closes."""
    site, _ = web
    with socket.create_connection(("127.0.0.1", site.port), timeout=5) as sock:
        sock.sendall(b"GET /first HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        sock.sendall(b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n")
        received = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (chunk := sock.recv(65536)):
            received += chunk
    responses = parse_responses(received)
    assert [status for status, _, _ in responses][:1] == [200]
    assert responses[0][2] == b"s1\n"
    assert received.count(b"s1\n") == 1, received


def test_bytes_sent_after_a_closing_request_do_not_cost_its_answer(web):
    """A client that sends more after a `Connection: close` request, while the answer is
    still awaited, gets the whole answer and an end of stream: bytes the proxy never read
    must not turn its close into a reset that throws the answer away (lingering close).
    The server is slow so that the second request surely lies unread when the proxy closes."""
    site, s1 = web
    for _ in range(3):
        answered = len(s1.requests)
        with socket.create_connection(("127.0.0.1", site.port), timeout=5) as sock:
            sock.sendall(b"GET /slow/400 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            deadline = time.monotonic() + 5
            while len(s1.requests) == answered:  # the proxy read the first request
                assert time.monotonic() < deadline, "the request never reached the server"
                time.sleep(0.005)
            sock.sendall(b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n")
            received = b""
            while chunk := sock.recv(65536):  # a reset raises here
                received += chunk
        assert [(status, body) for status, _, body in parse_responses(received)] == [(200, b"s1\n")]
