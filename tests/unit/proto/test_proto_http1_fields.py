"""proto.http1: which headers a proxy treats apart (header_kind), and what it keeps of a
response head and learns from it (split_response_head)."""

from __future__ import annotations

import pytest

from balancer.proto.http1 import (
    FIELD_CONNECTION,
    FIELD_CONTENT_LENGTH,
    FIELD_FORWARDED_FOR,
    FIELD_FORWARDED_PROTO,
    FIELD_HOST,
    FIELD_OTHER,
    FIELD_PROXY_CONNECTION,
    HOP_BY_HOP,
    accept_response_head,
    accepted_response_head,
    header_kind,
    split_response_head,
)

STATUS = b"HTTP/1.1 200 OK"


def split(lines: bytes) -> tuple[bytes, bool, bytes, bool]:
    """split_response_head of a 200 with these header lines, without the status text."""
    status, kept, chunked, upgrade, has_length, _ = split_response_head(STATUS + lines)
    assert status == b"200 OK"
    return kept, chunked, upgrade, has_length


NGINX = (
    b"\r\nServer: nginx/1.22.1\r\nDate: Sat, 21 Nov 2026 23:59:59 GMT\r\nContent-Type: text/plain"
    b"\r\nContent-Length: 6\r\nConnection: keep-alive\r\nX-Server: s1"
)


def test_a_plain_connection_header_is_dropped_and_the_rest_passes_byte_for_byte() -> None:
    lines, chunked, upgrade, has_length = split(NGINX)
    assert lines == NGINX.replace(b"\r\nConnection: keep-alive", b"")
    assert (chunked, upgrade, has_length) == (False, b"", True)


def test_a_head_without_hop_by_hop_headers_is_returned_as_is() -> None:
    head = b"\r\nServer: x\r\nContent-Type: text/html\r\nCache-Control: no-store"
    lines, chunked, upgrade, has_length = split(head)
    assert lines == head
    assert (chunked, upgrade, has_length) == (False, b"", False)


@pytest.mark.parametrize(
    "name",
    [
        *(b"Connection", b"Keep-Alive", b"Proxy-Connection", b"TE", b"Trailer", b"Transfer-Encoding", b"Upgrade"),
        *(b"Proxy-Authenticate", b"Proxy-Authorization", b"CONNECTION", b"keep-alive", b"tRaIlEr"),
    ],
)
def test_every_hop_by_hop_header_is_dropped_in_any_case(name: bytes) -> None:
    lines, *_ = split(b"\r\nA: 1\r\n" + name + b": x\r\nB: 2")
    assert lines == b"\r\nA: 1\r\nB: 2"


@pytest.mark.parametrize("name", [b"TEx", b"Tex-Foo", b"Connections", b"Upgraded", b"Content-Lengthy", b"Te-"])
def test_names_that_only_start_like_a_hop_by_hop_header_stay(name: bytes) -> None:
    head = b"\r\n" + name + b": x"
    lines, chunked, upgrade, has_length = split(head)
    assert lines == head
    assert (chunked, upgrade, has_length) == (False, b"", False)


def test_transfer_encoding_connection_named_headers_and_length() -> None:
    head = (
        b"\r\nA: b\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\ntransfer-encoding:gzip, Chunked"
        b"\r\nKeep-Alive: timeout=5\r\nZ: z"
    )
    lines, chunked, upgrade, has_length = split(head)
    assert lines == b"\r\nA: b\r\nZ: z"
    assert (chunked, upgrade, has_length) == (True, b"", False)
    assert split(b"\r\nTransfer-Encoding: chunked, gzip")[1] is False
    assert split(b"\r\ncontent-length: 0")[3] is True


def test_upgrade_value_is_reported_and_an_empty_head_stays_empty() -> None:
    assert split(b"\r\nUpgrade: websocket\r\nConnection: upgrade") == (b"", False, b"websocket", False)
    assert split(b"") == (b"", False, b"", False)


def test_header_kind_knows_every_hop_by_hop_name_and_the_end_to_end_ones() -> None:
    for name in HOP_BY_HOP:
        assert header_kind(name) >= FIELD_CONNECTION, name
        assert header_kind(name.upper() + b": x") >= FIELD_CONNECTION, name
    assert header_kind(b"Host") == FIELD_HOST
    assert header_kind(b"X-Forwarded-For") == FIELD_FORWARDED_FOR
    assert header_kind(b"x-forwarded-proto") == FIELD_FORWARDED_PROTO
    assert header_kind(b"Content-Length: 5") == FIELD_CONTENT_LENGTH
    for other in (b"Hostname", b"Hos", b"X-Forwarded-Host", b"Expect", b"", b"Content-Type: x", b"TEA"):
        assert header_kind(other) == FIELD_OTHER, other


def test_the_status_text_is_what_follows_the_version() -> None:
    assert split_response_head(b"HTTP/1.0 404 Not Found\r\nA: b")[:2] == (b"404 Not Found", b"\r\nA: b")
    assert split_response_head(b"HTTP/1.1 204 ")[:2] == (b"204 ", b"")


@pytest.mark.parametrize(
    ("head", "reusable"),
    [
        (b"HTTP/1.1 200 OK\r\nA: b", True),
        (b"HTTP/1.1 200 OK\r\nConnection: keep-alive", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close", False),
        (b"HTTP/1.1 200 OK\r\nconnection: Keep-Alive, Close", False),
        (b"HTTP/1.0 200 OK\r\nA: b", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive", True),
        (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive", True),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive, close", False),
    ],
)
def test_whether_the_connection_may_carry_another_exchange(head: bytes, reusable: bool) -> None:
    assert split_response_head(head)[5] is reusable


@pytest.mark.parametrize("named", [b"Content-Length", b"content-length, X-A", b"Host", b"Transfer-Encoding"])
def test_a_connection_header_never_drops_framing_or_host(named: bytes) -> None:
    """Framing and Host are never hop-by-hop, whatever Connection names (HAProxy keeps
    them): the Content-Length still frames the body. Other names are dropped."""
    lines, chunked, _, has_length = split(b"\r\nConnection: " + named + b"\r\nContent-Length: 3\r\nX-A: 1")
    expected = b"\r\nContent-Length: 3" + (b"" if b"X-A" in named else b"\r\nX-A: 1")
    assert (lines, chunked, has_length) == (expected, False, True)


def test_proxy_connection_counts_like_connection_for_reuse_and_is_dropped() -> None:
    head = b"HTTP/1.1 200 OK\r\nProxy-Connection: close\r\nContent-Length: 0"
    assert split_response_head(head)[1:] == (b"\r\nContent-Length: 0", False, b"", True, False)
    assert split_response_head(b"HTTP/1.0 200 OK\r\nProxy-Connection: keep-alive")[5] is True
    assert header_kind(b"Proxy-Connection") == FIELD_PROXY_CONNECTION


def test_an_accepted_head_is_remembered_with_its_length_and_the_memory_stays_bounded() -> None:
    from balancer.proto import http1

    heads = [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: keep-alive" % n for n in range(600)]
    big = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Big: " + b"x" * 2000
    for _ in range(2):  # the second pass answers from memory where it can
        for n, head in enumerate(heads):
            assert accept_response_head(head) == (split_response_head(head), n)
        assert accept_response_head(big) == (split_response_head(big), -1)
    assert accepted_response_head(heads[-1]) == (split_response_head(heads[-1]), 599)
    assert accepted_response_head(big) is None  # too big to keep
    assert accepted_response_head(b"HTTP/1.1 200 OK\r\nNever: seen") is None
    assert 0 < len(http1._ACCEPTED) <= 256


@pytest.mark.parametrize(
    ("lines", "length"),
    [
        (b"\r\nContent-Length: 12", 12),
        (b"\r\ncontent-length:0\r\nA: b", 0),
        (b"\r\nA: b\r\nCONTENT-LENGTH: \t 7 ", 7),
        (b"\r\nA: b", -1),
        (b"\r\nConnection: Content-Length\r\nContent-Length: 3", 3),  # never hop-by-hop
    ],
)
def test_the_content_length_that_frames_an_accepted_head(lines: bytes, length: int) -> None:
    assert accept_response_head(STATUS + lines)[1] == length
