"""Regression tests for the fixes of one review: each scenario failed before its fix.

- a dual-stack frontend (":0") sees IPv4 clients as IPv4 (src rules, access log, X-Forwarded-For)
- a slow-reading client does not trip the backend's server timeout
- HTTP/1.0 clients get chunked responses de-chunked and closed; CONNECT answers 501
- a redirect keeps the connection when the request has no body still to come
- `hdr` rules see hop-by-hop headers such as Upgrade
- `unix:` server addresses connect (HTTP and TCP); `timeouts.connect = "0s"` means no timeout
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.aclient import Client, get, open_with_buffers, request_bytes
from tests.integration.configs import frontend_port, make_config
from tests.support.process import wait_until
from websockets.asyncio.client import connect

MB = 1 << 20

# 127.0.0.1:50312 [21/Nov/2026:23:59:01.123] www web/s1 0/0/1/2/3 200 120 -- "GET / HTTP/1.1"
TEXT_LINE = re.compile(
    r"^(?P<client>\S+) \[(?P<time>[^\]]+)\] (?P<frontend>\S+) "
    r"(?P<backend>[^/\s]+)/(?P<server>\S+) (?P<timers>-?\d+(?:/-?\d+){4}) "
    r"(?P<status>\d{3}) (?P<bytes>\d+) (?P<termination>\S+) \"(?P<request>[^\"]*)\""
)


def _dual_stack() -> bool:
    """Whether this host can bind an IPv6 socket that also accepts IPv4 (what ":PORT" binds)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", 0))
    except OSError:
        return False
    return True


needs_dual_stack = pytest.mark.skipif(not _dual_stack(), reason="no dual-stack IPv6 socket on this host")


def _log_line(path: Path, needle: str) -> re.Match[str]:
    """The access log line holding `needle`, parsed (the writer may flush a little later)."""

    def find() -> re.Match[str] | None:
        lines = path.read_text().splitlines() if path.exists() else []
        for line in lines:
            if needle in line:
                match = TEXT_LINE.match(line)
                assert match, f"access log line not in the documented format: {line!r}"
                return match
        return None

    return wait_until(find, timeout=5, what=f"an access log line with {needle!r} in {path}")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a unix socket path must fit in 108 bytes, tmp_path may not."""
    path = Path(tempfile.mkdtemp(prefix="bal-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- 1. dual-stack listeners see IPv4 clients as IPv4 -------------------------------------------


@needs_dual_stack
def test_dual_stack_frontend_denies_an_ipv4_client_by_src(run_balancer, backends):
    (s1,) = backends("s1")
    config = make_config([s1], frontend={"bind": [":0"], "rule": [{"if": {"src": ["127.0.0.0/8"]}, "action": "deny"}]})

    async def scenario(balancer):
        bound = balancer.addresses("www")[0][0]
        return bound, await get(frontend_port(balancer), "/secret")

    bound, response = run_balancer(config, scenario)
    assert bound == "::", f"':0' should bind every address (dual-stack), bound {bound!r}"
    assert response.status == 403, "a src rule on 127.0.0.0/8 let 127.0.0.1 through a dual-stack listener"
    assert s1.requests == []


@needs_dual_stack
def test_dual_stack_frontend_logs_and_forwards_the_ipv4_address(run_balancer, backends, tmp_path):
    (s1,) = backends("s1")
    log = tmp_path / "access.log"
    config = make_config(
        [s1], frontend={"bind": [":0"], "forwardfor": True}, global_={"log": f"file:{log}", "log_format": "text"}
    )

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            local_port = client.writer.get_extra_info("sockname")[1]
            return local_port, await client.get("/who")

    local_port, response = run_balancer(config, scenario)
    assert response.status == 200
    (request,) = s1.requests
    assert request.header_values("X-Forwarded-For") == ["127.0.0.1"]
    line = _log_line(log, "GET /who ")
    assert line["client"] == f"127.0.0.1:{local_port}"
    assert line["status"] == "200"


# -- 3. a slow reader does not trip the server timeout ------------------------------------------


def test_slow_reader_gets_the_whole_body_despite_a_short_server_timeout(run_balancer, backends, tmp_path):
    """The client pauses reading twice for 1.5 s (longer than the 1 s server timeout), so the
    proxy stops reading the server meanwhile: the timeout that runs then is the client's."""
    (s1,) = backends("s1")
    size = 30_000_000
    pauses = {1 * MB: 1.5, 10 * MB: 1.5}  # after this many body bytes, stop reading for this long
    log = tmp_path / "access.log"
    config = make_config(
        [s1],
        backend={"timeouts": {"server": "1s"}},
        global_={"log": f"file:{log}", "log_format": "text"},
    )

    async def scenario(balancer):
        loop = asyncio.get_running_loop()
        reader, writer = await open_with_buffers(frontend_port(balancer), rcvbuf=64 * 1024)
        try:
            writer.write(request_bytes("GET", f"/bytes/{size}"))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            total = 0
            paused = 0.0
            pending = sorted(pauses.items())
            deadline = loop.time() + 40
            while total < size:
                assert loop.time() < deadline, f"only {total} of {size} bytes within 40s"
                if pending and total >= pending[0][0]:
                    await asyncio.sleep(pending[0][1])  # the slow reader: nothing read meanwhile
                    paused += pending.pop(0)[1]
                chunk = await asyncio.wait_for(reader.read(MB), 10)
                if not chunk:
                    break
                total += len(chunk)
            return head, total, paused
        finally:
            writer.close()

    head, total, paused = run_balancer(config, scenario, timeout=60)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert total == size, f"the body stopped after {total} of {size} bytes (server timeout while the client read)"
    assert paused == 3.0
    line = _log_line(log, f"GET /bytes/{size} ")
    assert (line["status"], line["termination"]) == ("200", "--")


# -- 4. HTTP/1.0 clients and chunked responses ---------------------------------------------------


def test_http10_client_gets_a_chunked_response_dechunked_and_closed(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            await client.send(b"GET /chunked/5 HTTP/1.0\r\nHost: test.local\r\n\r\n")
            # No Content-Length and no chunked coding: the body runs to the close.
            data = await client.read_until_closed(timeout=5)
        return data

    data = run_balancer(make_config([s1]), scenario)
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head: {data[:300]!r}"
    lines = head.decode("latin-1").split("\r\n")
    assert re.match(r"HTTP/1\.[01] 200 ", lines[0]), lines[0]
    names = {line.split(":", 1)[0].strip().lower() for line in lines[1:]}
    assert "transfer-encoding" not in names, f"an HTTP/1.0 client was sent chunked coding: {head!r}"
    assert body == b"".join(b"chunk-%d\n" % i for i in range(5)), "chunk framing left in the body"


# -- 5. CONNECT -----------------------------------------------------------------------------------


def test_connect_method_gets_501(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            await client.send(b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n")
            return await client.read_response()

    response = run_balancer(make_config([s1]), scenario)
    assert response.status == 501
    assert s1.requests == []


# -- 6. redirects and the connection --------------------------------------------------------------

REDIRECT = {"if": {"path_beg": ["/old"]}, "redirect": {"location": "https://example.test/", "code": 301}}


def test_redirect_of_a_get_keeps_the_connection(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            first = await client.get("/old/a")
            second = await client.get("/old/b")
        return first, second

    first, second = run_balancer(make_config([s1], frontend={"rule": [REDIRECT]}), scenario)
    for response in (first, second):
        assert response.status == 301
        assert response.header("Location") == "https://example.test/"
    assert "close" not in first.connection_tokens()
    assert s1.requests == []


def test_redirect_of_a_post_whose_body_has_not_arrived_closes(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            # The head announces 10 body bytes that never come.
            await client.send(request_bytes("POST", "/old/form", [("Content-Length", "10")]))
            response = await client.read_response("POST")
            rest = await client.read_until_closed(timeout=3)
        return response, rest

    response, rest = run_balancer(make_config([s1], frontend={"rule": [REDIRECT]}), scenario)
    assert response.status == 301
    assert "close" in response.connection_tokens()
    assert rest == b""
    assert s1.requests == []


# -- 7. hdr rules see the Upgrade header -----------------------------------------------------------


def test_hdr_rule_on_upgrade_routes_a_websocket_to_its_backend(run_balancer, backends):
    web, ws_server = backends("web1", "ws1")
    config = make_config(
        [web],
        frontend={"rule": [{"if": {"hdr": {"Upgrade": ["websocket"]}}, "use_backend": "ws"}]},
        extra_backends=[({"name": "ws"}, [ws_server])],
    )

    async def scenario(balancer):
        port = frontend_port(balancer)
        plain = await get(port, "/ws")
        async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5, close_timeout=2, ping_interval=None) as ws:
            tag = ws.response.headers.get("Server-Name")
            await ws.send("hello")
            echo = await asyncio.wait_for(ws.recv(), 5)
        return plain, tag, echo

    plain, tag, echo = run_balancer(config, scenario)
    assert plain.header("Server-Name") == "web1", "a request without Upgrade matched the Upgrade rule"
    assert tag == "ws1", "the WebSocket upgrade did not reach the backend its hdr rule names"
    assert echo == "hello"
    assert [r.header("Upgrade") for r in ws_server.requests] == ["websocket"]


# -- 9. unix: server addresses ---------------------------------------------------------------------

UNIX_BODY = b"via unix socket\n"


async def _answer_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A fixed 200 for every request head on the connection (requests carry no body)."""
    try:
        for _ in range(100):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(UNIX_BODY), UNIX_BODY))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
        pass
    finally:
        writer.close()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        for _ in range(1000):
            data = await asyncio.wait_for(reader.read(65536), 10)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, TimeoutError):
        pass
    finally:
        writer.close()


def test_http_backend_server_on_a_unix_socket(run_balancer, short_dir):
    path = short_dir / "s.sock"
    config = make_config([{"name": "u1", "address": f"unix:{path}"}])

    async def scenario(balancer):
        server = await asyncio.start_unix_server(_answer_http, str(path))
        try:
            async with await Client.connect(frontend_port(balancer)) as client:
                return [await client.get(f"/n{i}") for i in range(2)]
        finally:
            server.close()

    for response in run_balancer(config, scenario):
        assert response.status == 200
        assert response.body == UNIX_BODY


def test_tcp_backend_server_on_a_unix_socket(run_balancer, short_dir):
    path = short_dir / "e.sock"
    config = make_config([{"name": "u1", "address": f"unix:{path}"}], mode="tcp")

    async def scenario(balancer):
        server = await asyncio.start_unix_server(_echo, str(path))
        try:
            async with await Client.connect(frontend_port(balancer)) as client:
                await client.send(b"ping over unix\n")
                return await asyncio.wait_for(client.reader.readexactly(len(b"ping over unix\n")), 5)
        finally:
            server.close()

    assert run_balancer(config, scenario) == b"ping over unix\n"


# -- 10. timeouts.connect = "0s" -------------------------------------------------------------------


def test_connect_timeout_zero_means_no_timeout(run_balancer, backends):
    (s1,) = backends("s1")
    # No pooling: every request opens a server connection, under the connect timeout of 0s.
    config = make_config(
        [s1], backend={"timeouts": {"connect": "0s"}, "pool": {"max_idle_per_server": 0}, "retries": 0}
    )

    async def scenario(balancer):
        port = frontend_port(balancer)
        return [await get(port, f"/r{i}") for i in range(3)]

    responses = run_balancer(config, scenario)
    assert [r.status for r in responses] == [200, 200, 200]
    assert [r.body for r in responses] == [b"s1\n"] * 3
