"""Properties of proto/ over generated input (hypothesis): what is written reads back the
same, and arbitrary bytes never raise anything but the documented exceptions.

These run in the default suite with a bounded number of examples each; the deep search
is bench/fuzz (atheris).
"""

from __future__ import annotations

import ipaddress

import httptools
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balancer.proto.agent import AgentReplyError, parse_agent_reply
from balancer.proto.basic_auth import basic_credentials
from balancer.proto.errorfile import parse_error_file
from balancer.proto.http1 import (
    FIELD_OTHER,
    accept_response_head,
    chunk,
    connection_tokens,
    content_length_value,
    header_kind,
    split_response_head,
)
from balancer.proto.proxy import ProxyProtocolError, build_v1, build_v2, parse_proxy_header

EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ports = st.integers(min_value=0, max_value=65535)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
addresses = st.one_of(st.tuples(ipv4, ipv4), st.tuples(ipv6, ipv6))
TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
tokens = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=20)
field_values = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)


# -- PROXY protocol ---------------------------------------------------------------------------


@EXAMPLES
@given(addresses, ports, ports, st.binary(max_size=64))
def test_proxy_v1_and_v2_read_back_what_was_written(pair, source_port, dest_port, rest):
    source, dest = pair
    for build in (build_v1, build_v2):
        header = build(source, source_port, dest, dest_port)
        parsed = parse_proxy_header(header + rest)
        assert parsed is not None
        info, consumed = parsed
        assert consumed == len(header), "the bytes after the header belong to the connection"
        assert ipaddress.ip_address(info.source_ip) == ipaddress.ip_address(source)
        assert ipaddress.ip_address(info.dest_ip) == ipaddress.ip_address(dest)
        assert (info.source_port, info.dest_port, info.local) == (source_port, dest_port, False)


@EXAMPLES
@given(addresses, ports, ports, st.data())
def test_a_proxy_header_cut_short_asks_for_more_bytes(pair, source_port, dest_port, data):
    """A header split over reads is never mistaken for a bad one."""
    for build in (build_v1, build_v2):
        header = build(pair[0], source_port, pair[1], dest_port)
        cut = data.draw(st.integers(min_value=0, max_value=len(header) - 1))
        assert parse_proxy_header(header[:cut]) is None


@EXAMPLES
@given(st.binary(max_size=300))
def test_proxy_parser_takes_any_bytes(data):
    try:
        parsed = parse_proxy_header(data)
    except ProxyProtocolError:
        return
    if parsed is not None:
        assert 0 < parsed[1] <= len(data)


@EXAMPLES
@given(st.sampled_from([b"PROXY ", b"\r\n\r\n\x00\r\nQUIT\n"]), st.binary(max_size=300))
def test_proxy_parser_takes_any_bytes_after_a_signature(signature, data):
    try:
        parsed = parse_proxy_header(signature + data)
    except ProxyProtocolError:
        return
    if parsed is not None:
        assert 0 < parsed[1] <= len(signature + data)


# -- HTTP/1 -----------------------------------------------------------------------------------


def _dechunk(data: bytes) -> bytes:
    """The payload of one chunk() output, read by llhttp."""
    body = bytearray()

    class Collect:
        def on_body(self, part: bytes) -> None:
            body.extend(part)

    parser = httptools.HttpRequestParser(Collect())
    parser.feed_data(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + data + b"0\r\n\r\n")
    return bytes(body)


@EXAMPLES
@given(st.binary(min_size=1, max_size=5000))
def test_chunk_reads_back_as_its_payload(payload):
    assert _dechunk(chunk(payload)) == payload


response_headers = st.lists(st.tuples(tokens, field_values), max_size=8)


def _head(status: int, headers: list[tuple[str, str]], version: str = "1.1") -> bytes:
    lines = [f"HTTP/{version} {status} Reason"] + [f"{name}: {value}" for name, value in headers]
    return "\r\n".join(lines).encode()


def _parsed_by_llhttp(head: bytes) -> bool:
    parser = httptools.HttpResponseParser(None)
    try:
        parser.feed_data(head + b"\r\n\r\n")
    except httptools.HttpParserError:
        return False
    return True


@EXAMPLES
@given(st.integers(min_value=100, max_value=599), response_headers, st.sampled_from(["1.0", "1.1"]))
def test_response_split_keeps_end_to_end_headers_and_drops_hop_by_hop(status, headers, version):
    head = _head(status, headers, version)
    if not _parsed_by_llhttp(head):
        return  # the proxy splits only heads the parser accepted
    status_text, lines, _chunked, _upgrade, has_length, _reusable = split_response_head(head)
    assert status_text.startswith(str(status).encode())
    kept = [line for line in lines.split(b"\r\n")[1:]] if lines else []
    named = connection_tokens([v.encode() for n, v in headers if n.lower() == "connection"])
    for name, value in headers:
        line = f"{name}: {value}".encode()
        end_to_end = header_kind(line) < 5 and name.lower().encode() not in named
        if end_to_end or name.lower() in ("content-length", "host"):
            assert line in kept, (line, kept)
        elif header_kind(line) >= 5:
            assert line not in kept, (line, kept)
    assert has_length == any(name.lower() == "content-length" for name, _ in headers)
    assert accept_response_head(head)[0] == split_response_head(head)


@EXAMPLES
@given(st.integers(min_value=0, max_value=2**53), response_headers)
def test_content_length_value_reads_the_header(length, headers):
    head = _head(200, [*headers, ("Content-Length", str(length))])
    others = [v for n, v in headers if n.lower() == "content-length"]
    if others or not _parsed_by_llhttp(head):
        return
    assert content_length_value(head) == length


@EXAMPLES
@given(st.binary(max_size=80))
def test_header_kind_never_fails(line):
    kind = header_kind(line)
    assert isinstance(kind, int)
    if not line[:1].isalpha():
        assert kind == FIELD_OTHER


@EXAMPLES
@given(st.lists(st.binary(max_size=40), max_size=5))
def test_connection_tokens_are_lower_case_and_trimmed(values):
    for token in connection_tokens(values):
        assert token == token.strip().lower() and token and b"," not in token


# -- the other parsers ------------------------------------------------------------------------


@EXAMPLES
@given(st.binary(max_size=200))
def test_agent_reply_takes_any_bytes(data):
    try:
        reply = parse_agent_reply(data)
    except AgentReplyError:
        return
    assert reply.weight_percent is None or 0 <= reply.weight_percent <= 100


@EXAMPLES
@given(st.binary(max_size=200))
def test_basic_credentials_take_any_value(value):
    found = basic_credentials(value)
    assert found is None or (isinstance(found[0], bytes) and isinstance(found[1], bytes))


@EXAMPLES
@given(st.binary(max_size=100), st.binary(max_size=100))
def test_basic_credentials_read_back(user, password):
    import base64

    user = user.replace(b":", b"")
    token = base64.b64encode(user + b":" + password)
    assert basic_credentials(b"Basic " + token) == (user, password)


@EXAMPLES
@given(st.binary(max_size=400))
def test_error_files_take_any_bytes(data):
    try:
        page = parse_error_file(data)
    except ValueError:
        return
    assert page.close.startswith(b"HTTP/1.")
    assert b"\r\nConnection: close\r\n" in page.close


@EXAMPLES
@given(
    st.integers(min_value=200, max_value=599),
    st.lists(st.tuples(tokens, field_values), max_size=5),
    st.binary(max_size=300),
)
def test_error_file_pages_frame_their_body(status, headers, body):
    lines = [f"HTTP/1.1 {status} Error".encode()] + [f"{n}: {v}".encode() for n, v in headers]
    page = parse_error_file(b"\r\n".join(lines) + b"\r\n\r\n" + body)
    parser_body = bytearray()

    class Collect:
        def on_body(self, part: bytes) -> None:
            parser_body.extend(part)

    httptools.HttpResponseParser(Collect()).feed_data(page.close)
    assert bytes(parser_body) == (b"" if status in (204, 304) else body), "a bodiless status never carries one"
