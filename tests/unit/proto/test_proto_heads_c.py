"""proto/_heads.c parses a plain request head exactly as httptools does (the method, target,
version and header fields the session's callbacks get), and returns None for everything
else, so httptools answers those bytes as before: every head it accepts, httptools accepts
the same; every refusal case is None. What it works out per field for the session (whether
all are ordinary, the Host, the size, where the header lines start when they are as the
proxy writes them) matches proto/http1's header_kind and the head's own bytes."""

from __future__ import annotations

import random

import httptools
import pytest
from tests.support.tools import require_built

from balancer.proto.h2_message import MalformedRequest, request_head
from balancer.proto.http1 import FIELD_CONNECTION, FIELD_HOST, FIELD_OTHER, block_fields, header_kind

try:
    from balancer.proto import _heads
except ImportError:  # a BALANCER_PURE=1 build has no C module
    _heads = None  # type: ignore[assignment]

require_built(_heads, "proto/_heads")


class _Recorder:
    """What httptools' callbacks give for one read."""

    def __init__(self) -> None:
        self.url = b""
        self.fields: list[bytes] = []
        self.heads = 0
        self.complete = 0
        self.body = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields += [name, value]

    def on_headers_complete(self) -> None:
        self.heads += 1

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete += 1


Fields = list[tuple[bytes, bytes]]
Parsed = tuple[bytes, bytes, str, Fields | None, Fields | None, bytes, int, int, bytes, int]


def _materialized(parsed: Parsed | None) -> Parsed | None:
    """parse_head's result with its header fields as a list: read back from the block
    (proto/http1 block_fields, as Request.headers does) where the block holds them."""
    if parsed is None or parsed[3] is not None:
        return parsed
    assert parsed[4] is not None, "only a plain head's block stands for its fields"
    return (*parsed[:3], block_fields(parsed[8]), *parsed[4:])


def _httptools(data: bytes) -> Parsed | None:
    """httptools' reading of `data` as one request head without a body, or None if it
    refuses it, wants more, or finds more than that; with what the session works out per
    field (header_kind), as _heads.c returns it."""
    recorder = _Recorder()
    parser = httptools.HttpRequestParser(recorder)
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        return None
    except httptools.HttpParserError:
        return None
    if recorder.heads != 1 or recorder.complete != 1 or recorder.body:
        return None
    fields = recorder.fields
    pairs = [(fields[i], fields[i + 1]) for i in range(0, len(fields), 2)]
    kinds = [header_kind(name) for name, _ in pairs]
    hosts = [value for (_, value), kind in zip(pairs, kinds, strict=True) if kind == FIELD_HOST]
    line_end = data.index(b"\r\n") + 2
    as_written = b"".join(b"%b: %b\r\n" % pair for pair in pairs) == data[line_end:-2]
    plain = all(kind in (FIELD_OTHER, FIELD_HOST, FIELD_CONNECTION) for kind in kinds)
    hop = [pair for pair, kind in zip(pairs, kinds, strict=True) if kind == FIELD_CONNECTION] if plain else None
    headers = [pair for pair, kind in zip(pairs, kinds, strict=True) if kind != FIELD_CONNECTION] if plain else pairs
    return (
        parser.get_method(),
        recorder.url,
        parser.get_http_version(),
        headers,
        hop,
        hosts[-1] if hosts else b"",
        len(hosts),
        sum(len(name) + len(value) + 4 for name, value in pairs),
        b"".join(b"%b: %b\r\n" % pair for pair in headers) if plain and as_written else b"",
        len(pairs),
    )


def _head(line: bytes, *fields: bytes) -> bytes:
    return line + b"\r\n" + b"".join(field + b"\r\n" for field in fields) + b"\r\n"


BROWSER = _head(
    b"GET /products/list?id=17&q=item3412 HTTP/1.1",
    b"Host: shop.example.com",
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    b"Accept-Language: en-US,en;q=0.5",
    b"Accept-Encoding: gzip, deflate, br",
    b"Referer: https://shop.example.com/cart?from=16",
    b"Cookie: session=00000000a3b1c2d4; theme=light; cart=17",
    b"Cache-Control: no-cache",
    b"Sec-Fetch-Mode: navigate",
)

ACCEPTED = [
    BROWSER,
    _head(b"GET / HTTP/1.1"),
    _head(b"GET / HTTP/1.0", b"Host: a"),
    _head(b"HEAD /x HTTP/1.1", b"Host: a", b"Connection: close"),
    _head(b"OPTIONS /x HTTP/1.1", b"Host: a"),
    _head(b"DELETE /items/3 HTTP/1.1", b"Host: a", b"X-Forwarded-For: 10.0.0.1"),
    _head(b"GET /a%20b?x=[1]&y=(2)*;z=@:! HTTP/1.1", b"Host: a"),
    _head(b"GET / HTTP/1.1", b"Host:a", b"X-Tab:\tv\tw", b"X-Many:   spaced  inside"),
    _head(b"GET / HTTP/1.1", b"Host: a", b"Host: b"),  # the session refuses two Hosts itself
    _head(b"GET / HTTP/1.1", b"Connection: keep-alive, te", b"TE: trailers", b"Keep-Alive: 5"),
    _head(b"GET / HTTP/1.1", b"!#$%&'*+-.^_`|~09azAZ: v"),
    _head(b"GET / HTTP/1.1", b"Host: a", b"X-Forwarded-For: 10.0.0.1", b"x-forwarded-proto: https"),
    _head(b"GET / HTTP/1.1", b"Proxy-Connection: close", b"proxy-authorization: x", b"Trailer: t"),
    _head(b"GET / HTTP/1.1", b"PROXY-AUTHENTICATE: y", b"HOST: b", b"Hosts: c", b"Connections: d"),
    _head(b"GET / HTTP/1.1", b"Host: a", b"X: b", b"Host: c"),
    _head(b"GET / HTTP/1.1", b"Host: a", b"Connection: keep-alive", b"Accept: */*", b"connection: x"),
    _head(b"GET / HTTP/1.1", b"Connection: close"),
    _head(b"GET / HTTP/1.1", b"Host:a", b"Connection: keep-alive"),
    _head(b"GET / HTTP/1.1", b"Host: a", b"Connection: keep-alive", b"TE: trailers"),
]

REFUSED = [
    b"",
    b"GET / HTTP/1.1\r\n",  # not ended
    _head(b"GET / HTTP/1.1", b"Host: a")[:-1],
    _head(b"GET / HTTP/1.1") + b"GET / HTTP/1.1\r\n\r\n",  # pipelined
    b"\r\n" + _head(b"GET / HTTP/1.1"),  # leading empty line
    b"GET / HTTP/1.1\n\n",
    b"GET / HTTP/1.1\r\nHost: a\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n",
    _head(b"POST / HTTP/1.1", b"Content-Length: 0"),
    _head(b"PUT / HTTP/1.1"),
    _head(b"CONNECT a:443 HTTP/1.1"),
    _head(b"get / HTTP/1.1"),
    _head(b"GET  / HTTP/1.1"),
    _head(b"GET http://a/ HTTP/1.1"),
    _head(b"OPTIONS * HTTP/1.1"),
    _head(b"GET /a#f HTTP/1.1"),
    _head(b"GET /a b HTTP/1.1"),
    _head(b"GET /a\tb HTTP/1.1"),
    _head(b"GET /\x7f HTTP/1.1"),
    _head(b"GET /\xc3\xa9 HTTP/1.1"),
    _head(b'GET /"<>\\^`{|} HTTP/1.1'),
    _head(b"GET / HTTP/2.0"),
    _head(b"GET / HTTP/1.2"),
    _head(b"GET / HTTP/1.1 "),
    _head(b"GET / http/1.1"),
    _head(b"GET /"),
    _head(b"GET / HTTP/1.1", b"Transfer-Encoding: chunked"),
    _head(b"GET / HTTP/1.1", b"transfer-encoding: identity"),
    _head(b"GET / HTTP/1.1", b"Content-Length: 0"),
    _head(b"GET / HTTP/1.1", b"CONTENT-LENGTH: 5"),
    _head(b"GET / HTTP/1.1", b"Upgrade: websocket", b"Connection: upgrade"),
    _head(b"GET / HTTP/1.1", b"Expect: 100-continue"),
    _head(b"GET / HTTP/1.1", b"Host : a"),
    _head(b"GET / HTTP/1.1", b" Host: a"),
    _head(b"GET / HTTP/1.1", b"Host: a", b" folded"),
    _head(b"GET / HTTP/1.1", b"Host: a", b"\tfolded"),
    _head(b"GET / HTTP/1.1", b"Ho\x01st: a"),
    _head(b"GET / HTTP/1.1", b"Ho(st: a"),
    _head(b"GET / HTTP/1.1", b": a"),
    _head(b"GET / HTTP/1.1", b"Host"),
    _head(b"GET / HTTP/1.1", b"X-Empty:"),
    _head(b"GET / HTTP/1.1", b"X-Empty:  "),
    _head(b"GET / HTTP/1.1", b"X-Trailing: v "),
    _head(b"GET / HTTP/1.1", b"X-Trailing: v\t"),
    _head(b"GET / HTTP/1.1", b"X-Ctl: a\x00b"),
    _head(b"GET / HTTP/1.1", b"X-Ctl: a\x7fb"),
    _head(b"GET / HTTP/1.1", b"X-Ctl: a\x0bb"),
    _head(b"GET / HTTP/1.1", b"X-Obs: caf\xe9"),
    _head(b"GET / HTTP/1.1", b"X-Bare-Lf: a\nb"),
]


@pytest.mark.parametrize("data", ACCEPTED)
def test_a_plain_head_reads_as_httptools_reads_it(data: bytes) -> None:
    assert _heads is not None
    parsed = _heads.parse_head(data)
    assert parsed is not None
    assert _materialized(parsed) == _httptools(data)


@pytest.mark.parametrize("data", REFUSED)
def test_anything_unusual_is_left_to_httptools(data: bytes) -> None:
    assert _heads is not None
    assert _heads.parse_head(data) is None


def test_random_mutations_never_accept_what_httptools_reads_otherwise() -> None:
    """Bytes changed, inserted or removed anywhere in plain heads: whatever the C parser
    accepts, httptools reads the same (it may refuse more, never accept differently)."""
    assert _heads is not None
    rng = random.Random(17)
    alphabet = b' \t\r\n:/?#%\x00\x7f\x80azAZ09-;=,"()'
    seeds = ACCEPTED
    accepted = 0
    for _ in range(20000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data))
            action = rng.randrange(3)
            if action == 0:
                data[at] = rng.choice(alphabet)
            elif action == 1:
                data.insert(at, rng.choice(alphabet))
            elif len(data) > 1:
                del data[at]
        parsed = _heads.parse_head(bytes(data))
        if parsed is not None:
            accepted += 1
            assert _materialized(parsed) == _httptools(bytes(data)), bytes(data)
    assert accepted > 1000  # the mutations leave many heads plain


def test_up_to_a_hundred_fields_are_taken_more_are_left_to_httptools() -> None:
    assert _heads is not None
    hundred = _head(b"GET / HTTP/1.1", *(b"X-F%d: %d" % (i, i) for i in range(100)))
    parsed = _heads.parse_head(hundred)
    assert parsed is not None and _materialized(parsed) == _httptools(hundred)
    assert _heads.parse_head(_head(b"GET / HTTP/1.1", *(b"X-F%d: %d" % (i, i) for i in range(101)))) is None


def test_a_browser_head_needs_no_python_per_field() -> None:
    """The session takes such a head from the result alone (net/http_session.py _take_head):
    ordinary fields, its Host, its Connection apart, and its forwarded header lines as one
    block as received, which stands for the fields: no list of them is made (Request.headers
    reads them from the block if asked)."""
    assert _heads is not None
    parsed = _heads.parse_head(BROWSER)
    assert parsed is not None
    _, _, _, headers, hop, host, host_count, header_bytes, block, fields = parsed
    assert headers is None and hop == [] and host == b"shop.example.com" and host_count == 1 and fields == 9
    assert block == BROWSER[BROWSER.index(b"\r\n") + 2 : -2]
    assert len(block_fields(block)) == 9 and block_fields(block)[0] == (b"Host", b"shop.example.com")
    assert header_bytes == len(block)  # every line "Name: value" CRLF
    with_connection = _heads.parse_head(_head(b"GET / HTTP/1.1", b"Host: a", b"Connection: keep-alive", b"Accept: */*"))
    assert with_connection is not None and with_connection[3] is None and with_connection[9] == 3
    assert with_connection[4] == [(b"Connection", b"keep-alive")]
    assert with_connection[8] == b"Host: a\r\nAccept: */*\r\n"
    assert block_fields(with_connection[8]) == [(b"Host", b"a"), (b"Accept", b"*/*")]
    with_te = _heads.parse_head(_head(b"GET / HTTP/1.1", b"Host: a", b"Connection: te", b"TE: trailers"))
    assert with_te is not None and with_te[4] is None and with_te[3] is not None and len(with_te[3]) == 3
    assert with_te[8] == b""
    unspaced = _heads.parse_head(_head(b"GET / HTTP/1.1", b"Host:a"))
    assert unspaced is not None and unspaced[3] == [(b"Host", b"a")] and unspaced[4] == [] and unspaced[8] == b""
    fieldless = _heads.parse_head(b"GET / HTTP/1.0\r\n\r\n")
    assert fieldless is not None and fieldless[3] is None and fieldless[8] == b"" and fieldless[9] == 0


def test_block_fields_reads_lines_of_the_form_name_colon_space_value() -> None:
    assert block_fields(b"") == []
    assert block_fields(b"A: b: c\r\nX-Y: 1\r\n") == [(b"A", b"b: c"), (b"X-Y", b"1")]
    for bad in (b"A: b", b"A:b\r\n", b"A b\r\n"):
        with pytest.raises(ValueError):
            block_fields(bad)


def test_every_byte_anywhere_in_a_long_value_reads_as_httptools_reads_it() -> None:
    """_heads.c checks values eight bytes at a time: each byte value, at each place in a
    word (and across two), is accepted or left to httptools exactly as one byte at a time."""
    assert _heads is not None
    for at in range(17):
        for byte in range(256):
            value = bytearray(b"abcdefghijklmnopqrstuvwxyz012345")
            value[at] = byte
            data = _head(b"GET / HTTP/1.1", b"Host: a", b"X-Long: " + bytes(value), b"Accept: */*")
            parsed = _heads.parse_head(data)
            if parsed is not None:
                assert _materialized(parsed) == _httptools(data), data
            elif 0x20 <= byte <= 0x7E:
                raise AssertionError(f"a plain value byte {byte:#x} at {at} was refused")


# -- http2_head: an HTTP/2 request's header list, parsed as its HTTP/1.1 head would be ------

_BROWSER_H2 = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"shop.example.com"),
    (b":path", b"/catalog/item-42?ref=home&page=2"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"),
    (b"accept", b"text/html,application/xhtml+xml,*/*;q=0.8"),
    (b"accept-language", b"en-GB,en;q=0.9"),
    (b"cookie", b"session=8f2a9c"),
    (b"referer", b"https://shop.example.com/"),
    (b"cookie", b"theme=dark"),
]


def _as_http1(headers: Fields) -> Parsed | None:
    """What parse_head reads from the HTTP/1.1 head proto.h2_message writes for `headers`;
    None when request_head refuses them (the stream is reset) or parse_head leaves that head
    to httptools."""
    try:
        head = request_head(headers, True)
    except MalformedRequest:
        return None
    return _materialized(_heads.parse_head(head.head))


def test_an_http2_request_is_parsed_as_the_head_written_for_it_would_be() -> None:
    parsed = _heads.http2_head(_BROWSER_H2)
    assert parsed is not None
    assert parsed == _as_http1(_BROWSER_H2)
    method, url, version, fields, hop, host, host_count, _, block, count = parsed
    assert fields is not None and count == len(fields)
    assert (method, url, version, hop, host, host_count) == (
        b"GET",
        b"/catalog/item-42?ref=home&page=2",
        "1.1",
        [],
        b"shop.example.com",
        1,
    )
    assert fields[0] == (b"host", b"shop.example.com")
    assert fields[-1] == (b"cookie", b"session=8f2a9c; theme=dark")  # RFC 9113 8.2.3
    assert block.startswith(b"host: shop.example.com\r\nuser-agent: Mozilla")


def _replaced(name: bytes, value: bytes) -> Fields:
    """The browser's request with the first field `name` given `value` (or it added last)."""
    headers = list(_BROWSER_H2)
    at = next((i for i, (n, _) in enumerate(headers) if n == name), len(headers))
    headers[at : at + 1] = [(name, value)]
    return headers


@pytest.mark.parametrize(
    "headers",
    [
        _replaced(b":method", b"POST"),  # a body may follow: request_head adds content-length
        _replaced(b":path", b"*"),
        _replaced(b":path", b"http://a/b"),
        _replaced(b":path", b"/a b"),
        _replaced(b":authority", b"a b"),
        [_BROWSER_H2[0], (b":protocol", b"websocket"), *_BROWSER_H2[1:]],
        [_BROWSER_H2[0], *_BROWSER_H2],  # :method twice
        _replaced(b"te", b"trailers"),
        _replaced(b"x-forwarded-for", b"10.0.0.1"),
        _replaced(b"content-length", b"0"),
        _replaced(b"connection", b"close"),
        _replaced(b"Accept", b"*/*"),  # not lower case
        _replaced(b"accept", b""),
        _replaced(b"accept", b" x"),
        _replaced(b"accept", b"x\t"),
        _replaced(b"accept", b"caf\xc3\xa9"),
        _replaced(b"accept", b"a\x01b"),
    ],
)
def test_an_unusual_http2_request_is_left_to_its_http1_head(headers: Fields) -> None:
    assert _heads.http2_head(headers) is None


def test_a_pseudo_header_field_after_a_regular_one_is_left_to_request_head_which_refuses_it() -> None:
    headers = [*_BROWSER_H2[:3], (b"accept", b"*/*"), _BROWSER_H2[3]]
    assert _heads.http2_head(headers) is None
    with pytest.raises(MalformedRequest):
        request_head(headers, True)


def test_random_http2_requests_are_parsed_as_their_http1_heads_or_left_to_them() -> None:
    """Whatever C takes, request_head accepts and parse_head reads the same from its head."""
    rng = random.Random(29)
    names = [b":method", b":scheme", b":authority", b":path", b":protocol", b"host", b"cookie", b"accept"]
    names += [b"te", b"x-forwarded-proto", b"content-length", b"upgrade", b"x-id", b"X-Id", b"a b", b""]
    values = [b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"PUT", b"https", b"/", b"/p?q=1", b"*", b"a.example"]
    values += [b"", b" ", b"v\t", b"a\x00b", b"a\r\nb", b"\xff", b"trailers", b"x y", b"0", b"/a#b"]
    taken = 0
    for _ in range(4000):
        headers = [(b":method", rng.choice(values[:5])), (b":scheme", b"https"), (b":path", rng.choice(values[6:9]))]
        for _ in range(rng.randrange(6)):
            headers.insert(rng.randrange(len(headers) + 1), (rng.choice(names), rng.choice(values)))
        parsed = _heads.http2_head(headers)
        if parsed is not None:
            taken += 1
            assert parsed == _as_http1(headers), headers
    assert taken > 200  # the generator makes plain requests too


def test_a_hundred_http2_fields_are_taken_more_are_left_to_the_http1_head() -> None:
    pseudo = _BROWSER_H2[:4]  # :authority makes the Host line: 99 more fields make 100
    fields = [(b"x-f%d" % n, b"v") for n in range(99)]
    assert _heads.http2_head([*pseudo, *fields]) == _as_http1([*pseudo, *fields])
    assert _heads.http2_head([*pseudo, *fields, (b"x-last", b"v")]) is None
