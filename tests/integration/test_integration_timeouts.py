"""Timeouts, connect failures, retries and redispatch."""

from __future__ import annotations

import asyncio
import contextlib
import time

from tests.integration.aclient import Client, get
from tests.integration.configs import frontend_port, make_config
from tests.integration.peers import RawServer, ok_response, read_head
from tests.support.backends import TaggedBackend
from tests.support.ports import closed_port


def test_incomplete_request_head_gets_408(run_balancer, backends):
    (s1,) = backends("s1")
    config = make_config([s1], frontend={"timeouts": {"http_request": "300ms"}})

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            started = time.monotonic()
            await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n")  # the blank line never comes
            response = await client.read_response(timeout=3)
            elapsed = time.monotonic() - started
            rest = await client.read_until_closed(timeout=3)
        return response, elapsed, rest

    response, elapsed, rest = run_balancer(config, scenario)
    assert response.status == 408
    assert 0.25 <= elapsed < 2.5
    assert rest == b""
    assert s1.requests == []


def test_a_request_cut_inside_its_method_after_a_keep_alive_exchange_gets_408(run_balancer, backends):
    """The request timeout starts at a request's first byte, even before its URL: a client that
    sends "GE" on a kept-alive connection gets a 408, not a silent keep-alive close."""
    (s1,) = backends("s1")
    config = make_config([s1], frontend={"timeouts": {"http_request": "300ms", "http_keep_alive": "30s"}})

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            await client.send(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
            first = await client.read_response(timeout=3)
            started = time.monotonic()
            await client.send(b"GE")
            second = await client.read_response(timeout=3)
            return first, second, time.monotonic() - started

    first, second, elapsed = run_balancer(config, scenario)
    assert first.status == 200
    assert second.status == 408
    assert elapsed < 2.5, f"408 came after {elapsed:.2f}s although the head timeout is 300ms"


def test_dribbling_a_request_head_does_not_extend_http_request(run_balancer, backends):
    """http_request bounds the whole head, so a slowloris client cannot hold a connection."""
    (s1,) = backends("s1")
    config = make_config([s1], frontend={"timeouts": {"http_request": "300ms", "client": "30s"}})

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:

            async def dribble():
                await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
                for i in range(30):
                    await asyncio.sleep(0.1)
                    await client.send(b"X-Slow-%d: y\r\n" % i)

            started = time.monotonic()
            dribbler = asyncio.create_task(dribble())
            try:
                response = await client.read_response(timeout=3)
            finally:
                dribbler.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError, TimeoutError):
                    await dribbler
            return response, time.monotonic() - started

    response, elapsed = run_balancer(config, scenario)
    assert response.status == 408
    assert elapsed < 1.5, f"408 came after {elapsed:.2f}s although the head timeout is 300ms"
    assert s1.requests == []


def test_server_timeout_gets_504(run_balancer, backends):
    (s1,) = backends("s1")
    config = make_config([s1], backend={"timeouts": {"server": "300ms"}})

    async def scenario(balancer):
        port = frontend_port(balancer)
        started = time.monotonic()
        timed_out = await get(port, "/hang")
        elapsed = time.monotonic() - started
        after = await get(port, "/")
        return timed_out, elapsed, after

    timed_out, elapsed, after = run_balancer(config, scenario)
    assert timed_out.status == 504
    assert b"<" in timed_out.body
    assert 0.25 <= elapsed < 3
    assert after.status == 200


def test_connect_failure_is_retried_on_a_working_server(run_balancer, backends):
    (s1,) = backends("s1")
    dead = ("dead", f"127.0.0.1:{closed_port()}")
    config = make_config([dead, s1], backend={"retries": 2, "redispatch": True})

    async def scenario(balancer):
        port = frontend_port(balancer)
        return [await get(port, f"/r/{i}") for i in range(8)]

    responses = run_balancer(config, scenario)
    assert [r.status for r in responses] == [200] * 8
    assert {r.body for r in responses} == {b"s1\n"}
    assert len(s1.requests) == 8


def test_no_working_server_gets_503(run_balancer):
    config = make_config(
        [("dead1", f"127.0.0.1:{closed_port()}"), ("dead2", f"127.0.0.1:{closed_port()}")],
        backend={"retries": 2, "redispatch": True, "timeouts": {"connect": "500ms"}},
    )

    async def scenario(balancer):
        started = time.monotonic()
        response = await get(frontend_port(balancer), "/")
        return response, time.monotonic() - started

    response, elapsed = run_balancer(config, scenario)
    assert response.status == 503
    assert b"<" in response.body
    assert elapsed < 3


def test_backend_without_servers_gets_503(run_balancer):
    async def scenario(balancer):
        return await get(frontend_port(balancer), "/")

    response = run_balancer(make_config([]), scenario)
    assert response.status == 503


def test_reused_connection_dropped_by_the_server_is_retried_for_get(run_balancer):
    """The keep-alive race: the server closes a pooled connection just as a request is sent
    on it. Nothing was answered, the request is idempotent, so the proxy retries it on a
    new connection and the client never sees the failure."""

    async def handler(reader, writer, index):
        await read_head(reader)
        writer.write(ok_response(b"connection %d\n" % index))
        await writer.drain()
        await read_head(reader)  # a second request on this connection: drop it, unanswered

    server = RawServer(handler)

    async def scenario(balancer):
        async with server.serving(), await Client.connect(frontend_port(balancer)) as client:
            first = await client.get("/one")
            second = await client.get("/two")
        return first, second

    first, second = run_balancer(make_config([("raw", server.address)]), scenario)
    assert (first.status, first.body) == (200, b"connection 0\n")
    assert (second.status, second.body) == (200, b"connection 1\n")
    assert server.connections == 2


def test_pooled_connection_closed_by_an_idle_server_is_not_used(run_balancer):
    """A server with a short keep-alive timeout closes idle connections; the next request
    goes over a new connection without the client noticing."""

    async def idle_closing(reader, writer, index):
        await read_head(reader)
        writer.write(ok_response(b"connection %d\n" % index))
        await writer.drain()
        await asyncio.sleep(0.05)  # the server's keep-alive timeout; then it closes

    server = RawServer(idle_closing)

    async def scenario(balancer):
        async with server.serving(), await Client.connect(frontend_port(balancer)) as client:
            first = await client.get("/one")
            await asyncio.sleep(0.3)  # outlast the server's keep-alive timeout
            second = await client.get("/two")
        return first, second

    first, second = run_balancer(make_config([("raw", server.address)]), scenario)
    assert (first.status, first.body) == (200, b"connection 0\n")
    assert (second.status, second.body) == (200, b"connection 1\n")


def test_restarted_backend_is_used_again_transparently(run_balancer, backends):
    (old,) = backends("old")
    port = old.port
    restarted: list[TaggedBackend] = []

    def restart() -> None:  # blocking: runs in an executor thread, never on the loop
        old.stop()
        restarted.append(TaggedBackend("new", port=port).start())

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            before = await client.get("/")
            await asyncio.get_running_loop().run_in_executor(None, restart)
            after = [await client.get(f"/after/{i}") for i in range(3)]
        return before, after

    try:
        before, after = run_balancer(make_config([("s1", old.address)]), scenario)
    finally:
        for server in restarted:
            server.stop()
    assert (before.status, before.body) == (200, b"old\n")
    assert [(r.status, r.body) for r in after] == [(200, b"new\n")] * 3


def test_dropped_post_on_a_reused_connection_is_not_replayed(run_balancer):
    """The same race for a POST: the server may have acted on it, so the proxy must not send
    it again; the client gets a 502 and the server saw the request once."""
    heads: list[bytes] = []

    async def handler(reader, writer, index):
        await read_head(reader)
        writer.write(ok_response(b"connection %d\n" % index))
        await writer.drain()
        heads.append(await read_head(reader))
        await reader.readexactly(5)  # the body; then drop the connection unanswered

    server = RawServer(handler)

    async def scenario(balancer):
        async with server.serving(), await Client.connect(frontend_port(balancer)) as client:
            first = await client.get("/one")
            second = await client.request("POST", "/order", body=b"pizza")
        return first, second

    first, second = run_balancer(make_config([("raw", server.address)]), scenario)
    assert first.status == 200
    assert second.status == 502
    assert server.connections == 1
    assert len(heads) == 1 and heads[0].startswith(b"POST /order ")


async def _echo_length(reader, writer, index):
    """Reads a request with a Content-Length body, answers with the body's length."""
    head = await read_head(reader)
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    body = await reader.readexactly(length)
    writer.write(ok_response(b"%d\n" % len(body)))
    await writer.drain()


def test_a_slow_request_body_is_not_a_server_timeout(run_balancer):
    """The server's timeout waits for the server: while the client is still sending its body
    (each piece within `client`), the server is not late. Before, a body slower than the
    server timeout got 504 `sH` and counted against a healthy server."""
    server = RawServer(_echo_length)
    config = make_config(
        [("raw", server.address)],
        frontend={"timeouts": {"client": "2s"}},
        backend={"timeouts": {"server": "300ms"}},
    )

    async def scenario(balancer):
        async with server.serving(), await Client.connect(frontend_port(balancer)) as client:
            await client.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n")
            for _ in range(8):  # 8 bytes over ~1.2 s: four times the server timeout
                await asyncio.sleep(0.15)
                await client.send(b"x")
            response = await client.read_response("POST", timeout=5)
            return response, balancer.backends["web"].by_name["raw"].errors

    response, errors = run_balancer(config, scenario)
    assert (response.status, response.body) == (200, b"8\n")
    assert errors == 0


def test_a_client_stalling_mid_body_is_a_client_timeout_not_a_server_error(run_balancer):
    server = RawServer(_echo_length)
    config = make_config(
        [("raw", server.address)],
        frontend={"timeouts": {"client": "300ms"}},
        backend={"timeouts": {"server": "5s"}},
    )

    async def scenario(balancer):
        async with server.serving(), await Client.connect(frontend_port(balancer)) as client:
            await client.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\nxx")
            response = await client.read_response("POST", timeout=5)
            return response, balancer.backends["web"].by_name["raw"].errors

    response, errors = run_balancer(config, scenario)
    assert response.status == 408
    assert errors == 0, "a client that stops sending is not the server's failure"
