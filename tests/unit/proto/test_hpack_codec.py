"""Our HPACK codec (RFC 7541): the RFC's Appendix C examples as vectors, round trips with the
PyPI `hpack` package in both directions (Huffman on and off), every malformed block refused
with HpackError, the header list size limit, and the encoder's table handling."""

from __future__ import annotations

import random

import hpack
import pytest

from balancer.proto import hpack_codec
from balancer.proto.hpack_codec import (
    STATIC_TABLE,
    HeaderListTooLarge,
    HpackDecoder,
    HpackEncoder,
    HpackError,
    huffman_decode,
    huffman_encode,
)

Fields = list[tuple[bytes, bytes]]


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# RFC 7541 C.3 / C.4: three requests on one connection.
REQUESTS: list[Fields] = [
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"www.example.com")],
    [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", b"/"),
        (b":authority", b"www.example.com"),
        (b"cache-control", b"no-cache"),
    ],
    [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":path", b"/index.html"),
        (b":authority", b"www.example.com"),
        (b"custom-key", b"custom-value"),
    ],
]
REQUEST_TABLES: list[Fields] = [
    [(b":authority", b"www.example.com")],
    [(b"cache-control", b"no-cache"), (b":authority", b"www.example.com")],
    [(b"custom-key", b"custom-value"), (b"cache-control", b"no-cache"), (b":authority", b"www.example.com")],
]
C3 = [
    "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
    "8286 84be 5808 6e6f 2d63 6163 6865",
    "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
]
C4 = [
    "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
    "8286 84be 5886 a8eb 1064 9cbf",
    "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
]

# RFC 7541 C.5 / C.6: three responses with a 256-byte table, entries evicted.
COOKIE = b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
DATE1 = b"Mon, 21 Oct 2013 20:13:21 GMT"
DATE2 = b"Mon, 21 Oct 2013 20:13:22 GMT"
LOCATION = b"https://www.example.com"
RESPONSES: list[Fields] = [
    [(b":status", b"302"), (b"cache-control", b"private"), (b"date", DATE1), (b"location", LOCATION)],
    [(b":status", b"307"), (b"cache-control", b"private"), (b"date", DATE1), (b"location", LOCATION)],
    [
        (b":status", b"200"),
        (b"cache-control", b"private"),
        (b"date", DATE2),
        (b"location", LOCATION),
        (b"content-encoding", b"gzip"),
        (b"set-cookie", COOKIE),
    ],
]
RESPONSE_TABLES: list[Fields] = [
    [(b"location", LOCATION), (b"date", DATE1), (b"cache-control", b"private"), (b":status", b"302")],
    [(b":status", b"307"), (b"location", LOCATION), (b"date", DATE1), (b"cache-control", b"private")],
    [(b"set-cookie", COOKIE), (b"content-encoding", b"gzip"), (b"date", DATE2)],
]
RESPONSE_SIZES = [222, 222, 215]
C5 = [
    "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32"
    " 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
    "4803 3330 37c1 c0bf",
    "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970"
    " 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61"
    " 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
]
C6 = [
    "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad"
    " 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
    "4883 640e ffc1 c0bf",
    "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2"
    " e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
]


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572", (b"custom-key", b"custom-header")),
        ("040c 2f73 616d 706c 652f 7061 7468", (b":path", b"/sample/path")),
        ("1008 7061 7373 776f 7264 0673 6563 7265 74", (b"password", b"secret")),
        ("82", (b":method", b"GET")),
    ],
    ids=["C.2.1", "C.2.2", "C.2.3", "C.2.4"],
)
def test_rfc_c2_single_representations(block: str, expected: tuple[bytes, bytes]) -> None:
    decoder = HpackDecoder()
    assert decoder.decode(h(block)) == [expected]
    # Only the literal with incremental indexing (C.2.1) enters the dynamic table.
    assert decoder.dynamic_table() == ([expected] if block.startswith("40") else [])
    assert decoder.table_size == (55 if block.startswith("40") else 0)


@pytest.mark.parametrize("blocks", [C3, C4], ids=["C.3 raw", "C.4 Huffman"])
def test_rfc_requests_share_the_decoders_table(blocks: list[str]) -> None:
    decoder = HpackDecoder()
    for block, expected, table, size in zip(blocks, REQUESTS, REQUEST_TABLES, [57, 110, 164], strict=True):
        assert decoder.decode(h(block)) == expected
        assert decoder.dynamic_table() == table
        assert decoder.table_size == size


@pytest.mark.parametrize("blocks", [C5, C6], ids=["C.5 raw", "C.6 Huffman"])
def test_rfc_responses_evict_from_a_256_byte_table(blocks: list[str]) -> None:
    decoder = HpackDecoder(max_table_size=256)
    for block, expected, table, size in zip(blocks, RESPONSES, RESPONSE_TABLES, RESPONSE_SIZES, strict=True):
        assert decoder.decode(h(block)) == expected
        assert decoder.dynamic_table() == table
        assert decoder.table_size == size


def test_encoder_writes_the_rfc_c3_requests_byte_for_byte() -> None:
    """Raw strings and incremental indexing of new fields: the RFC's own choices in C.3."""
    encoder = HpackEncoder()
    for headers, block in zip(REQUESTS, C3, strict=True):
        assert encoder.encode(headers) == h(block)


def test_huffman_of_every_byte_value_and_the_rfc_strings() -> None:
    every = bytes(range(256))
    assert huffman_decode(huffman_encode(every), 0, len(huffman_encode(every))) == every
    assert huffman_encode(b"www.example.com") == h("f1e3 c2e5 f23a 6ba0 ab90 f4ff")
    assert huffman_encode(b"no-cache") == h("a8eb 1064 9cbf")
    assert huffman_encode(COOKIE) == hpack.huffman.HuffmanEncoder(
        hpack.huffman_constants.REQUEST_CODES, hpack.huffman_constants.REQUEST_CODES_LENGTH
    ).encode(COOKIE)


def _random_headers(rng: random.Random, names: list[bytes], values: list[bytes]) -> Fields:
    headers: Fields = []
    for _ in range(rng.randrange(0, 14)):
        if rng.random() < 0.3:
            headers.append(STATIC_TABLE[rng.randrange(len(STATIC_TABLE))])
            continue
        name = rng.choice(names)
        if rng.random() < 0.5:
            value = rng.choice(values)
        else:
            value = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300 if rng.random() < 0.1 else 30)))
        headers.append((name, value))
    return headers


NAMES = [
    b"content-type",
    b"server",
    b"date",
    b"content-length",
    b"etag",
    b"cookie",
    b"set-cookie",
    b"authorization",
    b"x-custom",
    b"x-trace-id",
    b"vary",
    b"cache-control",
    b"x-" + b"long" * 40,
]
VALUES = [b"", b"text/html", b"gzip", b"no-cache", b"1234", b"a" * 200, bytes(range(256))]


@pytest.mark.parametrize("seed", range(4))
def test_our_encoder_is_read_by_pypi_hpack(seed: int) -> None:
    rng = random.Random(seed)
    encoder = HpackEncoder()
    decoder = hpack.Decoder()
    for round_ in range(150):
        if round_ % 40 == 39:  # the peer changes its SETTINGS_HEADER_TABLE_SIZE
            size = rng.choice([0, 64, 256, 4096, 65536])
            encoder.set_max_table_size(size)
            decoder.max_allowed_table_size = size
        headers = _random_headers(rng, NAMES, VALUES)
        assert decoder.decode(encoder.encode(headers), raw=True) == headers


@pytest.mark.parametrize("huffman", [True, False], ids=["huffman", "raw"])
def test_pypi_hpack_encoder_is_read_by_ours(huffman: bool) -> None:
    rng = random.Random(7)
    encoder = hpack.Encoder()
    decoder = HpackDecoder()
    for round_ in range(300):
        if round_ % 100 == 99:
            encoder.header_table_size = rng.choice([0, 100, 4096])
        headers = _random_headers(rng, NAMES, VALUES)
        sensitive = [hpack.NeverIndexedHeaderTuple(n, v) if n == b"cookie" else (n, v) for n, v in headers]
        assert decoder.decode(encoder.encode(sensitive, huffman=huffman)) == headers


def test_encoder_repeats_a_response_in_a_few_bytes() -> None:
    """The second identical-looking response costs one byte per repeated field; the fields
    that change every response stay out of the table and leave it as it was."""
    encoder = HpackEncoder()

    def response(n: int) -> Fields:
        return [
            (b":status", b"200"),
            (b"content-type", b"text/html"),
            (b"server", b"balancer"),
            (b"date", b"Fri, 04 Dec 2026 20:%02d:00 GMT" % n),
            (b"content-length", b"%d" % (1000 + n)),
            (b"x-request-id", b"%032x" % n),
        ]

    encoder.encode(response(0))
    second = encoder.encode(response(1))
    # :status 200, content-type, server: one byte each; date, content-length, x-request-id:
    # name index + raw value.
    assert second[:3] == h("88 bf be")
    # date and content-length: 2-byte static name index + length + value; x-request-id:
    # literal name, not indexed.
    assert len(second) == 3 + (2 + 1 + 29) + (2 + 1 + 4) + (1 + 1 + 12 + 1 + 32)
    pair = HpackEncoder()
    decoder = HpackDecoder()
    for n in range(5):
        assert decoder.decode(pair.encode(response(n))) == response(n)
    assert decoder.dynamic_table() == [(b"server", b"balancer"), (b"content-type", b"text/html")]


def test_secrets_are_never_indexed() -> None:
    encoder = HpackEncoder()
    block = encoder.encode([(b"authorization", b"Basic c2VjcmV0"), (b"cookie", b"sid=1")])
    decoder = hpack.Decoder()
    decoded = decoder.decode(block, raw=True)
    assert [type(field).__name__ for field in decoded] == ["NeverIndexedHeaderTuple"] * 2
    assert len(decoder.header_table.dynamic_entries) == 0


def test_encoder_signals_a_smaller_table_then_the_final_size() -> None:
    encoder = HpackEncoder()
    encoder.encode([(b"x-a", b"1")])
    encoder.set_max_table_size(0)
    encoder.set_max_table_size(100)
    block = encoder.encode([(b"x-a", b"1")])
    # Two updates (RFC 7541 4.2): the smallest size in between (0), then the final (100).
    assert block[:3] == h("20 3f 45")
    decoder = HpackDecoder()
    assert decoder.decode(encoder.encode([])) == []
    unchanged = HpackEncoder()
    unchanged.set_max_table_size(65536)  # larger than our own ceiling: no update needed
    assert unchanged.encode([(b":status", b"200")]) == h("88")


@pytest.mark.parametrize(
    "block",
    [
        "80",  # index 0
        "be",  # index 62, the dynamic table being empty
        "ff ff ff ff ff 0f",  # integer of 2**32 and more
        "ff 80 80 80 80 80 80 01",  # integer with endless zero continuation bytes
        "ff",  # truncated integer
        "ff 80",  # truncated integer in its continuation
        "41 05 61 62",  # string shorter than its length
        "41",  # string missing
        "41 7f",  # string length truncated
        "41 84 ff ff ff ff",  # Huffman: EOS inside the data
        "41 82 1f ff",  # Huffman: padding past 7 bits
        "41 81 f0",  # Huffman: a code unfinished, padding of ones past 7 bits
        "41 8c f1 e3 c2 e5 f2 3a 6b a0 ab 90 f4 00",  # Huffman: padding not all ones
        "3f e2 1f",  # table size update to 4096 + 1: past our SETTINGS value
        "82 20",  # table size update after a field
    ],
)
def test_malformed_blocks_raise_hpack_error(block: str) -> None:
    with pytest.raises(HpackError):
        HpackDecoder().decode(h(block))


def test_huffman_padding_rules_by_hand() -> None:
    # 'a' is 00011 (5 bits): followed by 111 it is a valid byte, by 110 not, and with one
    # more all-ones byte the padding is 11 bits.
    assert huffman_decode(bytes([0b00011111]), 0, 1) == b"a"
    with pytest.raises(HpackError):
        huffman_decode(bytes([0b00011110]), 0, 1)
    with pytest.raises(HpackError):
        huffman_decode(bytes([0b00011111, 0xFF]), 0, 2)
    assert huffman_decode(b"", 0, 0) == b""


def test_table_size_updates_at_the_start_are_obeyed() -> None:
    decoder = HpackDecoder()
    decoder.decode(h(C3[0]))
    assert decoder.table_size == 57
    # Two updates at the block's start: to 0 (empties the table), then back to 4096.
    assert decoder.decode(h("20 3f e1 1f 82")) == [(b":method", b"GET")]
    assert decoder.dynamic_table() == []
    with pytest.raises(HpackError):
        decoder.decode(h("be"))  # the entry is gone
    small = HpackDecoder(max_table_size=4096)
    small.decode(h("3f 21"))  # 31 + 33 = 64 bytes
    small.decode(h("40 01 61 01 62"))  # 34 bytes: fits
    small.decode(h("40 01 63 01 64"))  # 34 more: evicts a:b
    assert small.dynamic_table() == [(b"c", b"d")]


def test_entry_larger_than_the_table_empties_it() -> None:
    decoder = HpackDecoder(max_table_size=64)
    decoder.decode(h("40 01 61 01 62"))
    # 1 + 32 + 32 = 65 bytes, one past the table.
    assert decoder.decode(h("40 01 61 20" + " 61" * 32)) == [(b"a", b"a" * 32)]
    assert decoder.dynamic_table() == []
    assert decoder.table_size == 0


def test_header_list_size_is_counted_as_rfc_9113() -> None:
    block = HpackEncoder().encode([(b"x-a", b"12345"), (b"x-b", b"6")])
    decoder = HpackDecoder(max_header_list_size=(3 + 5 + 32) + (3 + 1 + 32))
    assert decoder.decode(block) == [(b"x-a", b"12345"), (b"x-b", b"6")]
    decoder = HpackDecoder(max_header_list_size=(3 + 5 + 32) + (3 + 1 + 32) - 1)
    with pytest.raises(HeaderListTooLarge):
        decoder.decode(block)
    # The block was decoded whole: the table holds both fields, as the peer's encoder
    # believes, so the connection can go on.
    assert decoder.dynamic_table() == [(b"x-b", b"6"), (b"x-a", b"12345")]
    decoder.max_header_list_size = 1000
    follow = HpackEncoder()
    follow.encode([(b"x-a", b"12345"), (b"x-b", b"6")])
    assert decoder.decode(follow.encode([(b"x-a", b"12345")])) == [(b"x-a", b"12345")]


def test_tables_match_the_rfc_as_pypi_hpack_transcribes_it() -> None:
    assert STATIC_TABLE == hpack.table.HeaderTable.STATIC_TABLE
    codes = hpack.huffman_constants.REQUEST_CODES
    lengths = hpack.huffman_constants.REQUEST_CODES_LENGTH
    assert tuple(zip(codes, lengths, strict=True)) == hpack_codec._HUFFMAN_CODES


def test_mutated_and_random_blocks_decode_as_pypi_hpack_or_raise_hpack_error() -> None:
    """Anything else escaping (IndexError, ValueError...) would be a bug of ours; where both
    decoders accept a block, they agree on it."""
    rng = random.Random(3)
    encoder = hpack.Encoder()
    seeds = [
        encoder.encode(
            [(b":method", b"GET"), (b":path", b"/x%d" % n), (b"x-a", rng.randbytes(rng.randrange(40)))],
            huffman=n % 3 != 0,
        )
        for n in range(30)
    ]
    accepted = 0
    for _ in range(3000):
        if rng.random() < 0.3:
            block = rng.randbytes(rng.randrange(40))
        else:
            mutated = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 4)):
                if len(mutated) > 1 and rng.random() < 0.3:
                    del mutated[rng.randrange(1, len(mutated)) :]
                else:
                    mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            block = bytes(mutated)
        try:
            ours: Fields | None = HpackDecoder().decode(block)
        except HpackError:
            ours = None
        try:
            theirs: Fields | None = [(bytes(n), bytes(v)) for n, v in hpack.Decoder().decode(block, raw=True)]
        except hpack.HPACKError:
            theirs = None
        if ours is not None and theirs is not None:
            assert ours == theirs, block.hex()
            accepted += 1
    assert accepted > 100  # 142 with this seed
