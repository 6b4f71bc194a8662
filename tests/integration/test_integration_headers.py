"""Header rewriting: hop-by-hop headers stay on their hop; X-Forwarded-For / -Proto are added."""

from __future__ import annotations

import asyncio

from tests.integration.aclient import Client
from tests.integration.configs import frontend_port, make_config
from tests.integration.peers import RawServer, ok_response, read_head

HOP_BY_HOP = {"keep-alive", "proxy-connection", "te", "upgrade", "x-hop-secret"}


def test_hop_by_hop_request_headers_are_not_forwarded(run_balancer, backends):
    (s1,) = backends("s1")
    headers = [
        ("Connection", "keep-alive, TE, X-Hop-Secret"),
        ("Keep-Alive", "timeout=30"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Upgrade", "h2c"),  # not named in Connection: not a real upgrade, and never end to end
        ("X-Hop-Secret", "for the proxy only"),
        ("X-End-To-End", "kept"),
    ]

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            first = await client.get("/echo", headers)
            second = await client.get("/echo", headers)  # Connection: keep-alive kept the connection
        return first, second

    first, second = run_balancer(make_config([s1]), scenario)
    assert (first.status, second.status) == (200, 200)
    for request in s1.requests:
        names = {name.lower() for name, _ in request.headers}
        assert not names & HOP_BY_HOP, f"hop-by-hop headers forwarded: {sorted(names & HOP_BY_HOP)}"
        # The proxy may speak for itself on its own hop, but never repeat the client's options.
        tokens = {t.strip().lower() for v in request.header_values("Connection") for t in v.split(",")}
        assert tokens <= {"keep-alive", "close"}, f"client's Connection options forwarded: {tokens}"
        assert request.header("X-End-To-End") == "kept"


def test_hop_by_hop_response_headers_are_rewritten_for_the_client(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            response = await client.get("/keepalive-header")
            again = await client.get("/")
        return response, again

    response, again = run_balancer(make_config([s1]), scenario)
    assert response.status == 200
    # The server's Keep-Alive parameters describe the proxy's server connection, not the client's.
    assert response.header("Keep-Alive") is None
    assert response.header("Server-Name") == "s1"  # end-to-end headers pass untouched
    assert response.header("Content-Type") == "text/plain"
    assert again.status == 200


def test_x_forwarded_for_is_appended_and_proto_is_set(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            await client.get("/with", [("X-Forwarded-For", "203.0.113.7")])
            await client.get("/without")

    run_balancer(make_config([s1], frontend={"forwardfor": True}), scenario)
    with_xff, without_xff = s1.requests
    assert ", ".join(with_xff.header_values("X-Forwarded-For")) == "203.0.113.7, 127.0.0.1"
    assert without_xff.header_values("X-Forwarded-For") == ["127.0.0.1"]
    assert with_xff.header_values("X-Forwarded-Proto") == ["http"]
    assert without_xff.header_values("X-Forwarded-Proto") == ["http"]


def test_forwardfor_off_leaves_the_request_alone(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            await client.get("/", [("X-Forwarded-For", "203.0.113.7")])

    run_balancer(make_config([s1], frontend={"forwardfor": False}), scenario)
    (request,) = s1.requests
    assert request.header_values("X-Forwarded-For") == ["203.0.113.7"]
    assert request.header("X-Forwarded-Proto") is None


def test_del_header_x_forwarded_for_drops_what_the_client_sent(run_balancer, backends):
    """HAProxy's `http-request del-header X-Forwarded-For` + `option forwardfor`: the server
    sees only the address balancer saw, never what a client claims (issue #13)."""
    (s1,) = backends("s1")
    config = make_config([s1], frontend={"rule": [{"del_header": ["X-Forwarded-For"]}]})

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            for _ in range(2):  # the second read of the same head takes the known-request path
                response = await client.get("/xff", headers=[("X-Forwarded-For", "6.6.6.6")])
                assert response.status == 200

    run_balancer(config, scenario)
    assert [r.header_values("X-Forwarded-For") for r in s1.requests] == [["127.0.0.1"], ["127.0.0.1"]]


def test_header_lines_reach_the_server_as_the_proxy_writes_them_whatever_their_spacing(run_balancer):
    """The server gets each end-to-end header line as "Name: value" CRLF, in the client's
    order, hop-by-hop and X-Forwarded-* lines removed wherever they were, whatever spaces
    the client put before the value: lines the client already wrote that way pass as one
    slice of its read (net.http_session _follow_raw), the others are written anew."""
    heads: list[bytes] = []

    async def handler(reader, writer, index):
        while True:
            try:
                heads.append(await read_head(reader))
            except asyncio.IncompleteReadError:
                return
            writer.write(ok_response())
            await writer.drain()

    server = RawServer(handler)
    forwarded = b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n"
    cases = [
        (  # as browsers write them, a hop-by-hop line and a client's X-Forwarded-For among them
            b"GET /a?x=1 HTTP/1.1\r\nHost: test.local\r\nUser-Agent: ua/1\r\nConnection: keep-alive\r\n"
            b"Cookie: s=1; t=2\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nAccept: */*\r\n\r\n",
            b"GET /a?x=1 HTTP/1.1\r\nHost: test.local\r\nUser-Agent: ua/1\r\nCookie: s=1; t=2\r\nAccept: */*\r\n"
            b"X-Forwarded-For: 203.0.113.7, 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n",
        ),
        (  # no space, two spaces (the same length in all as two plain lines), tabs; what follows
            # a value is part of it for the parser
            b"GET /b HTTP/1.1\r\nHost:test.local\r\nX-One:a\r\nX-Two:  b\r\nX-Tab:\tc\t\r\nX-Pad: d  \r\n\r\n",
            b"GET /b HTTP/1.1\r\nHost: test.local\r\nX-One: a\r\nX-Two: b\r\nX-Tab: c\t\r\nX-Pad: d  \r\n" + forwarded,
        ),
        (  # an empty value, plain lines after an odd one
            b"GET /c HTTP/1.1\r\nHost: test.local\r\nX-Empty:\r\nX-Space: \r\nAccept:  */*\r\nX-Last: z\r\n\r\n",
            b"GET /c HTTP/1.1\r\nHost: test.local\r\nX-Empty: \r\nX-Space: \r\nAccept: */*\r\nX-Last: z\r\n"
            + forwarded,
        ),
        (  # empty lines before the request line, which the parser skips
            b"\r\nGET /d HTTP/1.1\r\nHost: test.local\r\nAccept: */*\r\n\r\n",
            b"GET /d HTTP/1.1\r\nHost: test.local\r\nAccept: */*\r\n" + forwarded,
        ),
        (  # only hop-by-hop lines after Host
            b"GET /e HTTP/1.1\r\nHost: test.local\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\n\r\n",
            b"GET /e HTTP/1.1\r\nHost: test.local\r\n" + forwarded,
        ),
        (  # only ordinary lines, as browsers write them (proto/_heads.c: one slice, no Python per line)
            b"GET /f?q=1 HTTP/1.1\r\nHost: test.local\r\nUser-Agent: ua/2\r\nCookie: s=3\r\nAccept: */*\r\n\r\n",
            b"GET /f?q=1 HTTP/1.1\r\nHost: test.local\r\nUser-Agent: ua/2\r\nCookie: s=3\r\nAccept: */*\r\n"
            + forwarded,
        ),
        (  # ordinary lines and Connection, as browsers write them; a line Connection names goes too
            b"GET /h HTTP/1.1\r\nHost: test.local\r\nConnection: keep-alive, X-Hop\r\nUser-Agent: ua/3\r\n"
            b"X-Hop: secret\r\nAccept: */*\r\n\r\n",
            b"GET /h HTTP/1.1\r\nHost: test.local\r\nUser-Agent: ua/3\r\nAccept: */*\r\n" + forwarded,
        ),
        (  # ordinary lines, one without a space and one with two: all written anew
            b"GET /g HTTP/1.1\r\nHost:test.local\r\nX-Two:  b\r\nAccept: */*\r\n\r\n",
            b"GET /g HTTP/1.1\r\nHost: test.local\r\nX-Two: b\r\nAccept: */*\r\n" + forwarded,
        ),
    ]

    async def scenario(balancer):
        async with server.serving(), await Client.connect(frontend_port(balancer)) as client:
            for _ in range(3):  # a head read again is remembered, then made from the memo
                for sent, _ in cases:
                    await client.send(sent)
                    assert (await client.read_response()).status == 200

    run_balancer(make_config([("s1", server.address)], frontend={"forwardfor": True}), scenario)
    assert heads == [expected for _ in range(3) for _, expected in cases]
