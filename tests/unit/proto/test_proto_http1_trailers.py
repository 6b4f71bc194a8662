"""proto.http1.last_chunk: the end of a chunked response, trailer fields included, found in
the last bytes read of it."""

from __future__ import annotations

import pytest

from balancer.proto.http1 import LAST_CHUNK, TRAILER_TAIL, last_chunk


def test_trailer_fields_pass_as_received_but_framing_host_and_hop_by_hop_ones() -> None:
    tail = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
        b"0\r\nGrpc-Status: 0\r\nConnection: close\r\nTrailer: x\r\nHost: h\r\nX-Sum: a b\r\n\r\n"
    )
    assert last_chunk(tail) == b"0\r\nGrpc-Status: 0\r\nX-Sum: a b\r\n\r\n"


@pytest.mark.parametrize(
    "tail",
    [
        b"abc\r\n0\r\n\r\n",  # no trailers
        b"abc\r\n000;ext=1\r\n\r\n",  # zeros and an extension
        b"0: x\r\n0\r\n\r\n",  # chunk data that looks like a field: the last-chunk line is nearer the end
    ],
)
def test_an_empty_trailer_section_gives_the_plain_last_chunk(tail: bytes) -> None:
    assert last_chunk(tail) == LAST_CHUNK


def test_a_field_whose_name_starts_with_zeros_is_a_field() -> None:
    assert last_chunk(b"x\r\n0\r\n00a: 1\r\n\r\n") == b"0\r\n00a: 1\r\n\r\n"


@pytest.mark.parametrize(
    "tail",
    [
        b"name:0\r\n\r\n",  # the tail starts inside a trailer line: no last-chunk line in it
        b"0\r\n\r\n",  # no CRLF before the last-chunk line: it may be the end of a longer line
        b"0\r\nA: 1\r\n",  # not the end of a message
    ],
)
def test_a_tail_without_the_whole_section_gives_none(tail: bytes) -> None:
    assert last_chunk(tail) is None


def test_a_section_larger_than_what_is_kept_gives_none() -> None:
    section = b"x\r\n0\r\n" + b"X-Big: " + b"v" * TRAILER_TAIL + b"\r\n\r\n"
    assert last_chunk(section[-TRAILER_TAIL:]) is None
