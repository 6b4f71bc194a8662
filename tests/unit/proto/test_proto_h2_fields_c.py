"""proto/_h2_fields.c translates an HTTP/1.1 response head (and trailer section) for an
HTTP/2 client exactly as proto/h2_message's Python does: the HPACK block it writes decodes
(with the PyPI hpack package, an independent decoder) to the header list the Python makes,
for the usual heads, for every edge case (no colon, no space, tabs, empty values, upper-case
names, each connection-specific name in mixed case) and for thousands of random ones; it
leaves the decoder's dynamic table empty and marks secrets never indexed. The trailer
fields are the Python's, trailer fields a trailer section must not carry dropped."""

from __future__ import annotations

import random

import hpack
import pytest
from tests.support.tools import require_built

from balancer.proto.h2_message import CONNECTION_SPECIFIC, response_headers, response_trailers

try:
    from balancer.proto import _h2_fields
except ImportError:  # a BALANCER_PURE=1 build has no C module
    _h2_fields = None  # type: ignore[assignment]

require_built(_h2_fields, "proto/_h2_fields")

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


def _decoded(block: bytes) -> list[tuple[bytes, bytes]]:
    """The block as a fresh client decodes it; its dynamic table must stay empty."""
    decoder = hpack.Decoder()
    fields = [(bytes(name), bytes(value)) for name, value in decoder.decode(block, raw=True)]
    assert len(decoder.header_table.dynamic_entries) == 0
    return fields


@pytest.mark.parametrize("lines", CASES)
@pytest.mark.parametrize("status", [200, 204, 301, 404, 503, 99, 600, 1000])
def test_a_response_head_encodes_the_list_the_python_makes(status: int, lines: bytes) -> None:
    assert _decoded(_h2_fields.response_block(status, lines)) == response_headers(status, lines)


def test_a_usual_head_is_indexed_by_the_static_table_and_secrets_are_never_indexed() -> None:
    block = _h2_fields.response_block(200, NGINX)
    assert block[:1] == b"\x88"  # :status 200, static index 8
    assert b"server" not in block and b"content-type" not in block  # names by static index
    fields = hpack.Decoder().decode(block, raw=True)
    secret = [f for f in fields if f[0] == b"set-cookie"]
    assert secret and all(isinstance(f, hpack.NeverIndexedHeaderTuple) for f in secret)
    assert not any(isinstance(f, hpack.NeverIndexedHeaderTuple) for f in fields if f[0] != b"set-cookie")


# Every name past the pseudo-header fields but those HTTP/2 drops (transfer-encoding).
SENT_STATIC_NAMES = [
    index for index in range(15, 62) if hpack.table.HeaderTable.STATIC_TABLE[index - 1][0] not in CONNECTION_SPECIFIC
]


@pytest.mark.parametrize("index", SENT_STATIC_NAMES)
def test_every_static_table_name_is_sent_by_its_index(index: int) -> None:
    name = hpack.table.HeaderTable.STATIC_TABLE[index - 1][0]
    block = _h2_fields.response_block(200, name.title() + b": v")
    assert _decoded(block) == [(b":status", b"200"), (name, b"v")]
    assert name not in block  # the name by its index, in the block's 4-bit prefix or past it
    first = block[1]
    named = first & 0x0F if first & 0x0F != 0x0F else 0x0F + block[2]
    assert named == index


@pytest.mark.parametrize("lines", CASES)
def test_a_trailer_section_translates_as_the_python_does(lines: bytes) -> None:
    assert _h2_fields.response_trailers(lines) == response_trailers(lines)


def test_connection_specific_fields_are_dropped_in_any_case() -> None:
    for name in CONNECTION_SPECIFIC:
        for spelled in (name, name.upper(), name.title()):
            lines = b"A: 1\r\n" + spelled + b": x\r\nB: 2"
            assert _decoded(_h2_fields.response_block(200, lines)) == [(b":status", b"200"), (b"a", b"1"), (b"b", b"2")]


def test_long_names_and_values_take_multi_byte_lengths() -> None:
    lines = b"X-" + b"n" * 300 + b": " + b"v" * 20000 + b"\r\nWWW-Authenticate: " + b"w" * 200
    assert _decoded(_h2_fields.response_block(200, lines)) == response_headers(200, lines)


def test_random_heads_translate_as_the_python_does() -> None:
    rng = random.Random(41)
    pieces = [b"Name", b"X-A", b"te", b"TE", b"host", b":", b": ", b"\t", b" ", b"\r\n", b"\r", b"\n", b"v"]
    pieces += [b"Connection", b"content-length", b"Trailer", b"", b"\xff", b"a:b", b"Date", b"set-cookie"]
    for _ in range(3000):
        lines = b"".join(rng.choice(pieces) for _ in range(rng.randrange(12)))
        status = rng.choice([100, 200, 204, 304, 404, 599, 0, 700])
        assert _decoded(_h2_fields.response_block(status, lines)) == response_headers(status, lines), lines
        assert _h2_fields.response_trailers(lines) == response_trailers(lines), lines


def test_put_frame_appends_what_the_python_reference_appends():
    from balancer.proto.h2_connection import _put_frame_python

    rng = random.Random(7)
    for _ in range(2000):
        kind, flags = rng.randrange(256), rng.randrange(256)
        stream_id = rng.choice([0, 1, 255, 256, 65537, 0x7FFFFFFF, rng.randrange(1 << 31)])
        payload = rng.randbytes(rng.choice([0, 1, 9, 300, 16384, 70000]))
        prefix = rng.randbytes(rng.randrange(20))
        ours, reference = bytearray(prefix), bytearray(prefix)
        _h2_fields.put_frame(ours, kind, flags, stream_id, payload)
        _put_frame_python(reference, kind, flags, stream_id, payload)
        assert ours == reference
        head = ours[len(prefix) : len(prefix) + 9]
        assert int.from_bytes(head[:3], "big") == len(payload) and head[3:5] == bytes([kind, flags])
        assert int.from_bytes(head[5:], "big") == stream_id and ours.endswith(payload)


@pytest.mark.parametrize(
    ("kind", "flags", "stream_id", "size"),
    [(256, 0, 1, 0), (-1, 0, 1, 0), (0, 256, 1, 0), (0, 0, -1, 0), (0, 0, 1 << 31, 0), (0, 0, 1, 1 << 24)],
)
def test_put_frame_refuses_what_no_frame_can_carry(kind, flags, stream_id, size):
    out = bytearray(b"kept")
    with pytest.raises(ValueError):
        _h2_fields.put_frame(out, kind, flags, stream_id, bytes(size))
    assert out == b"kept"  # nothing appended


def test_put_frame_refuses_other_types():
    with pytest.raises(TypeError):
        _h2_fields.put_frame(b"not a bytearray", 0, 0, 1, b"")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _h2_fields.put_frame(bytearray(), 0, 0, 1, "text")  # type: ignore[arg-type]
