"""What a client sees when things go wrong, through a real process, and that each is logged."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest
from tests.support import TaggedBackend, closed_port, parse_responses, raw_request
from tests.support.config import server_blocks
from tests.support.curl import curl
from tests.support.site import Site

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def strict(module_dir) -> Iterator[tuple[Site, TaggedBackend]]:
    """Small limits and short timeouts, so every error is quick to provoke."""
    with TaggedBackend("s1") as s1:
        site = Site(module_dir / "site")
        dead = [{"name": f"d{i}", "address": f"127.0.0.1:{closed_port()}"} for i in range(2)]
        site.start(
            site.global_toml(log_format="json")
            + f"""
[[frontend]]
name = "www"
bind = ["127.0.0.1:{site.port}"]
default_backend = "web"
timeouts = {{ client = "5s", http_request = "1s", http_keep_alive = "2s", tunnel = "1h" }}
limits = {{ request_line = 1024, headers = 4096, header_count = 20, body = 1000 }}

  [[frontend.rule]]
  if = {{ path_beg = ["/empty"] }}
  use_backend = "nobody"

  [[frontend.rule]]
  if = {{ path_beg = ["/dead"] }}
  use_backend = "dead"

[[backend]]
name = "web"
retries = 1
timeouts = {{ connect = "1s", server = "1s", queue = "1s" }}
{server_blocks([s1])}
[[backend]]
name = "nobody"

[[backend]]
name = "dead"
retries = 1
timeouts = {{ connect = "1s", server = "1s", queue = "1s" }}
{server_blocks(dead)}
"""
        )
        try:
            yield site, s1
        finally:
            site.stop()


def assert_short_html(headers: dict[str, str], body: bytes) -> None:
    assert "text/html" in headers.get("content-type", ""), headers
    assert body.lstrip()[:1] == b"<", body[:200]
    assert 0 < len(body) < 2048


def assert_logged(site: Site, mark: int, status: int, fragment: str | None = None) -> dict:
    """The access-log entry for `status` written since the log had `mark` lines."""

    def match(entry: dict) -> bool:
        if entry.get("status") != status:
            return False
        return fragment is None or fragment in str(entry.get("request", ""))

    return site.wait_json_log(match, what=f"status {status} {fragment or ''}", after=mark)


# -- 400 ------------------------------------------------------------------------------------------

BAD_REQUESTS = {
    "content-length-and-transfer-encoding": (
        b"POST /smuggle HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /second HTTP/1.1\r\nHost: t\r\n\r\n"
    ),
    "two-different-content-lengths": (
        b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
    ),
    "missing-host": b"GET /x HTTP/1.1\r\nUser-Agent: raw\r\n\r\n",
    "space-before-colon": b"GET /x HTTP/1.1\r\nHost : t\r\n\r\n",
    "obs-fold": b"GET /x HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n b\r\n\r\n",
    "bad-chunk-size": (b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello\r\n\r\n",
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_malformed_request_gets_400_and_connection_closes(strict, case):
    site, s1 = strict
    mark = len(site.log_lines())
    before = len(s1.requests)
    started = time.monotonic()

    data = raw_request(site.port, BAD_REQUESTS[case], timeout=8)

    assert time.monotonic() - started < 4, "connection not closed after the 400"
    responses = parse_responses(data)
    assert [r[0] for r in responses] == [400], data[:300]
    assert_short_html(responses[0][1], responses[0][2])
    if case != "bad-chunk-size":  # a body error may be found after the head went to the server
        assert len(s1.requests) == before, "the malformed request reached the server"
    assert_logged(site, mark, 400)


def test_content_length_and_transfer_encoding_never_smuggle_a_request(strict):
    site, s1 = strict
    raw_request(site.port, BAD_REQUESTS["content-length-and-transfer-encoding"], timeout=5)

    assert "/second" not in s1.paths


# -- 408 ------------------------------------------------------------------------------------------


def test_incomplete_request_gets_408_after_http_request_timeout(strict):
    site, _ = strict
    mark = len(site.log_lines())
    started = time.monotonic()

    data = raw_request(site.port, b"GET /slowloris HTTP/1.1\r\nHost: t\r\n", timeout=8)

    elapsed = time.monotonic() - started
    responses = parse_responses(data)
    assert [r[0] for r in responses] == [408], data[:300]
    assert_short_html(responses[0][1], responses[0][2])
    assert 0.8 < elapsed < 5, elapsed
    assert_logged(site, mark, 408)


def test_idle_keepalive_connection_is_closed_without_408(strict):
    """After an answer, a connection idle past http_keep_alive is closed silently (no 408)."""
    site, _ = strict
    with socket.create_connection(("127.0.0.1", site.port), timeout=10) as sock:
        sock.sendall(b"GET /one HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        deadline = time.monotonic() + 9
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    assert [r[0] for r in parse_responses(data)] == [200]


# -- 413 / 414 / 431 ------------------------------------------------------------------------------


def test_body_over_limit_gets_413(strict, tmp_path):
    site, s1 = strict
    mark = len(site.log_lines())
    body = tmp_path / "big.txt"
    body.write_bytes(b"b" * 5000)

    result = curl("--data-binary", f"@{body}", site.url("/echo/too-big"))

    assert result.status == 413
    assert_short_html(result.headers, result.body)
    assert "/echo/too-big" not in s1.paths
    assert_logged(site, mark, 413)


def test_body_within_limit_passes(strict):
    site, _ = strict
    result = curl("--data-binary", "x" * 900, site.url("/echo/fits"))
    assert result.status == 200


def test_request_line_over_limit_gets_414(strict):
    site, _ = strict
    mark = len(site.log_lines())
    result = curl(site.url("/long/" + "a" * 2000))

    assert result.status == 414
    assert_short_html(result.headers, result.body)
    assert_logged(site, mark, 414)


def test_headers_over_size_limit_get_431(strict):
    site, _ = strict
    mark = len(site.log_lines())
    result = curl("-H", "X-Big: " + "h" * 5000, site.url("/big-header"))

    assert result.status == 431
    assert_short_html(result.headers, result.body)
    assert_logged(site, mark, 431)


def test_too_many_headers_get_431(strict):
    site, _ = strict
    mark = len(site.log_lines())
    headers = []
    for i in range(30):
        headers += ["-H", f"X-H{i}: {i}"]

    result = curl(*headers, site.url("/many-headers"))

    assert result.status == 431
    assert_short_html(result.headers, result.body)
    assert_logged(site, mark, 431)


# -- 502 / 503 / 504 ------------------------------------------------------------------------------


def test_server_closing_without_answer_gets_502(strict):
    site, _ = strict
    mark = len(site.log_lines())
    result = curl(site.url("/close"))

    assert result.status == 502
    assert_short_html(result.headers, result.body)
    assert_logged(site, mark, 502, "/close")


def test_server_breaking_off_the_body_is_not_a_complete_response(strict):
    """/partial sends a head with Content-Length 100 and 10 bytes, then closes.

    The client gets a 502 when the balancer still can, else a response cut short
    (curl exit 18, "transfer closed with outstanding read data remaining").
    """
    site, _ = strict
    mark = len(site.log_lines())
    result = curl(site.url("/partial"))

    if result.status == 502:
        assert_short_html(result.headers, result.body)
    else:
        assert result.returncode == 18, (result.status, result.returncode, result.stderr)
        assert len(result.body) < 100
    entry = assert_logged(site, mark, result.status, "/partial")
    if result.status != 502:
        # the log must say the server side broke the exchange (HAProxy's "SD")
        assert str(entry["termination"]).startswith("S"), entry


def test_backend_without_servers_gets_503(strict):
    site, _ = strict
    mark = len(site.log_lines())
    result = curl(site.url("/empty/x"))

    assert result.status == 503
    assert_short_html(result.headers, result.body)
    entry = assert_logged(site, mark, 503, "/empty/x")
    assert entry["backend"] == "nobody"


def test_all_servers_refusing_gets_503(strict):
    site, _ = strict
    mark = len(site.log_lines())
    started = time.monotonic()
    result = curl(site.url("/dead/x"))

    assert result.status == 503
    assert time.monotonic() - started < 5
    assert_short_html(result.headers, result.body)
    assert_logged(site, mark, 503, "/dead/x")


def test_server_timeout_gets_504(strict):
    site, _ = strict
    mark = len(site.log_lines())
    started = time.monotonic()
    result = curl(site.url("/hang"))
    elapsed = time.monotonic() - started

    assert result.status == 504
    assert 0.8 < elapsed < 5, elapsed
    assert_short_html(result.headers, result.body)
    assert_logged(site, mark, 504, "/hang")


def test_balancer_keeps_serving_after_errors(strict):
    site, _ = strict
    for path in ("/close", "/hang", "/empty/a"):
        curl(site.url(path))
    result = curl(site.url("/fine"))
    assert result.status == 200
    assert result.headers["server-name"] == "s1"
