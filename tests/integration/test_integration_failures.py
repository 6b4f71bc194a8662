"""Broken peers: servers that close, cut or reset a response, clients that reset mid-request.

Every scenario ends with ordinary requests that must still succeed: one connection's
trouble never takes the worker down.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading

import pytest
from tests.integration.aclient import Client, get, request_bytes, wait_until
from tests.integration.configs import frontend_port, make_config
from tests.integration.peers import RawServer, ok_response, read_head, reset


async def _still_serving(port: int, count: int = 3) -> None:
    for i in range(count):
        response = await get(port, f"/healthy/{i}")
        assert response.status == 200, f"the proxy stopped serving: {response}"


def test_server_closing_without_a_response_gets_502(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        port = frontend_port(balancer)
        response = await get(port, "/close")
        await _still_serving(port)
        return response

    response = run_balancer(make_config([s1]), scenario)
    assert response.status == 502
    assert b"<" in response.body


def test_server_cutting_a_response_short(run_balancer, backends):
    """/partial: the server sends its head (Content-Length: 100) and 10 body bytes, then closes.

    Behaviour pinned here (observed, and what HAProxy and NGINX do): the proxy relays the head
    as soon as it has it, so when the server goes away a 502 is no longer possible. The client
    gets the head and the 10 bytes, then the proxy closes the connection, so the client can
    tell the body is short of its Content-Length. Reusing the connection after a truncated
    answer, or padding the body, would be the bugs.
    """
    (s1,) = backends("s1")

    async def scenario(balancer):
        port = frontend_port(balancer)
        async with await Client.connect(port) as client:
            response = await client.get("/partial")
            rest = await client.read_until_closed(timeout=3)
        await _still_serving(port)
        return response, rest

    response, rest = run_balancer(make_config([s1]), scenario)
    assert response.status == 200
    assert response.header("Content-Length") == "100"
    assert not response.complete, "the client must be able to tell the body was cut"
    assert response.body == b"0123456789"
    assert rest == b""


def test_invalid_response_from_the_server_gets_502(run_balancer):
    async def handler(reader, writer, index):
        head = await read_head(reader)
        if b" /garbage " in head:
            writer.write(b"this is not HTTP\r\n\r\n")
        else:
            writer.write(ok_response())
        await writer.drain()

    server = RawServer(handler)

    async def scenario(balancer):
        async with server.serving():
            port = frontend_port(balancer)
            response = await get(port, "/garbage")
            await _still_serving(port)
            return response

    response = run_balancer(make_config([("raw", server.address)]), scenario)
    assert response.status == 502


def test_server_resetting_mid_response(run_balancer):
    async def handler(reader, writer, index):
        while True:
            head = await read_head(reader)
            if b" /reset-before " in head:
                reset(writer)
                return
            if b" /reset-during " in head:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"r" * 1000)
                await writer.drain()
                await asyncio.sleep(0.05)
                reset(writer)
                return
            writer.write(ok_response())
            await writer.drain()

    server = RawServer(handler)

    async def scenario(balancer):
        async with server.serving():
            port = frontend_port(balancer)
            before = await get(port, "/reset-before")
            async with await Client.connect(port) as client:
                during = await client.get("/reset-during")
                rest = await client.read_until_closed(timeout=3)
            await _still_serving(port)
            return before, during, rest

    before, during, rest = run_balancer(make_config([("raw", server.address)]), scenario)
    assert before.status == 502  # nothing relayed yet: the proxy can still answer for the server
    # head already relayed: as with /partial, the cut shows as a short body and a closed connection
    assert during.status == 200
    assert not during.complete
    assert during.body == b"r" * 1000
    assert rest == b""


def test_client_resetting_mid_request_body(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        port = frontend_port(balancer)
        client = await Client.connect(port)
        await client.send(request_bytes("POST", "/upload", [("Content-Length", "1000000")]) + b"u" * 5000)
        await asyncio.sleep(0.05)  # let the proxy start forwarding
        client.reset()
        await _still_serving(port)

    run_balancer(make_config([s1]), scenario)
    assert "/upload" not in s1.paths, "the server must not see a complete request"


def test_client_resetting_while_the_server_works(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        port = frontend_port(balancer)
        client = await Client.connect(port)
        await client.send(request_bytes("GET", "/slow/300"))
        await wait_until(lambda: s1.connections >= 1, message="the request never reached the server")
        client.reset()
        await asyncio.sleep(0.4)  # the server answers to a client that is gone
        await _still_serving(port, count=5)

    run_balancer(make_config([s1]), scenario)


def test_client_resetting_during_a_large_response(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        port = frontend_port(balancer)
        for _ in range(3):
            client = await Client.connect(port)
            await client.send(request_bytes("GET", f"/bytes/{50 * 1024 * 1024}"))
            await asyncio.wait_for(client.reader.readexactly(100_000), 5)
            client.reset()
        await _still_serving(port, count=5)

    run_balancer(make_config([s1]), scenario)


def test_garbage_and_abrupt_clients_do_not_stop_the_proxy(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        port = frontend_port(balancer)
        for data in (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", b"\r\n\r\n\r\n", b"GET", b"\x00" * 100):
            client = await Client.connect(port)
            await client.send(data)
            client.reset()
        for _ in range(3):  # connect and leave at once
            client = await Client.connect(port)
            client.close()
        await _still_serving(port, count=5)

    run_balancer(make_config([s1]), scenario)


# -- retries: a server that cannot take the request ---------------------------------------------


def test_a_request_reset_before_any_response_byte_is_retried_on_another_server(run_balancer):
    """The server reads the request, then dies (RST) before answering: a GET is sent again
    to the other server; a POST is not (it may have been acted on) and gets 502."""

    async def dying(reader, writer, index):
        await read_head(reader)
        reset(writer)

    async def healthy(reader, writer, index):
        while True:
            await read_head(reader)
            writer.write(ok_response(b"healthy\n"))
            await writer.drain()

    dies, lives = RawServer(dying), RawServer(healthy)
    config = make_config(
        [("dies", dies.address), ("lives", lives.address)],
        backend={"balance": "first", "retries": 2, "redispatch": True},
    )

    async def scenario(balancer):
        async with dies.serving(), lives.serving():
            port = frontend_port(balancer)
            got = await get(port, "/retried")
            async with await Client.connect(port) as client:
                post = await client.request("POST", "/posted", body=b"x")
            return got, post

    got, post = run_balancer(config, scenario)
    assert (got.status, got.body) == (200, b"healthy\n")
    assert post.status == 502
    assert dies.connections == 2, "the GET and the POST each reached the dying server once"


def test_the_only_server_refusing_is_retried_after_a_turn_around(run_balancer):
    """HAProxy waits min(timeout connect, 1 s) before retrying the same server: a server
    restarting within that time answers the request instead of a 503."""

    async def answer(reader, writer, index):
        await read_head(reader)
        writer.write(ok_response(b"back\n"))
        await writer.drain()

    server = RawServer(answer)
    server._sock.close()  # refused until it listens again on the same port
    config = make_config([("only", server.address)], backend={"retries": 2, "timeouts": {"connect": "300ms"}})

    async def scenario(balancer):
        port = frontend_port(balancer)
        only = balancer.backends["web"].by_name["only"]
        request = asyncio.ensure_future(get(port, "/"))
        await wait_until(lambda: only.connect_failures >= 1, message="the first connect was not refused")
        restarted = await asyncio.start_server(lambda r, w: answer(r, w, 0), "127.0.0.1", server.port)
        try:
            return await asyncio.wait_for(request, 5)
        finally:
            restarted.close()

    response = run_balancer(config, scenario)
    assert (response.status, response.body) == (200, b"back\n")


@pytest.mark.parametrize(
    "extra",
    [b"JUNK", b"\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno", b"HTTP/1.1 200", b"\r\n\r\nX"],
)
def test_bytes_after_a_complete_response_are_dropped_without_an_error(run_balancer, extra):
    """A server that sends more than its response (a stray CRLF, junk, a second response
    nobody asked for) once raised IndexError in status_code for every response, flooding
    the event log. The client gets exactly its response; the connection is not reused."""

    async def handler(reader, writer, index):
        while True:
            await read_head(reader)
            writer.write(ok_response(b"ok") + extra)
            await writer.drain()

    server = RawServer(handler)

    async def scenario(balancer):
        async with server.serving():
            port = frontend_port(balancer)
            async with await Client.connect(port) as client:
                return [await client.get(f"/{i}") for i in range(20)]

    responses = run_balancer(make_config([("raw", server.address)]), scenario)
    assert [(r.status, r.body) for r in responses] == [(200, b"ok")] * 20


def test_a_server_connection_lost_before_its_request_is_sent_is_not_waited_on_forever(run_balancer):
    """A server that resets each connection the moment it accepts it (a thread of its
    own, so the reset races the proxy's loop): the connection is often gone before the
    request is sent on it. Seen under load (a server whose accept queue overflowed reset
    connections the proxy saw complete): the request then waited forever, no timer
    running, instead of being answered 502."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    address = "127.0.0.1:%d" % listener.getsockname()[1]
    stopping = threading.Event()

    def accept_and_reset() -> None:
        listener.settimeout(0.1)
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    thread = threading.Thread(target=accept_and_reset, daemon=True)
    thread.start()

    async def scenario(balancer):
        port = frontend_port(balancer)
        answers = await asyncio.gather(*[get(port, f"/x{i}") for i in range(100)], return_exceptions=True)
        return [a if isinstance(a, BaseException) else a.status for a in answers]

    try:
        statuses = run_balancer(make_config([("raw", address)], backend={"retries": 0}), scenario)
    finally:
        stopping.set()
        thread.join(5)
        listener.close()
    assert [s for s in statuses if s not in (502, 503)] == []
