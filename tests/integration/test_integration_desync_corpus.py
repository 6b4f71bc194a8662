"""The desync corpus: request variants that make a proxy and a server frame bytes differently.

Each variant hides a second request (`/smuggled`) where a proxy and a server could
disagree about where the first one ends: Content-Length against Transfer-Encoding, odd
spellings of either, chunk-size tricks, bare CR and LF, controls, invalid names, obs-fold,
absolute-form targets, HTTP/1.0 with keep-alive or a transfer coding, Expect, requests in
bodies. For every variant the test asserts what the client gets and what the server
received, read by a strict parser (llhttp) and by a lax one (tests/support/recording.py):
- the two readings agree (the balancer re-frames every request it forwards);
- `/smuggled` never reaches the server as a request;
- the server received exactly the requests the variant is meant to carry (none when
  refused), and the client got one answer per request.
The response side follows: a server's ambiguous framing never becomes two responses.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from tests.integration.aclient import Client, ProtocolError
from tests.integration.configs import frontend_port, make_config
from tests.support.recording import RecordingServer, lax_parse

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


@dataclass(frozen=True)
class Case:
    id: str
    data: bytes
    statuses: tuple[int, ...]  # what the client gets, in order
    forwarded: tuple[str, ...] = ()  # the targets the server must receive


def refused(id: str, data: bytes, status: int = 400) -> Case:
    return Case(id, data, (status,))


def passed(id: str, data: bytes, *targets: str) -> Case:
    return Case(id, data, (200,) * len(targets), targets)


def post(headers: bytes, body: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    return b"POST /first " + version + b"\r\nHost: x\r\n" + headers + b"\r\n" + body


SECOND = b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n"  # an honest pipelined request
CHUNKED_SMUGGLE = b"0\r\n\r\n" + SMUGGLED  # a chunked end, then the hidden request
CL_SMUGGLE_LEN = str(len(CHUNKED_SMUGGLE)).encode()
SMUGGLED_LEN = str(len(SMUGGLED)).encode()  # the hidden request as a whole body
SMUGGLED_CHUNK = f"{len(SMUGGLED):x}".encode() + b"\r\n" + SMUGGLED + b"\r\n0\r\n\r\n"

CASES = [
    # -- Content-Length and Transfer-Encoding together (CL.TE, TE.CL) --------------------
    refused(
        "cl-te", post(b"Content-Length: " + CL_SMUGGLE_LEN + b"\r\nTransfer-Encoding: chunked\r\n", CHUNKED_SMUGGLE)
    ),
    refused("te-cl", post(b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", b"5c\r\n" + SMUGGLED + b"0\r\n\r\n")),
    refused("cl-te-zero", post(b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", CHUNKED_SMUGGLE)),
    refused("te-identity-cl", post(b"Transfer-Encoding: identity\r\nContent-Length: 5\r\n", b"hello" + SMUGGLED)),
    refused("te-in-http10", post(b"Transfer-Encoding: chunked\r\n", CHUNKED_SMUGGLE, b"HTTP/1.0")),
    # -- Content-Length spellings ---------------------------------------------------------
    refused("cl-two-different", post(b"Content-Length: 0\r\nContent-Length: 37\r\n", SMUGGLED)),
    refused("cl-list-different", post(b"Content-Length: 0, 35\r\n", SMUGGLED)),
    refused("cl-plus-sign", post(b"Content-Length: +0\r\n", SMUGGLED)),
    refused("cl-minus-zero", post(b"Content-Length: -0\r\n", SMUGGLED)),
    refused("cl-hex", post(b"Content-Length: 0x0\r\n", SMUGGLED)),
    refused("cl-two-numbers", post(b"Content-Length: 0 35\r\n", SMUGGLED)),
    refused("cl-empty", post(b"Content-Length: \r\n", SMUGGLED)),
    refused("cl-overflow", post(b"Content-Length: 18446744073709551616\r\n", SMUGGLED)),
    refused("cl-decimal-point", post(b"Content-Length: 0.5\r\n", SMUGGLED)),
    refused("cl-underscore-digits", post(b"Content-Length: 1_0\r\n", b"0123456789" + SMUGGLED)),
    refused("cl-name-space-before-colon", post(b"Content-Length : 35\r\n", SMUGGLED)),
    refused("cl-name-tab-before-colon", post(b"Content-Length\t: 35\r\n", SMUGGLED)),
    refused("cl-vertical-tab", post(b"Content-Length:\x0b35\r\n", SMUGGLED)),
    passed("cl-leading-zeros", post(b"Content-Length: 0005\r\n", b"hello"), "/first"),
    passed("cl-optional-whitespace", post(b"Content-Length: \t5 \r\n", b"hello"), "/first"),
    # -- Transfer-Encoding spellings ------------------------------------------------------
    refused("te-xchunked", post(b"Transfer-Encoding: xchunked\r\n", CHUNKED_SMUGGLE)),
    refused("te-chunked-then-identity", post(b"Transfer-Encoding: chunked, identity\r\n", CHUNKED_SMUGGLE)),
    refused("te-two-lines", post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", CHUNKED_SMUGGLE)),
    refused("te-chunked-twice", post(b"Transfer-Encoding: chunked, chunked\r\n", CHUNKED_SMUGGLE)),
    refused("te-space-before-colon", post(b"Transfer-Encoding : chunked\r\n", CHUNKED_SMUGGLE)),
    refused("te-vertical-tab", post(b"Transfer-Encoding:\x0bchunked\r\n", CHUNKED_SMUGGLE)),
    refused("te-quoted", post(b'Transfer-Encoding: "chunked"\r\n', CHUNKED_SMUGGLE)),
    refused("te-colon-in-value", post(b"Transfer-Encoding: :chunked\r\n", CHUNKED_SMUGGLE)),
    refused("te-folded", post(b"Transfer-Encoding:\r\n chunked\r\n", CHUNKED_SMUGGLE)),
    refused("te-name-with-nul", post(b"Transfer-Encoding\x00: chunked\r\n", CHUNKED_SMUGGLE)),
    passed("te-upper-case", post(b"Transfer-Encoding: CHUNKED\r\n", b"5\r\nhello\r\n0\r\n\r\n"), "/first"),
    refused("te-trailing-tab", post(b"Transfer-Encoding: chunked\t\r\n", CHUNKED_SMUGGLE)),
    # -- chunk sizes and chunk framing ----------------------------------------------------
    refused("chunk-size-overflow", post(b"Transfer-Encoding: chunked\r\n", b"10000000000000000\r\nhello\r\n0\r\n\r\n")),
    refused("chunk-size-0x", post(b"Transfer-Encoding: chunked\r\n", b"0x5\r\nhello\r\n0\r\n\r\n" + SMUGGLED)),
    refused("chunk-size-negative", post(b"Transfer-Encoding: chunked\r\n", b"-5\r\nhello\r\n0\r\n\r\n")),
    refused("chunk-size-plus", post(b"Transfer-Encoding: chunked\r\n", b"+5\r\nhello\r\n0\r\n\r\n")),
    refused("chunk-size-empty", post(b"Transfer-Encoding: chunked\r\n", b"\r\n" + CHUNKED_SMUGGLE)),
    refused("chunk-size-space-inside", post(b"Transfer-Encoding: chunked\r\n", b"5 5\r\nhello\r\n0\r\n\r\n")),
    refused("chunk-data-too-long", post(b"Transfer-Encoding: chunked\r\n", b"1\r\nhello\r\n0\r\n\r\n" + SMUGGLED)),
    refused("chunk-no-crlf-after-data", post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello0\r\n\r\n" + SMUGGLED)),
    refused("chunk-bare-lf-after-size", post(b"Transfer-Encoding: chunked\r\n", b"5\nhello\r\n0\r\n\r\n" + SMUGGLED)),
    refused("chunk-bare-cr-after-data", post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r0\r\n\r\n" + SMUGGLED)),
    refused("chunk-ext-bare-lf", post(b"Transfer-Encoding: chunked\r\n", b"5;a\nb\r\nhello\r\n0\r\n\r\n" + SMUGGLED)),
    passed("chunk-extension", post(b"Transfer-Encoding: chunked\r\n", b"5;name=value\r\nhello\r\n0\r\n\r\n"), "/first"),
    refused(  # RFC 9110 6.5.1: framing fields are not allowed in trailers
        "chunk-trailer-content-length",
        post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\nContent-Length: 37\r\n\r\n"),
    ),
    # -- line ends, controls and header names ---------------------------------------------
    refused("bare-lf-line-ends", b"POST /first HTTP/1.1\nHost: x\nContent-Length: 35\n\n" + SMUGGLED),
    refused("bare-cr-in-value", post(b"X-A: a\rContent-Length: 35\r\n", SMUGGLED)),
    refused("bare-cr-line-end", b"GET /first HTTP/1.1\rHost: x\r\n\r\n"),
    refused("nul-in-value", post(b"X-A: a\x00b\r\n", b"")),
    refused("control-in-value", post(b"X-A: a\x01b\r\n", b"")),
    refused("del-in-name", post(b"X-\x7fA: b\r\n", b"")),
    refused("space-in-name", post(b"X A: b\r\n", b"")),
    refused("empty-name", post(b": b\r\n", b"")),
    refused("no-colon", post(b"Content-Length 35\r\n", SMUGGLED)),
    refused("obs-fold", post(b"X-A: a\r\n Content-Length: 35\r\n", SMUGGLED)),
    refused("head-line-starts-with-space", b"GET /first HTTP/1.1\r\n Host: x\r\n\r\n"),
    refused("nul-in-target", b"GET /fir\x00st HTTP/1.1\r\nHost: x\r\n\r\n"),
    refused("space-in-target", b"GET /first /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"),
    # -- request lines and targets --------------------------------------------------------
    refused("asterisk-get", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n"),
    refused("http09", b"GET /first\r\n\r\n"),
    refused("version-http2", b"GET /first HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    passed("two-spaces-before-version", b"GET /first  HTTP/1.1\r\nHost: x\r\n\r\n", "/first"),
    refused("lower-case-version", b"GET /first http/1.1\r\nHost: x\r\n\r\n"),
    refused("absolute-form-bad-scheme", b"GET ftp://x/first HTTP/1.1\r\nHost: x\r\n\r\n"),
    passed(  # forwarded as received, with the Host of its authority (checked below)
        "absolute-form-other-host",
        b"GET http://a.example/first HTTP/1.1\r\nHost: b.example\r\n\r\n",
        "http://a.example/first",
    ),
    # -- HTTP/1.0 and keep-alive ----------------------------------------------------------
    passed(
        "http10-keepalive-pipelined",
        b"GET /first HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /second HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "/first",
        "/second",
    ),
    passed("http10-body-then-close", post(b"Content-Length: 5\r\n", b"hello" + SMUGGLED, b"HTTP/1.0"), "/first"),
    # -- Expect ---------------------------------------------------------------------------
    passed(
        "expect-100-body-sent-at-once",
        post(b"Expect: 100-continue\r\nContent-Length: " + SMUGGLED_LEN + b"\r\n", SMUGGLED),
        "/first",
    ),
    passed("expect-unknown-ignored", post(b"Expect: 200-ok\r\nContent-Length: 0\r\n", SECOND), "/first", "/second"),
    # -- requests hidden in bodies, and honest pipelines ----------------------------------
    passed("get-with-body", b"GET /first HTTP/1.1\r\nHost: x\r\nContent-Length: 35\r\n\r\n" + SMUGGLED, "/first"),
    passed("chunked-body-holds-request", post(b"Transfer-Encoding: chunked\r\n", SMUGGLED_CHUNK), "/first"),
    passed(
        "connection-names-content-length",
        post(b"Connection: Content-Length\r\nContent-Length: " + SMUGGLED_LEN + b"\r\n", SMUGGLED),
        "/first",
    ),
    passed(
        "connection-names-transfer-encoding",
        post(b"Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n", SMUGGLED_CHUNK),
        "/first",
    ),
    passed(
        "pipelined-pair",
        b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n",
        "/first",
        "/second",
    ),
    Case(
        "pipelined-then-malformed",  # answered in order: the first, then the refusal, then a close
        b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\n\r\n" + SMUGGLED,
        (200, 400),
        ("/first",),
    ),
    passed("http10-then-garbage", b"GET /first HTTP/1.0\r\n\r\nGET /x\x00 HTTP/1.1\r\n\r\n" + SMUGGLED, "/first"),
    passed(
        "pipelined-after-chunked",
        post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n")
        + b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n",
        "/first",
        "/second",
    ),
]


async def _exchange(port: int, data: bytes, answers: int) -> list[int | str]:
    """Send `data`, read up to `answers` responses; an error or a close ends the list."""
    statuses: list[int | str] = []
    async with await Client.connect(port) as client:
        await client.send(data)
        try:
            for _ in range(answers):
                response = await client.read_response("GET", timeout=5)
                statuses.append(response.status)
        except (ProtocolError, asyncio.IncompleteReadError, ConnectionError, TimeoutError) as exc:
            statuses.append(type(exc).__name__)
    return statuses


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 60
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_no_request_is_smuggled(run_balancer, case: Case):
    with RecordingServer("rec") as server:

        async def scenario(balancer):
            return await _exchange(frontend_port(balancer), case.data, len(case.statuses))

        statuses = run_balancer(make_config([("rec", server.address)]), scenario)
        lax, strict = server.lax_targets(), server.strict_targets()
        hosts = [
            value
            for data in server.raw
            for request in lax_parse(bytes(data))[0]
            for name, value in request.headers
            if name == "host"
        ]
    assert statuses == list(case.statuses), (statuses, lax)
    assert lax == strict, "the server's lax and strict readings disagree: the bytes were ambiguous"
    assert "/smuggled" not in lax
    assert tuple(lax) == case.forwarded
    if case.id == "absolute-form-other-host":
        assert hosts == ["a.example"], "the Host a server sees names the target's authority"


# -- responses ------------------------------------------------------------------------------

INJECTED = b"HTTP/1.1 200 OK\r\nX-Injected: yes\r\nContent-Length: 8\r\n\r\ninjected"


class AmbiguousServer(RecordingServer):
    """Answers the first request it gets with `first` (ambiguous framing followed by a
    response of its own making), every other request with an ordinary 200."""

    def __init__(self, first: bytes) -> None:
        super().__init__("ambiguous")
        self.first = first
        self.sent_first = False
        # A response framed by the close (RFC 9112 6.3) ends when the server closes.
        self.close_after_first = b"chunked, identity" in first

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received = bytearray()
        self.raw.append(received)
        answered = 0
        while chunk := await reader.read(65536):
            received += chunk
            requests, _ = lax_parse(bytes(received))
            for _ in requests[answered:]:
                if self.sent_first:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
                    continue
                writer.write(self.first)
                self.sent_first = True
                if self.close_after_first:
                    await writer.drain()
                    return
            answered = len(requests)
            await writer.drain()


RESPONSE_CASES = {
    "cl-and-te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + INJECTED,
    "two-content-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Length: 71\r\n\r\n" + INJECTED,
    "content-length-list": b"HTTP/1.1 200 OK\r\nContent-Length: 0, 71\r\n\r\n" + INJECTED,
    "negative-content-length": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n" + INJECTED,
    "bad-chunk-size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + INJECTED,
    # RFC 9112 6.3: chunked not last means a body read until the close; what follows is body.
    "chunked-not-last": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + INJECTED,
    "204-with-a-body": b"HTTP/1.1 204 No Content\r\nContent-Length: 71\r\n\r\n" + INJECTED,
    "304-with-a-body": b"HTTP/1.1 304 Not Modified\r\n\r\n" + INJECTED,
    "bare-lf-head": b"HTTP/1.1 200 OK\nContent-Length: 0\n\n" + INJECTED,
    "obs-fold-content-length": b"HTTP/1.1 200 OK\r\nX-A: a\r\n Content-Length: 0\r\n\r\n" + INJECTED,
    "complete-then-stray": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + INJECTED,
}


@pytest.mark.parametrize("answer", RESPONSE_CASES.values(), ids=RESPONSE_CASES.keys())
def test_an_ambiguous_response_never_becomes_two(run_balancer, answer: bytes):
    """The client asks twice on one connection: the second answer is never the bytes a
    server hid behind the first, and no client ever sees the injected response."""
    with AmbiguousServer(answer) as server:

        async def scenario(balancer):
            answers = []
            async with await Client.connect(frontend_port(balancer)) as client:
                for target in ("/first", "/second"):
                    try:
                        await client.send(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                        answers.append(await client.read_response("GET", timeout=5))
                    except (ProtocolError, asyncio.IncompleteReadError, ConnectionError, TimeoutError):
                        break
            return answers

        answers = run_balancer(make_config([("ambiguous", server.address)]), scenario)
    assert answers, "the client got no answer at all"
    for response in answers:
        assert response.header("X-Injected") is None, "a response hidden in another reached the client"
    assert answers[0].status in (200, 204, 304, 502)
    if len(answers) > 1:
        assert (answers[1].status, answers[1].body) == (200, b"fresh")
