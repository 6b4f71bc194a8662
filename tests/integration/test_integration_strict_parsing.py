"""Malformed, ambiguous and oversized requests are refused at the door.

Each one gets its error status and, for 400, a closed connection; none of them reaches the
server, which is the point: a request the proxy and the server might frame differently is
how request smuggling starts.
"""

from __future__ import annotations

import pytest
from tests.integration.aclient import Client, chunked, request_bytes
from tests.integration.configs import frontend_port, make_config

HEAD_ERRORS = {
    "content-length-and-chunked": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two-different-content-lengths": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
    b"Content-Length: 6\r\n\r\nhello!",
    "content-length-list": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!",
    "content-length-not-a-number": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5x\r\n\r\nhello",
    "content-length-negative": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nhello",
    "content-length-hex": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello",
    "transfer-encoding-chunked-not-last": b"POST / HTTP/1.1\r\nHost: x\r\n"
    b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "transfer-encoding-gzip-only": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nhello",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: first\r\n second\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost: x\r\nX-Spaced : value\r\n\r\n",
    "missing-host": b"GET / HTTP/1.1\r\nUser-Agent: test\r\n\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
    "version-not-a-number": b"GET / HTTP/1.x\r\nHost: x\r\n\r\n",
    "version-bad-protocol-name": b"GET / HTTZ/1.1\r\nHost: x\r\n\r\n",
}


async def _exchange(balancer, data: bytes):
    async with await Client.connect(frontend_port(balancer)) as client:
        await client.send(data)
        response = await client.read_response("GET", timeout=5)
        rest = await client.read_until_closed(timeout=3)
    return response, rest


def _assert_error_page(response, status: int) -> None:
    assert response.status == status, response
    assert 0 < len(response.body) < 2048, "an error comes with a short HTML page"
    assert b"<" in response.body


@pytest.mark.parametrize("data", HEAD_ERRORS.values(), ids=HEAD_ERRORS.keys())
def test_malformed_request_is_refused_with_400_and_a_closed_connection(run_balancer, backends, data):
    (s1,) = backends("s1")

    async def scenario(balancer):
        return await _exchange(balancer, data)

    response, rest = run_balancer(make_config([s1]), scenario)
    _assert_error_page(response, 400)
    assert rest == b""
    assert s1.requests == []
    assert s1.connections == 0, "a malformed request must not make the proxy contact a server"


def test_bad_chunk_size_is_refused_with_400(run_balancer, backends):
    (s1,) = backends("s1")
    data = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"

    async def scenario(balancer):
        return await _exchange(balancer, data)

    response, rest = run_balancer(make_config([s1]), scenario)
    _assert_error_page(response, 400)
    assert rest == b""
    assert s1.requests == []


def test_well_formed_requests_still_pass(run_balancer, backends):
    """The strictness above is not paid for by ordinary requests."""
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            plain = await client.get("/", [("X-Spaces", "  padded value  "), ("x-lower", "ok")])
            body = await client.request("POST", "/p", [("Content-Length", "5")], b"hello")
            chunk = await client.request("POST", "/c", [("Transfer-Encoding", "chunked")], chunked(b"abc", 1))
            http10 = await client.request("GET", "/old", version="HTTP/1.0")
        return plain, body, chunk, http10

    responses = run_balancer(make_config([s1]), scenario)
    assert [r.status for r in responses] == [200, 200, 200, 200]
    assert [r.body for r in s1.requests] == [b"", b"hello", b"abc", b""]


LIMITS = {"request_line": 1024, "headers": 4096, "header_count": 20, "body": "1k"}


def _limited(s1):
    return make_config([s1], frontend={"limits": LIMITS})


def test_request_line_over_the_limit_gets_414(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            await client.send(request_bytes("GET", "/" + "a" * 2000))
            return await client.read_response()

    response = run_balancer(_limited(s1), scenario)
    _assert_error_page(response, 414)
    assert s1.requests == []


def test_too_many_headers_get_431(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            await client.send(request_bytes("GET", "/", [(f"X-Header-{i}", "v") for i in range(30)]))
            return await client.read_response()

    response = run_balancer(_limited(s1), scenario)
    _assert_error_page(response, 431)
    assert s1.requests == []


def test_headers_over_the_size_limit_get_431(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            await client.send(request_bytes("GET", "/", [("X-Big", "b" * 6000)]))
            return await client.read_response()

    response = run_balancer(_limited(s1), scenario)
    _assert_error_page(response, 431)
    assert s1.requests == []


def test_requests_within_the_limits_pass(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            headers = [(f"X-Header-{i}", "v" * 100) for i in range(15)]
            return await client.request("POST", "/" + "a" * 900, headers, b"b" * 1024)

    response = run_balancer(_limited(s1), scenario)
    assert response.status == 200
    assert s1.requests[0].body == b"b" * 1024


def test_declared_body_over_the_limit_gets_413_before_it_is_sent(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            # The client asks first; the answer must be the refusal, not "100 Continue".
            await client.send(
                request_bytes("POST", "/upload", [("Content-Length", "5000"), ("Expect", "100-continue")])
            )
            response = await client.read_response("POST", timeout=3)
            rest = await client.read_until_closed(timeout=3)
        return response, rest

    response, rest = run_balancer(_limited(s1), scenario)
    _assert_error_page(response, 413)
    assert response.interim == []
    assert rest == b""
    assert s1.requests == []


def test_chunked_body_over_the_limit_gets_413(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            await client.send(
                request_bytes("POST", "/upload", [("Transfer-Encoding", "chunked")], chunked(b"c" * 5000, 500))
            )
            return await client.read_response("POST", timeout=3)

    response = run_balancer(_limited(s1), scenario)
    _assert_error_page(response, 413)
    assert s1.requests == [], "the server never gets a complete over-limit request"


@pytest.mark.parametrize("named", ["Content-Length", "content-length, x-drop", "Host", "HOST"])
def test_a_connection_header_never_strips_framing_or_host(run_balancer, backends, named):
    """`Connection: Content-Length` once made the proxy drop the length but forward the body,
    which the server then read as a second request no rule had seen (smuggling). Framing and
    Host are never hop-by-hop (HAProxy keeps them); other names still go."""
    (s1,) = backends("s1")
    hidden = b"GET /SMUGGLED HTTP/1.1\r\nHost: a\r\n\r\n"
    data = (
        b"POST /a HTTP/1.1\r\nHost: a\r\nConnection: %s\r\nX-Drop: 1\r\nContent-Length: %d\r\n\r\n"
        % (named.encode(), len(hidden))
    ) + hidden

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            await client.send(data)
            return await client.read_response("POST", timeout=5)

    response = run_balancer(make_config([s1]), scenario)
    assert response.status == 200
    assert [r.path for r in s1.requests] == ["/a"], "the body reached the server as a request"
    received = s1.requests[0]
    assert received.body == hidden
    assert received.header("Content-Length") == str(len(hidden))
    assert received.header("Host") == "a"
    assert (received.header("X-Drop") is None) == ("x-drop" in named)


@pytest.mark.parametrize(
    ("target", "status", "path"),
    [
        (b"http://h/x", 200, "http://h/x"),
        (b"http://h/x?y=1", 200, "http://h/x?y=1"),
        (b"http://h", 200, "http://h"),
        (b"*Host:", 400, None),
        (b"h/x", 400, None),
    ],
)
def test_odd_request_targets_get_an_answer_never_a_500(run_balancer, backends, target, status, path):
    """An absolute-form target without a query once got 500 and a traceback (a None where
    bytes were expected); it is forwarded as received. A target that is neither origin nor
    absolute form is a 400."""
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            await client.send(b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n")
            return await client.read_response("GET", timeout=5)

    response = run_balancer(make_config([s1]), scenario)
    assert response.status == status, response
    assert [r.target for r in s1.requests] == ([path] if path else [])
