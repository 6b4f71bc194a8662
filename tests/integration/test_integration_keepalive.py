"""Keep-alive on both sides of the proxy, pipelining, and when a connection must be closed."""

from __future__ import annotations

import asyncio
import json
import time

from tests.integration.aclient import Client, chunked, request_bytes
from tests.integration.configs import frontend_port, make_config
from tests.integration.peers import RawServer, ok_response, read_head


def test_many_requests_share_one_client_and_one_server_connection(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            for i in range(50):
                response = await client.get(f"/item/{i}")
                assert response.status == 200, response
                assert response.body == b"s1\n"
                assert "close" not in response.connection_tokens()

    run_balancer(make_config([s1]), scenario)
    assert [r.target for r in s1.requests] == [f"/item/{i}" for i in range(50)]
    assert s1.connections <= 2, f"50 sequential requests opened {s1.connections} server connections"


def test_pooled_server_connections_are_shared_by_client_connections(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        port = frontend_port(balancer)
        for i in range(20):
            async with await Client.connect(port) as client:
                response = await client.get(f"/client/{i}")
                assert response.status == 200, response

    run_balancer(make_config([s1]), scenario)
    assert len(s1.requests) == 20
    assert s1.connections <= 2, f"20 sequential clients opened {s1.connections} server connections"


def test_max_idle_per_server_zero_disables_reuse(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            for i in range(10):
                response = await client.get(f"/n/{i}")
                assert response.status == 200, response
                assert response.body == b"s1\n"

    run_balancer(make_config([s1], backend={"pool": {"max_idle_per_server": 0}}), scenario)
    assert len(s1.requests) == 10
    assert s1.connections == 10


def test_pipelined_requests_are_answered_in_order(run_balancer, backends):
    s1, s2 = backends("s1", "s2")
    pipeline = b"".join(
        [
            request_bytes("GET", "/echo/0"),
            request_bytes("POST", "/echo/1", body=b"first body"),
            request_bytes("POST", "/echo/2", [("Transfer-Encoding", "chunked")], chunked(b"chunked body", 5)),
            request_bytes("GET", "/chunked/3"),
            request_bytes("GET", "/bytes/1000"),
            request_bytes("HEAD", "/echo/5"),
            request_bytes("GET", "/echo/6"),
        ]
    )
    methods = ["GET", "POST", "POST", "GET", "GET", "HEAD", "GET"]

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            await client.send(pipeline)  # one write: all seven requests arrive together
            responses = [await client.read_response(method) for method in methods]
            after = await client.get("/echo/7")  # the connection is still in step
        return responses, after

    responses, after = run_balancer(make_config([s1, s2]), scenario)
    assert [r.status for r in responses] == [200] * 7
    echoed = [json.loads(responses[i].body) for i in (0, 1, 2, 6)]
    assert [e["target"] for e in echoed] == ["/echo/0", "/echo/1", "/echo/2", "/echo/6"]
    assert echoed[1]["body"] == "first body"
    assert echoed[2]["body"] == "chunked body"
    assert responses[3].body == b"".join(f"chunk-{i}\n".encode() for i in range(3))
    assert responses[4].body == b"x" * 1000
    assert responses[5].body == b""
    assert json.loads(after.body)["target"] == "/echo/7"
    # roundrobin spread the pipeline over both servers, and the answers still came back in order
    assert s1.requests and s2.requests


def test_pipelined_answers_from_servers_and_from_the_proxy_keep_their_order(run_balancer, backends):
    # Server responses and the proxy's own answers (a redirect rule) leave through the same
    # held writes (net.outbox): a redirect made while a server response waits must not pass it.
    (s1,) = backends("s1")
    rule = {"if": {"path": ["/moved"]}, "redirect": {"location": "/new", "code": 302}}
    targets = ["/echo/0", "/moved", "/echo/2", "/moved", "/moved", "/echo/5"]

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            await client.send(b"".join(request_bytes("GET", target) for target in targets))
            return [await client.read_response("GET") for _ in targets]

    responses = run_balancer(make_config([s1], frontend={"rule": [rule]}), scenario)
    assert [r.status for r in responses] == [200, 302, 200, 302, 302, 200]
    assert [json.loads(r.body)["target"] for r in responses if r.status == 200] == ["/echo/0", "/echo/2", "/echo/5"]
    assert {r.header("Location") for r in responses if r.status == 302} == {"/new"}


def test_client_connection_close_wins_over_server_keep_alive(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            response = await client.get("/keepalive-header", [("Connection", "close")])
            rest = await client.read_until_closed(timeout=3)
        return response, rest

    response, rest = run_balancer(make_config([s1]), scenario)
    assert response.status == 200
    assert response.body == b"s1\n"
    assert "close" in response.connection_tokens()
    assert "keep-alive" not in response.connection_tokens()
    assert response.header("Keep-Alive") is None
    assert rest == b""


def test_http10_client_without_keep_alive_is_closed_after_the_response(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            response = await client.request("GET", "/", version="HTTP/1.0")
            rest = await client.read_until_closed(timeout=3)
        return response, rest

    response, rest = run_balancer(make_config([s1]), scenario)
    assert response.status == 200
    assert response.version in ("HTTP/1.0", "HTTP/1.1")
    assert response.body == b"s1\n"
    assert rest == b""


def test_http10_client_with_keep_alive_keeps_its_connection(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            first = await client.request("GET", "/a", [("Connection", "keep-alive")], version="HTTP/1.0")
            second = await client.request("GET", "/b", [("Connection", "keep-alive")], version="HTTP/1.0")
        return first, second

    first, second = run_balancer(make_config([s1]), scenario)
    assert (first.status, first.body) == (200, b"s1\n")
    assert "keep-alive" in first.connection_tokens()
    assert (second.status, second.body) == (200, b"s1\n")
    assert [r.target for r in s1.requests] == ["/a", "/b"]


def test_http_keep_alive_timeout_closes_an_idle_client_connection(run_balancer, backends):
    (s1,) = backends("s1")
    config = make_config([s1], frontend={"timeouts": {"http_keep_alive": "300ms", "http_request": "5s"}})

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            response = await client.get("/")
            assert response.status == 200
            idle_since = time.monotonic()
            rest = await client.read_until_closed(timeout=3)
            return rest, time.monotonic() - idle_since

    rest, idle = run_balancer(config, scenario)
    assert rest == b"", "an idle keep-alive connection is closed silently, without a 408"
    assert 0.2 <= idle < 3


def test_server_closing_after_each_response_does_not_close_the_client(run_balancer):
    """A server that answers `Connection: close` is not pooled, and the client's keep-alive
    connection carries on over new server connections."""

    async def handler(reader, writer, index):
        await read_head(reader)
        writer.write(ok_response(b"connection %d\n" % index, "Connection: close\r\n"))
        await writer.drain()

    server = RawServer(handler)

    async def scenario(balancer):
        async with server.serving(), await Client.connect(frontend_port(balancer)) as client:
            return [await client.get(f"/{i}") for i in range(3)]

    responses = run_balancer(make_config([("raw", server.address)]), scenario)
    assert [(r.status, r.body) for r in responses] == [(200, b"connection %d\n" % i) for i in range(3)]
    assert all("close" not in r.connection_tokens() for r in responses)
    assert server.connections == 3


def test_bodies_framed_by_the_proxy_end_where_their_length_says(run_balancer):
    # A server repeats one head; once the parser has accepted it, the proxy frames the body
    # of the next ones by their Content-Length itself (net.upstream _take_known). A body may
    # come in pieces; bytes past its end (a server speaking out of turn) never reach the
    # client, and that server connection is not used again.
    body = b"0123456789"
    head = ok_response(body)[: -len(body)]

    async def handler(reader, writer, index):
        for turn in range(3):
            await read_head(reader)
            if index > 0 or turn == 0:
                writer.write(head + body)
            else:
                writer.write(head + body[:4])
                await writer.drain()
                await asyncio.sleep(0.05)  # so the proxy reads the body in two pieces (either way is right)
                writer.write(body[4:] + (b"HTTP/1.1 200 OK\r\n" if turn == 2 else b""))
            await writer.drain()

    server = RawServer(handler)

    async def scenario(balancer):
        async with server.serving(), await Client.connect(frontend_port(balancer)) as client:
            return [await client.get(f"/{i}") for i in range(4)]

    responses = run_balancer(make_config([("raw", server.address)]), scenario)
    assert [(r.status, r.body) for r in responses] == [(200, body)] * 4
    assert server.connections == 2  # the one that sent bytes past a body was dropped
