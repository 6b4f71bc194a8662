"""HPACK, the header compression of HTTP/2 (RFC 7541), sans I/O: a decoder and an encoder.

One `HpackDecoder` per connection reads the header blocks the peer sends (HEADERS plus its
CONTINUATION fragments, joined by the caller) and one `HpackEncoder` writes ours; each keeps
its side's dynamic table, so every block of a connection must go through the same object in
the order of the wire. Names and values are bytes as sent: no lower-casing, no validation of
field content (the HTTP/2 layer above checks names and values).

Written for mypyc (listed in native.py): loops over bytes with int arithmetic, tables built
once at import. Huffman strings are decoded four bits at a time through a state machine made
from the RFC's code table (a state is a node of the code tree; a step follows four bits from
it and says the node reached, whether a symbol was completed and which, and whether the
bits consumed so far could legally end the string); the loop runs in C (proto/_huffman.c)
where it is built, since compiled Python boxes every symbol. The encoder writes strings
raw, never Huffman-coded: the cheapest to produce, and a response's repeated fields cost
one byte each from the dynamic table anyway.

Use (the HTTP/2 connection): `HpackDecoder(max_table_size=<our SETTINGS_HEADER_TABLE_SIZE>,
max_header_list_size=<our SETTINGS_MAX_HEADER_LIST_SIZE>).decode(bytes(block))` per header
block, HpackError being a connection error (COMPRESSION_ERROR) and HeaderListTooLarge one of
the stream only; `HpackEncoder().set_max_table_size(<the peer's SETTINGS_HEADER_TABLE_SIZE>)`
whenever its SETTINGS arrive, `encode(fields)` per block (names lower case).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, cast

from mypy_extensions import i64

try:
    from balancer.proto import _huffman  # the Huffman decoding loop in C (proto/_huffman.c)
except ImportError:  # built without a C compiler (BALANCER_PURE=1): huffman_decode below
    _huffman = None  # type: ignore[assignment]


class HpackError(Exception):
    """A header block that cannot be decoded (COMPRESSION_ERROR): the connection must end,
    as its dynamic table can no longer be trusted."""


class HeaderListTooLarge(HpackError):
    """The decoded header list is past max_header_list_size. The whole block was still
    decoded, so the dynamic table is in step with the peer: the caller may refuse only the
    stream (a 431 or RST_STREAM) and keep the connection."""


# RFC 7541 Appendix A; index i of the protocol is STATIC_TABLE[i - 1].
STATIC_TABLE: tuple[tuple[bytes, bytes], ...] = (
    (b":authority", b""),  # 1
    (b":method", b"GET"),  # 2
    (b":method", b"POST"),  # 3
    (b":path", b"/"),  # 4
    (b":path", b"/index.html"),  # 5
    (b":scheme", b"http"),  # 6
    (b":scheme", b"https"),  # 7
    (b":status", b"200"),  # 8
    (b":status", b"204"),  # 9
    (b":status", b"206"),  # 10
    (b":status", b"304"),  # 11
    (b":status", b"400"),  # 12
    (b":status", b"404"),  # 13
    (b":status", b"500"),  # 14
    (b"accept-charset", b""),  # 15
    (b"accept-encoding", b"gzip, deflate"),  # 16
    (b"accept-language", b""),  # 17
    (b"accept-ranges", b""),  # 18
    (b"accept", b""),  # 19
    (b"access-control-allow-origin", b""),  # 20
    (b"age", b""),  # 21
    (b"allow", b""),  # 22
    (b"authorization", b""),  # 23
    (b"cache-control", b""),  # 24
    (b"content-disposition", b""),  # 25
    (b"content-encoding", b""),  # 26
    (b"content-language", b""),  # 27
    (b"content-length", b""),  # 28
    (b"content-location", b""),  # 29
    (b"content-range", b""),  # 30
    (b"content-type", b""),  # 31
    (b"cookie", b""),  # 32
    (b"date", b""),  # 33
    (b"etag", b""),  # 34
    (b"expect", b""),  # 35
    (b"expires", b""),  # 36
    (b"from", b""),  # 37
    (b"host", b""),  # 38
    (b"if-match", b""),  # 39
    (b"if-modified-since", b""),  # 40
    (b"if-none-match", b""),  # 41
    (b"if-range", b""),  # 42
    (b"if-unmodified-since", b""),  # 43
    (b"last-modified", b""),  # 44
    (b"link", b""),  # 45
    (b"location", b""),  # 46
    (b"max-forwards", b""),  # 47
    (b"proxy-authenticate", b""),  # 48
    (b"proxy-authorization", b""),  # 49
    (b"range", b""),  # 50
    (b"referer", b""),  # 51
    (b"refresh", b""),  # 52
    (b"retry-after", b""),  # 53
    (b"server", b""),  # 54
    (b"set-cookie", b""),  # 55
    (b"strict-transport-security", b""),  # 56
    (b"transfer-encoding", b""),  # 57
    (b"user-agent", b""),  # 58
    (b"vary", b""),  # 59
    (b"via", b""),  # 60
    (b"www-authenticate", b""),  # 61
)

# (code, length in bits) of symbols 0..255 then EOS (256).
# fmt: off
_HUFFMAN_CODES: tuple[tuple[int, int], ...] = (
    (0x1FF8, 13), (0x7FFFD8, 23), (0xFFFFFE2, 28), (0xFFFFFE3, 28), (0xFFFFFE4, 28), (0xFFFFFE5, 28),  # 0-5
    (0xFFFFFE6, 28), (0xFFFFFE7, 28), (0xFFFFFE8, 28), (0xFFFFEA, 24), (0x3FFFFFFC, 30), (0xFFFFFE9, 28),  # 6-11
    (0xFFFFFEA, 28), (0x3FFFFFFD, 30), (0xFFFFFEB, 28), (0xFFFFFEC, 28), (0xFFFFFED, 28), (0xFFFFFEE, 28),  # 12-17
    (0xFFFFFEF, 28), (0xFFFFFF0, 28), (0xFFFFFF1, 28), (0xFFFFFF2, 28), (0x3FFFFFFE, 30), (0xFFFFFF3, 28),  # 18-23
    (0xFFFFFF4, 28), (0xFFFFFF5, 28), (0xFFFFFF6, 28), (0xFFFFFF7, 28), (0xFFFFFF8, 28), (0xFFFFFF9, 28),  # 24-29
    (0xFFFFFFA, 28), (0xFFFFFFB, 28), (0x14, 6), (0x3F8, 10), (0x3F9, 10), (0xFFA, 12),  # 30-35
    (0x1FF9, 13), (0x15, 6), (0xF8, 8), (0x7FA, 11), (0x3FA, 10), (0x3FB, 10),  # 36-41
    (0xF9, 8), (0x7FB, 11), (0xFA, 8), (0x16, 6), (0x17, 6), (0x18, 6),  # 42-47
    (0x0, 5), (0x1, 5), (0x2, 5), (0x19, 6), (0x1A, 6), (0x1B, 6),  # 48-53
    (0x1C, 6), (0x1D, 6), (0x1E, 6), (0x1F, 6), (0x5C, 7), (0xFB, 8),  # 54-59
    (0x7FFC, 15), (0x20, 6), (0xFFB, 12), (0x3FC, 10), (0x1FFA, 13), (0x21, 6),  # 60-65
    (0x5D, 7), (0x5E, 7), (0x5F, 7), (0x60, 7), (0x61, 7), (0x62, 7),  # 66-71
    (0x63, 7), (0x64, 7), (0x65, 7), (0x66, 7), (0x67, 7), (0x68, 7),  # 72-77
    (0x69, 7), (0x6A, 7), (0x6B, 7), (0x6C, 7), (0x6D, 7), (0x6E, 7),  # 78-83
    (0x6F, 7), (0x70, 7), (0x71, 7), (0x72, 7), (0xFC, 8), (0x73, 7),  # 84-89
    (0xFD, 8), (0x1FFB, 13), (0x7FFF0, 19), (0x1FFC, 13), (0x3FFC, 14), (0x22, 6),  # 90-95
    (0x7FFD, 15), (0x3, 5), (0x23, 6), (0x4, 5), (0x24, 6), (0x5, 5),  # 96-101
    (0x25, 6), (0x26, 6), (0x27, 6), (0x6, 5), (0x74, 7), (0x75, 7),  # 102-107
    (0x28, 6), (0x29, 6), (0x2A, 6), (0x7, 5), (0x2B, 6), (0x76, 7),  # 108-113
    (0x2C, 6), (0x8, 5), (0x9, 5), (0x2D, 6), (0x77, 7), (0x78, 7),  # 114-119
    (0x79, 7), (0x7A, 7), (0x7B, 7), (0x7FFE, 15), (0x7FC, 11), (0x3FFD, 14),  # 120-125
    (0x1FFD, 13), (0xFFFFFFC, 28), (0xFFFE6, 20), (0x3FFFD2, 22), (0xFFFE7, 20), (0xFFFE8, 20),  # 126-131
    (0x3FFFD3, 22), (0x3FFFD4, 22), (0x3FFFD5, 22), (0x7FFFD9, 23), (0x3FFFD6, 22), (0x7FFFDA, 23),  # 132-137
    (0x7FFFDB, 23), (0x7FFFDC, 23), (0x7FFFDD, 23), (0x7FFFDE, 23), (0xFFFFEB, 24), (0x7FFFDF, 23),  # 138-143
    (0xFFFFEC, 24), (0xFFFFED, 24), (0x3FFFD7, 22), (0x7FFFE0, 23), (0xFFFFEE, 24), (0x7FFFE1, 23),  # 144-149
    (0x7FFFE2, 23), (0x7FFFE3, 23), (0x7FFFE4, 23), (0x1FFFDC, 21), (0x3FFFD8, 22), (0x7FFFE5, 23),  # 150-155
    (0x3FFFD9, 22), (0x7FFFE6, 23), (0x7FFFE7, 23), (0xFFFFEF, 24), (0x3FFFDA, 22), (0x1FFFDD, 21),  # 156-161
    (0xFFFE9, 20), (0x3FFFDB, 22), (0x3FFFDC, 22), (0x7FFFE8, 23), (0x7FFFE9, 23), (0x1FFFDE, 21),  # 162-167
    (0x7FFFEA, 23), (0x3FFFDD, 22), (0x3FFFDE, 22), (0xFFFFF0, 24), (0x1FFFDF, 21), (0x3FFFDF, 22),  # 168-173
    (0x7FFFEB, 23), (0x7FFFEC, 23), (0x1FFFE0, 21), (0x1FFFE1, 21), (0x3FFFE0, 22), (0x1FFFE2, 21),  # 174-179
    (0x7FFFED, 23), (0x3FFFE1, 22), (0x7FFFEE, 23), (0x7FFFEF, 23), (0xFFFEA, 20), (0x3FFFE2, 22),  # 180-185
    (0x3FFFE3, 22), (0x3FFFE4, 22), (0x7FFFF0, 23), (0x3FFFE5, 22), (0x3FFFE6, 22), (0x7FFFF1, 23),  # 186-191
    (0x3FFFFE0, 26), (0x3FFFFE1, 26), (0xFFFEB, 20), (0x7FFF1, 19), (0x3FFFE7, 22), (0x7FFFF2, 23),  # 192-197
    (0x3FFFE8, 22), (0x1FFFFEC, 25), (0x3FFFFE2, 26), (0x3FFFFE3, 26), (0x3FFFFE4, 26), (0x7FFFFDE, 27),  # 198-203
    (0x7FFFFDF, 27), (0x3FFFFE5, 26), (0xFFFFF1, 24), (0x1FFFFED, 25), (0x7FFF2, 19), (0x1FFFE3, 21),  # 204-209
    (0x3FFFFE6, 26), (0x7FFFFE0, 27), (0x7FFFFE1, 27), (0x3FFFFE7, 26), (0x7FFFFE2, 27), (0xFFFFF2, 24),  # 210-215
    (0x1FFFE4, 21), (0x1FFFE5, 21), (0x3FFFFE8, 26), (0x3FFFFE9, 26), (0xFFFFFFD, 28), (0x7FFFFE3, 27),  # 216-221
    (0x7FFFFE4, 27), (0x7FFFFE5, 27), (0xFFFEC, 20), (0xFFFFF3, 24), (0xFFFED, 20), (0x1FFFE6, 21),  # 222-227
    (0x3FFFE9, 22), (0x1FFFE7, 21), (0x1FFFE8, 21), (0x7FFFF3, 23), (0x3FFFEA, 22), (0x3FFFEB, 22),  # 228-233
    (0x1FFFFEE, 25), (0x1FFFFEF, 25), (0xFFFFF4, 24), (0xFFFFF5, 24), (0x3FFFFEA, 26), (0x7FFFF4, 23),  # 234-239
    (0x3FFFFEB, 26), (0x7FFFFE6, 27), (0x3FFFFEC, 26), (0x3FFFFED, 26), (0x7FFFFE7, 27), (0x7FFFFE8, 27),  # 240-245
    (0x7FFFFE9, 27), (0x7FFFFEA, 27), (0x7FFFFEB, 27), (0xFFFFFFE, 28), (0x7FFFFEC, 27), (0x7FFFFED, 27),  # 246-251
    (0x7FFFFEE, 27), (0x7FFFFEF, 27), (0x7FFFFF0, 27), (0x3FFFFEE, 26), (0x3FFFFFFF, 30),  # 252-256
)
# fmt: on

STATIC_COUNT: Final = 61
_ENTRY_OVERHEAD: Final = 32  # RFC 7541 4.1, also RFC 9113 6.5.2 for the header list size
# Integers past this are refused: no length, index or table size of ours comes near it.
_INT_LIMIT: Final = 1 << 32
_DEFAULT_TABLE_SIZE: Final = 4096


# -- Huffman decoding ---------------------------------------------------------------------
# Three tables indexed by (state << 4) | nibble: the state reached, the symbol completed (if
# any) and flags. Bytes, not lists: compiled, an index into bytes is a load, an index into
# a list of ints unboxes an object.
_EMIT: Final = 1  # the four bits completed a symbol
_FAIL: Final = 2  # they reached EOS, which must never appear in a string
_ACCEPT: Final = 4  # the string may end here: at most 7 bits pending, all ones


def _build_huffman_decoder() -> tuple[bytes, bytes, bytes]:
    """(next state, symbol, flags) of every (state, nibble). The code tree has 256 internal
    nodes (257 symbols), numbered in order of creation, the root being 0."""
    # children[2 * node + bit]: >= 0 an internal node, < 0 the leaf of symbol -(child + 1)
    children = [0, 0]
    accepting = [True]  # the root: nothing pending
    for symbol, (code, length) in enumerate(_HUFFMAN_CODES):
        node = 0
        for shift in range(length - 1, -1, -1):
            slot = 2 * node + ((code >> shift) & 1)
            if shift == 0:
                children[slot] = -(symbol + 1)
            else:
                if children[slot] == 0:
                    children[slot] = len(accepting)
                    depth = length - shift
                    accepting.append(code >> shift == (1 << depth) - 1 and depth <= 7)
                    children.extend((0, 0))
                node = children[slot]
    states = bytearray(len(accepting) * 16)
    symbols = bytearray(len(accepting) * 16)
    flags = bytearray(len(accepting) * 16)
    for state in range(len(accepting)):
        for nibble in range(16):
            at = (state << 4) | nibble
            node = state
            for shift in (3, 2, 1, 0):
                child = children[2 * node + ((nibble >> shift) & 1)]
                if child >= 0:
                    node = child
                    continue
                if child == -257:  # EOS
                    flags[at] = _FAIL
                    break
                # Every code is at least 5 bits long: four bits complete one symbol at most.
                assert not flags[at] & _EMIT
                flags[at] = _EMIT
                symbols[at] = -(child + 1)
                node = 0
            if not flags[at] & _FAIL:
                states[at] = node
                flags[at] |= _ACCEPT if accepting[node] else 0
    return bytes(states), bytes(symbols), bytes(flags)


_HUFFMAN_TABLES: Final = _build_huffman_decoder()
_HUFFMAN_STATES: Final = _HUFFMAN_TABLES[0]
_HUFFMAN_SYMBOLS: Final = _HUFFMAN_TABLES[1]
_HUFFMAN_FLAGS: Final = _HUFFMAN_TABLES[2]
# Bound once: compiled, a Final is a C static, where `_huffman.decode` is two dict lookups.
_C_HUFFMAN_DECODE: Final[Callable[[bytes, int, int, bytes, bytes, bytes], bytes | None] | None] = (
    _huffman.decode if _huffman is not None else None
)


def huffman_decode(data: bytes, start: i64, end: i64) -> bytes:
    """The string Huffman-coded in data[start:end]. Raises HpackError for EOS in the data
    and for padding longer than 7 bits or not all ones (RFC 7541 5.2). The reference of
    proto/_huffman.c, which the decoder calls first when it is built."""
    states = _HUFFMAN_STATES
    symbols = _HUFFMAN_SYMBOLS
    table_flags = _HUFFMAN_FLAGS
    out: list[int] = []  # then bytes(out): cheaper compiled than bytearray.append, a method call
    state: i64 = 0
    flags: i64 = _ACCEPT
    i: i64 = start
    while i < end:
        byte: i64 = data[i]
        i += 1
        at: i64 = (state << 4) | (byte >> 4)
        flags = table_flags[at]
        if flags & _EMIT:
            out.append(symbols[at])
        elif flags & _FAIL:
            raise HpackError("EOS in a Huffman-coded string")
        at = (i64(states[at]) << 4) | (byte & 0x0F)
        flags = table_flags[at]
        if flags & _EMIT:
            out.append(symbols[at])
        elif flags & _FAIL:
            raise HpackError("EOS in a Huffman-coded string")
        state = states[at]
    if not flags & _ACCEPT:
        raise HpackError("bad padding at the end of a Huffman-coded string")
    return bytes(out)


def huffman_encode(data: bytes) -> bytes:
    """data Huffman-coded (for tests and tools: the encoder writes strings raw)."""
    bits = 0
    count = 0
    out = bytearray()
    for byte in data:
        code, length = _HUFFMAN_CODES[byte]
        bits = (bits << length) | code
        count += length
        while count >= 8:
            count -= 8
            out.append((bits >> count) & 0xFF)
        bits &= (1 << count) - 1
    if count:
        out.append(((bits << (8 - count)) | ((1 << (8 - count)) - 1)) & 0xFF)
    return bytes(out)


# -- Integers and strings -----------------------------------------------------------------


def _read_int_rest(block: bytes, pos: int, value: int) -> tuple[int, int]:
    """The continuation bytes of an integer whose prefix was full (value = the prefix's
    maximum), from block[pos]: (the integer, the position after it). Refuses truncation and
    integers of 2**32 or more (RFC 7541 5.1 leaves the cap to us)."""
    end = len(block)
    shift = 0
    while True:
        if pos >= end:
            raise HpackError("truncated integer")
        byte = block[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if value >= _INT_LIMIT:
            raise HpackError("integer too large")
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 28:  # zero continuation bytes would otherwise go on without bound
            raise HpackError("integer too long")


def _read_string(block: bytes, pos: int) -> tuple[bytes, int]:
    """The string literal at block[pos] (raw or Huffman-coded) and the position after it."""
    if pos >= len(block):
        raise HpackError("truncated string")
    first = block[pos]
    length = first & 0x7F
    pos += 1
    if length == 0x7F:
        length, pos = _read_int_rest(block, pos, length)
    end = pos + length
    if end > len(block):
        raise HpackError("truncated string")
    if first & 0x80:
        if _C_HUFFMAN_DECODE is not None:
            decoded = _C_HUFFMAN_DECODE(block, pos, end, _HUFFMAN_STATES, _HUFFMAN_SYMBOLS, _HUFFMAN_FLAGS)
            if decoded is not None:
                return decoded, end
        return huffman_decode(block, pos, end), end  # the reference: raises, saying why
    return block[pos:end], end


def _write_int(out: bytearray, first: int, prefix_max: int, value: int) -> None:
    """Append an integer with a prefix of prefix_max (2**N - 1) bits; first carries the
    representation's flag bits."""
    if value < prefix_max:
        out.append(first | value)
        return
    out.append(first | prefix_max)
    value -= prefix_max
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


# -- Decoder ------------------------------------------------------------------------------


# The static entries as objects. Compiled, a tuple[bytes, bytes] value is a C struct: taken
# from STATIC_TABLE and appended to a header list it would become a new tuple each time.
# The decoder keeps fields as the tuple objects they are and hands those out.
_STATIC_FIELDS: Final[list[object]] = list(STATIC_TABLE)


def _pair(field: object) -> tuple[bytes, bytes]:
    return cast(tuple[bytes, bytes], field)


class HpackDecoder:
    """Decodes the header blocks of one connection, in order.

    max_table_size is the SETTINGS_HEADER_TABLE_SIZE we advertised: the peer's dynamic table
    size updates may not exceed it. max_header_list_size (settable) bounds the decoded list,
    counted as RFC 9113 6.5.2: name + value + 32 per field.
    """

    def __init__(self, max_table_size: int = _DEFAULT_TABLE_SIZE, max_header_list_size: int = 65536) -> None:
        self.max_table_size = max_table_size
        self.max_header_list_size = max_header_list_size
        # The table's capacity in effect: the last size update, else our advertised maximum.
        self._capacity = max_table_size
        # Entries (name, value) oldest first from _head on; the slots before _head were
        # evicted and are cut off in batches, so an eviction does not move the whole list.
        self._entries: list[object] = []
        self._head = 0
        self._size = 0

    @property
    def table_size(self) -> int:
        """The dynamic table's size as RFC 7541 4.1 counts it."""
        return self._size

    def dynamic_table(self) -> list[tuple[bytes, bytes]]:
        """The dynamic table's entries, newest (index 62) first."""
        return [_pair(field) for field in reversed(self._entries[self._head :])]

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """The header list of one whole header block. Raises HpackError when the block is
        malformed (the connection must then end) and HeaderListTooLarge, after decoding it
        all, when the list is past max_header_list_size."""
        headers: list[object] = []
        end = len(block)
        pos = 0
        listed = 0  # the header list's size so far
        limit = self.max_header_list_size
        fields_seen = False
        field: object
        while pos < end:
            first = block[pos]
            pos += 1
            if first & 0x80:  # indexed field (6.1)
                index = first & 0x7F
                if index == 0x7F:
                    index, pos = _read_int_rest(block, pos, index)
                field = self._field(index)
                pair = _pair(field)
                size = len(pair[0]) + len(pair[1]) + _ENTRY_OVERHEAD
            elif first & 0x20 and not first & 0x40:  # dynamic table size update (6.3)
                if fields_seen:
                    raise HpackError("dynamic table size update after a header field")
                capacity = first & 0x1F
                if capacity == 0x1F:
                    capacity, pos = _read_int_rest(block, pos, capacity)
                if capacity > self.max_table_size:
                    raise HpackError(f"dynamic table size update to {capacity}, past {self.max_table_size}")
                self._capacity = capacity
                self._evict(0)
                continue
            else:
                # literal with incremental indexing (6.2.1, 01 and a 6-bit index), without
                # indexing (6.2.2, 0000 and 4 bits) or never indexed (6.2.3, 0001 and 4 bits)
                indexing = first & 0x40
                prefix_max = 0x3F if indexing else 0x0F
                index = first & prefix_max
                if index == prefix_max:
                    index, pos = _read_int_rest(block, pos, index)
                if index:
                    name = _pair(self._field(index))[0]
                else:
                    name, pos = _read_string(block, pos)
                value, pos = _read_string(block, pos)
                field = (name, value)
                size = len(name) + len(value) + _ENTRY_OVERHEAD
                if indexing:
                    self._add(field, size)
            fields_seen = True
            listed += size
            if listed <= limit:
                headers.append(field)
        if listed > limit:
            raise HeaderListTooLarge(f"header list of {listed} bytes, past {limit}")
        return cast(list[tuple[bytes, bytes]], headers)

    def _field(self, index: int) -> object:
        if index <= STATIC_COUNT:
            if index == 0:
                raise HpackError("index 0")
            return _STATIC_FIELDS[index - 1]
        entries = self._entries
        at = len(entries) - 1 - (index - STATIC_COUNT - 1)
        if at < self._head:
            raise HpackError(f"index {index} past the tables")
        return entries[at]

    def _add(self, field: object, size: int) -> None:
        if size > self._capacity:  # empties the table and is not added (RFC 7541 4.4)
            self._entries = []
            self._head = 0
            self._size = 0
            return
        self._evict(size)
        self._entries.append(field)
        self._size += size

    def _evict(self, room: int) -> None:
        """Evict the oldest entries until `room` more bytes fit in the capacity."""
        entries = self._entries
        head = self._head
        size = self._size
        limit = self._capacity - room
        while size > limit:
            pair = _pair(entries[head])
            size -= len(pair[0]) + len(pair[1]) + _ENTRY_OVERHEAD
            head += 1
        if head > 64 and head * 2 > len(entries):
            del entries[:head]
            head = 0
        self._head = head
        self._size = size


# -- Encoder ------------------------------------------------------------------------------

# Fields whose value changes from one message to the next: indexing them would only push
# the repeated fields out of the table. Written as literals without indexing, their name
# from the static table where it is there. Other names are told apart as they come: the
# first value of a name is indexed, a second different one is not (HpackEncoder).
_NOT_INDEXED: Final = frozenset(
    (
        b":path",
        b"content-length",
        b"date",
        b"etag",
        b"last-modified",
        b"age",
        b"expires",
        b"location",
        b"content-range",
        b"x-request-id",
    )
)
# Secrets: never indexed (6.2.3), so that no intermediary indexes them either and a
# compression oracle (CRIME-style) cannot probe them.
_NEVER_INDEXED: Final = frozenset((b"authorization", b"proxy-authorization", b"cookie", b"set-cookie"))
# The encoder's own ceiling on its dynamic table, whatever larger size the peer allows.
_ENCODER_TABLE_LIMIT: Final = 4096


def _int_bytes(first: int, prefix_max: int, value: int) -> bytes:
    """An integer with a prefix of prefix_max (2**N - 1) bits; first carries the
    representation's flag bits."""
    out = bytearray()
    _write_int(out, first, prefix_max, value)
    return bytes(out)


def _static_exact() -> dict[object, int]:
    """(name, value) -> its static index, for every static entry (the lowest index of a
    field listed twice)."""
    found: dict[object, int] = {}
    for i, field in enumerate(_STATIC_FIELDS):
        if field not in found:
            found[field] = i + 1
    return found


def _static_names() -> dict[bytes, int]:
    """name -> its lowest static index."""
    found: dict[bytes, int] = {}
    for i, field in enumerate(STATIC_TABLE):
        if field[0] not in found:
            found[field[0]] = i + 1
    return found


_STATIC_EXACT: Final = _static_exact()
_STATIC_NAMES: Final = _static_names()
# What starts the literal of a field never put in the table, by name: the representation
# (without indexing or never indexed) with the name's static index, or with the name itself.
_LITERAL_PREFIXES: Final = {
    name: _int_bytes(0x10 if name in _NEVER_INDEXED else 0x00, 0x0F, _STATIC_NAMES.get(name, 0))
    + (b"" if name in _STATIC_NAMES else _int_bytes(0x00, 0x7F, len(name)) + name)
    for name in _NOT_INDEXED | _NEVER_INDEXED
}
# The one-byte encodings: an indexed field 1..126 (0x80 | index), a string length 0..126.
_INDEXED: Final = [bytes((0x80 | index,)) for index in range(0x7F)]
_LENGTHS: Final = [bytes((length,)) for length in range(0x7F)]


class HpackEncoder:
    """Encodes the header blocks of one connection, in order.

    Strategy, speed first: a field equal to a static entry is one byte; a field already in
    the dynamic table is its index; a new field goes in the dynamic table (literal with
    incremental indexing) unless its value changes from message to message (_NOT_INDEXED),
    is a secret (_NEVER_INDEXED), is too large for the table, or its name is already in
    the table with another value (a value that varies: indexing each would churn the table).
    Strings are raw. Names must be lower case already (RFC 9113 8.2.1): none is changed.
    The block is gathered as a list of parts, most of them bytes made once at import.
    """

    def __init__(self) -> None:
        self._capacity = _DEFAULT_TABLE_SIZE  # the size the peer's decoder believes in
        self._size = 0
        # Insertion numbers count from 0; the newest, _inserted - 1, is index 62.
        self._inserted = 0
        # field -> its static index (> 0), or -(1 + its insertion number) in the dynamic table
        self._known: dict[object, int] = dict(_STATIC_EXACT)
        self._names: dict[bytes, int] = {}  # name -> the insertion number of its newest entry
        self._order: list[object] = []  # live entries (name, value) oldest first, from _head
        self._head = 0
        self._pending_min = -1  # the smallest capacity since the last block; -1: no update due

    def set_max_table_size(self, size: int) -> None:
        """The peer's SETTINGS_HEADER_TABLE_SIZE. The table shrinks at once when needed and
        the next block starts with the size update(s) RFC 7541 4.2 asks for."""
        capacity = min(size, _ENCODER_TABLE_LIMIT)
        if capacity == self._capacity:
            return
        self._capacity = capacity
        if self._pending_min < 0 or capacity < self._pending_min:
            self._pending_min = capacity
        self._evict(0)

    def size_updates(self) -> bytes:
        """What the next header block must start with: the dynamic table size update(s) owed
        since the last block (RFC 7541 4.2), or b"". A block made elsewhere, without this
        table (proto/_h2_fields), goes after them."""
        if self._pending_min < 0:
            return b""
        update = _int_bytes(0x20, 0x1F, self._capacity)
        if self._pending_min < self._capacity:
            update = _int_bytes(0x20, 0x1F, self._pending_min) + update
        self._pending_min = -1
        return update

    def encode(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        """One header block for `headers` (name, value), in order."""
        parts: list[bytes] = []
        if self._pending_min >= 0:
            parts.append(self.size_updates())
        known = self._known
        literal_prefixes = _LITERAL_PREFIXES
        # Objects, not tuple[bytes, bytes]: compiled, the latter is a C struct that a dict
        # lookup would turn back into a new tuple.
        for item in cast(list[object], headers):
            where = known.get(item, 0)
            if where != 0:
                index = where if where > 0 else STATIC_COUNT + self._inserted + 1 + where
                parts.append(_INDEXED[index] if index < 0x7F else _int_bytes(0x80, 0x7F, index))
                continue
            field = _pair(item)
            prefix = literal_prefixes.get(field[0])
            if prefix is None:
                self._encode_new(parts, item)
                continue
            parts.append(prefix)
            value = field[1]
            length = len(value)
            parts.append(_LENGTHS[length] if length < 0x7F else _int_bytes(0x00, 0x7F, length))
            parts.append(value)
        return b"".join(parts)

    def _encode_new(self, parts: list[bytes], item: object) -> None:
        """A field in no table, whose name is in neither _NOT_INDEXED nor _NEVER_INDEXED:
        indexed now unless too large or its name is in the table with another value."""
        field = _pair(item)
        name = field[0]
        value = field[1]
        name_index = _STATIC_NAMES.get(name, 0)
        newest = self._names.get(name, -1)
        if name_index == 0 and newest >= 0:
            name_index = STATIC_COUNT + self._inserted - newest
        index_it = newest < 0 and (len(name) + len(value) + _ENTRY_OVERHEAD) * 4 <= self._capacity * 3
        if index_it:
            parts.append(_int_bytes(0x40, 0x3F, name_index))
        else:
            parts.append(_int_bytes(0x00, 0x0F, name_index))
        if name_index == 0:
            parts.append(_int_bytes(0x00, 0x7F, len(name)))
            parts.append(name)
        parts.append(_int_bytes(0x00, 0x7F, len(value)))
        parts.append(value)
        if index_it:
            self._add(item, name, len(name) + len(value) + _ENTRY_OVERHEAD)

    def _add(self, item: object, name: bytes, size: int) -> None:
        self._evict(size)
        number = self._inserted
        self._inserted = number + 1
        self._order.append(item)
        self._known[item] = -1 - number
        self._names[name] = number
        self._size += size

    def _evict(self, room: int) -> None:
        """Evict the oldest entries until `room` more bytes fit, as the peer's decoder will."""
        order = self._order
        head = self._head
        size = self._size
        limit = self._capacity - room
        while size > limit and head < len(order):
            item = order[head]
            field = _pair(item)
            size -= len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD
            number = self._inserted - (len(order) - head)
            if self._known.get(item, 0) == -1 - number:
                del self._known[item]
            if self._names.get(field[0], -1) == number:
                del self._names[field[0]]
            head += 1
        if head > 64 and head * 2 > len(order):
            del order[:head]
            head = 0
        self._head = head
        self._size = size
