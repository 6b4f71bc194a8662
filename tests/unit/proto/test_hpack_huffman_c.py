"""proto/_huffman.c decodes exactly what the Python loop of proto/hpack_codec.py decodes,
and refuses (None) exactly the strings the Python loop refuses with HpackError."""

from __future__ import annotations

import os
import random

import pytest

from balancer.proto import hpack_codec
from balancer.proto.hpack_codec import HpackError, huffman_decode, huffman_encode

_huffman = hpack_codec._huffman
if _huffman is None:  # a BALANCER_PURE=1 build has no C module; CI builds it
    pytestmark = pytest.mark.skipif(
        os.environ.get("BALANCER_PURE") == "1", reason="built with BALANCER_PURE=1: no proto/_huffman"
    )
TABLES = (hpack_codec._HUFFMAN_STATES, hpack_codec._HUFFMAN_SYMBOLS, hpack_codec._HUFFMAN_FLAGS)


def python_loop(data: bytes, start: int, end: int) -> bytes | None:
    try:
        return huffman_decode(data, start, end)
    except HpackError:
        return None


def test_valid_strings_decode_alike() -> None:
    assert _huffman is not None, "proto/_huffman was not built (make native)"
    rng = random.Random(1)
    for length in [0, 1, 2, 5, 17, 100, 700, 5000]:  # 5000: past the C stack buffer
        for _ in range(20):
            text = (
                rng.randbytes(length) if rng.random() < 0.5 else bytes(rng.choice(b"abc/=-?&09") for _ in range(length))
            )
            coded = b"xx" + huffman_encode(text) + b"yy"
            assert _huffman.decode(coded, 2, len(coded) - 2, *TABLES) == text == python_loop(coded, 2, len(coded) - 2)


def test_random_bytes_are_refused_alike() -> None:
    assert _huffman is not None, "proto/_huffman was not built (make native)"
    rng = random.Random(2)
    refused = 0
    for _ in range(3000):
        data = rng.randbytes(rng.randrange(0, 12))
        expected = python_loop(data, 0, len(data))
        refused += expected is None
        assert _huffman.decode(data, 0, len(data), *TABLES) == expected
    assert refused > 100
    for bad in (b"\xff\xff\xff\xff", b"\x1f\xff", b"\x1e", b"\xf1\xe3\xc2\xe5\xf2\x3a\x6b\xa0\xab\x90\xf4\x00"):
        assert _huffman.decode(bad, 0, len(bad), *TABLES) is None


def test_arguments_outside_the_data_raise() -> None:
    assert _huffman is not None, "proto/_huffman was not built (make native)"
    with pytest.raises(ValueError):
        _huffman.decode(b"ab", 1, 3, *TABLES)
    with pytest.raises(ValueError):
        _huffman.decode(b"ab", 0, 2, b"short", TABLES[1], TABLES[2])
    with pytest.raises(TypeError):
        _huffman.decode(bytearray(b"ab"), 0, 2, *TABLES)  # type: ignore[arg-type]
