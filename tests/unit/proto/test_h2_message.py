"""proto.h2_message: HTTP/2 header lists as HTTP/1.1 heads, and what is refused on the way."""

from __future__ import annotations

import httptools
import pytest

from balancer.proto.h2_message import (
    MalformedRequest,
    http2_request_line,
    request_head,
    response_field,
    response_trailer_field,
    trailer_section,
)

BASE = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"www.example"), (b":path", b"/a?b=1")]


class _Parsed:
    """What httptools (the HTTP/1.1 session's parser) reads of a head."""

    def __init__(self, head: bytes) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.url = b""
        self.done = False
        parser = httptools.HttpRequestParser(self)
        parser.feed_data(head)
        self.method = parser.get_method()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.done = True


def test_a_bodiless_request_becomes_an_http11_head_with_host_from_authority():
    head = request_head([*BASE, (b"accept", b"*/*")], end_stream=True)
    parsed = _Parsed(head.head)
    assert parsed.done and parsed.method == b"GET" and parsed.url == b"/a?b=1"
    assert parsed.headers == [(b"host", b"www.example"), (b"accept", b"*/*")]
    assert not head.chunked and head.method == b"GET"


def test_authority_wins_over_a_host_field_and_cookies_are_joined():
    headers = [*BASE, (b"host", b"other.example"), (b"cookie", b"a=1"), (b"cookie", b"b=2")]
    parsed = _Parsed(request_head(headers, end_stream=True).head)
    assert parsed.headers == [(b"host", b"www.example"), (b"cookie", b"a=1; b=2")]


def test_a_host_field_serves_when_there_is_no_authority():
    headers = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b"host", b"h.example")]
    assert _Parsed(request_head(headers, end_stream=True).head).headers == [(b"host", b"h.example")]


def test_a_body_without_a_length_goes_chunked_and_one_with_a_length_as_is():
    post = [(b":method", b"POST"), *BASE[1:]]
    unsized = request_head(post, end_stream=False)
    assert unsized.chunked and (b"transfer-encoding", b"chunked") in _Parsed(unsized.head).headers
    sized = request_head([*post, (b"content-length", b"5")], end_stream=False)
    assert not sized.chunked and (b"content-length", b"5") in _Parsed(sized.head).headers
    empty = request_head(post, end_stream=True)
    assert (b"content-length", b"0") in _Parsed(empty.head).headers


def test_te_trailers_is_forwarded_other_connection_fields_are_malformed():
    assert (b"te", b"trailers") in _Parsed(request_head([*BASE, (b"te", b"trailers")], True).head).headers
    for name, value in [(b"connection", b"close"), (b"te", b"gzip"), (b"upgrade", b"h2c"), (b"keep-alive", b"1")]:
        with pytest.raises(MalformedRequest):
            request_head([*BASE, (name, value)], True)


@pytest.mark.parametrize(
    "headers",
    [
        [*BASE, (b"x-a", b"1\r\nInjected: yes")],
        [*BASE, (b"x-a", b"1\nx")],
        [*BASE, (b"x-a", b"1\x00")],
        [*BASE, (b"X-Upper", b"1")],
        [*BASE, (b"bad name", b"1")],
        [*BASE, (b"", b"1")],
        [(b":method", b"GET /x HTTP/1.1\r\n"), *BASE[1:]],
        [(b":method", b"G T"), *BASE[1:]],
        [*BASE[:3], (b":path", b"/a b")],
        [*BASE[:3]],  # no :path
        [*BASE[1:]],  # no :method
        [*BASE[:2], (b":authority", b"a b"), BASE[3]],
        [*BASE, (b":unknown", b"1")],
    ],
    ids=[
        "crlf-in-value",
        "lf-in-value",
        "nul-in-value",
        "upper-case-name",
        "space-in-name",
        "empty-name",
        "request-line-in-method",
        "space-in-method",
        "space-in-path",
        "no-path",
        "no-method",
        "space-in-authority",
        "unknown-pseudo-header",
    ],
)
def test_what_would_not_read_back_as_the_same_request_is_malformed(headers):
    with pytest.raises(MalformedRequest):
        request_head(headers, True)


def test_trailers_end_a_chunked_body_without_connection_or_framing_fields():
    section = trailer_section([(b"x-sum", b"42"), (b"content-length", b"1"), (b"connection", b"x")])
    assert section == b"0\r\nx-sum: 42\r\n\r\n"
    with pytest.raises(MalformedRequest):
        trailer_section([(b"x-sum", b"4\r\n2")])


def test_response_fields_are_lower_case_and_connection_specific_ones_dropped():
    assert response_field(b"Content-Type") == b"content-type"
    for name in (b"Connection", b"Keep-Alive", b"Transfer-Encoding", b"Upgrade", b"Proxy-Connection"):
        assert response_field(name) is None


def test_response_trailers_keep_what_http2_allows_in_a_trailer_section():
    assert response_trailer_field(b"Grpc-Status") == b"grpc-status"
    assert response_trailer_field(b"grpc-message") == b"grpc-message"
    for name in (b"Connection", b"Transfer-Encoding", b"TE", b"Content-Length", b"Host", b"Trailer", b":status"):
        assert response_trailer_field(name) is None


def test_the_log_says_http2():
    assert http2_request_line("GET /x HTTP/1.1") == "GET /x HTTP/2.0"
    assert http2_request_line("<BADREQ>") == "<BADREQ>"


@pytest.mark.parametrize(
    "headers",
    [
        [BASE[0], (b"accept", b"*/*"), *BASE[1:]],
        [*BASE, (b":path", b"/other")],
        [*BASE, (b":method", b"POST")],
        [*BASE, (b":scheme", b"http")],
        [BASE[0], *BASE[2:]],
    ],
    ids=["pseudo-after-regular", "duplicate-path", "duplicate-method", "duplicate-scheme", "no-scheme"],
)
def test_pseudo_header_fields_come_first_once_each_and_scheme_is_required(headers):
    # RFC 9113 8.3 (h2spec 8.1.2.1 and 8.1.2.3): the h2 library checked these before our own layer.
    with pytest.raises(MalformedRequest):
        request_head(headers, True)


def test_connect_needs_no_scheme_or_path():
    head = request_head([(b":method", b"CONNECT"), (b":authority", b"db.example:5432")], False)
    assert head.head.startswith(b"CONNECT db.example:5432 HTTP/1.1\r\n")
