"""proto/_h2_fields.c translates an HTTP/1.1 response head (and trailer section) for an
HTTP/2 client exactly as proto/h2_message's Python does: the same header list for the usual
heads, for every edge case (no colon, no space, tabs, empty values, upper-case names, each
connection-specific name in mixed case, trailer fields a trailer section must not carry),
and for thousands of random ones."""

from __future__ import annotations

import os
import random

import pytest

from balancer.proto.h2_message import CONNECTION_SPECIFIC, response_headers, response_trailers

try:
    from balancer.proto import _h2_fields
except ImportError:  # a BALANCER_PURE=1 build has no C module
    _h2_fields = None  # type: ignore[assignment]

if _h2_fields is None:
    if os.environ.get("CI") == "true" and os.environ.get("BALANCER_PURE") != "1":
        raise RuntimeError("proto/_h2_fields was not built (setup.py build_ext --inplace): CI must test it")
    pytestmark = pytest.mark.skip(reason="proto/_h2_fields (C) not built: BALANCER_PURE=1 or no build_ext")

NGINX = (
    b"Server: nginx/1.22.1\r\nDate: Sat, 05 Dec 2026 01:59:59 GMT\r\nContent-Type: text/html\r\n"
    b"Content-Length: 615\r\nConnection: keep-alive\r\nLast-Modified: Tue, 01 Dec 2026 10:00:00 GMT\r\n"
    b'ETag: "6569c4d0-267"\r\nAccept-Ranges: bytes\r\nSet-Cookie: SERVERID=s1; path=/'
)

CASES = [
    b"",
    b"\r\n",
    NGINX,
    NGINX + b"\r\n",
    b"\r\n" + NGINX,
    b"X-Empty:\r\nX-Spaces:    \r\nX-Tabs:\t v \t\r\nX-Inner: a  b",
    b"NoColonAtAll\r\nx:y\r\nX-Colons: a:b:c",
    b":weird: value\r\n: empty name",
    b"X-Lone-CR: a\rb\r\nX-Lone-LF: a\nb",
    b"X-" + b"Long" * 40 + b": long name, past the stack buffer",
    b"TE: trailers\r\nTransfer-Encoding: chunked\r\nKeep-Alive: timeout=5\r\nUpgrade: h2c\r\nProxy-Connection: x",
    b"CONNECTION: close\r\nConnection: upgrade\r\nconnection: x\r\nX-After: kept",
    b"grpc-status: 0\r\ngrpc-message: ok\r\nContent-Length: 5\r\nHost: a\r\nTrailer: x\r\n:path: /\r\nX-T: v",
    b"X-Bytes: caf\xc3\xa9 \x7f\x01",
]


@pytest.mark.parametrize("lines", CASES)
@pytest.mark.parametrize("status", [200, 204, 301, 404, 503, 99, 600, 1000])
def test_a_response_head_translates_as_the_python_does(status: int, lines: bytes) -> None:
    assert _h2_fields.response_headers(status, lines) == response_headers(status, lines)


@pytest.mark.parametrize("lines", CASES)
def test_a_trailer_section_translates_as_the_python_does(lines: bytes) -> None:
    assert _h2_fields.response_trailers(lines) == response_trailers(lines)


def test_connection_specific_fields_are_dropped_in_any_case() -> None:
    for name in CONNECTION_SPECIFIC:
        for spelled in (name, name.upper(), name.title()):
            lines = b"A: 1\r\n" + spelled + b": x\r\nB: 2"
            assert _h2_fields.response_headers(200, lines) == [(b":status", b"200"), (b"a", b"1"), (b"b", b"2")]


def test_the_usual_names_are_the_same_object_every_time() -> None:
    """The HPACK encoder's lookups then hash them once (bytes cache their hash)."""
    first = _h2_fields.response_headers(200, NGINX)
    again = _h2_fields.response_headers(200, NGINX)
    usual = [(a, b) for (a, _), (b, _) in zip(first, again, strict=True) if a in (b"content-type", b"date", b"server")]
    assert len(usual) == 3 and all(a is b for a, b in usual)


def test_random_heads_translate_as_the_python_does() -> None:
    rng = random.Random(41)
    pieces = [b"Name", b"X-A", b"te", b"TE", b"host", b":", b": ", b"\t", b" ", b"\r\n", b"\r", b"\n", b"v"]
    pieces += [b"Connection", b"content-length", b"Trailer", b"", b"\xff", b"a:b", b"Date", b"set-cookie"]
    for _ in range(3000):
        lines = b"".join(rng.choice(pieces) for _ in range(rng.randrange(12)))
        status = rng.choice([100, 200, 204, 304, 404, 599, 0, 700])
        assert _h2_fields.response_headers(status, lines) == response_headers(status, lines), lines
        assert _h2_fields.response_trailers(lines) == response_trailers(lines), lines
