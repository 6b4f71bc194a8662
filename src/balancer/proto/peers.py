"""The `[peers]` wire format: stick-table entries replicated between the nodes of a pair.

One TCP connection carries one direction. Every node dials every other node named in
`[peers] nodes` and sends its own entries there; it applies what arrives on the
connections it accepted. A pair thus holds two connections, and neither side has to
decide who talks first or break a tie.

A frame is a 4-byte big-endian length (of what follows, at most MAX_FRAME), a 1-byte type
and its payload. Strings and keys are a 1-byte length then the bytes (names in UTF-8).

    HELLO     dialer → acceptor   magic "BALPEER1", the dialer's own `bind` address, nonce (16)
    CHALLENGE acceptor → dialer   nonce (16)
    AUTH      dialer → acceptor   HMAC-SHA256(key, "dial" + acceptor nonce + dialer nonce + address)
    WELCOME   acceptor → dialer   HMAC-SHA256(key, "accept" + dialer nonce + acceptor nonce)
    REFUSED   acceptor → dialer   a reason (UTF-8, then the acceptor closes)
    RESYNC    dialer → acceptor   a full copy of the dialer's tables follows (after every (re)connect)
    SYNCED    dialer → acceptor   the full copy is complete
    UPDATE    dialer → acceptor   table, key, server, remaining lifetime in ms (u32)
    HEARTBEAT either way          nothing; sent when a side had nothing to say for a while

Both sides prove they know `key` (an empty key is still a key: two nodes with different
keys never talk), so a stranger can neither inject entries nor read them. An entry travels
with the time it has left, not a date, so the entry expires alike on both sides whatever
their clocks say (within the link's latency). A key is opaque bytes to the wire (the client
address as the stick table stores it). This module does no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections import deque
from typing import Final, NamedTuple

MAGIC: Final = b"BALPEER1"
NONCE_SIZE: Final = 16
MAX_FRAME: Final = 64 * 1024  # far above any legitimate frame; a larger length is an attack or garbage
MAX_REMAINING_MS: Final = 2**32 - 1

HELLO: Final = 1
CHALLENGE: Final = 2
AUTH: Final = 3
WELCOME: Final = 4
REFUSED: Final = 5
RESYNC: Final = 6
SYNCED: Final = 7
UPDATE: Final = 8
HEARTBEAT: Final = 9
_TYPES: Final = frozenset(range(HELLO, HEARTBEAT + 1))

_LENGTH = struct.Struct(">I")
_REMAINING = struct.Struct(">I")


class PeerProtocolError(ValueError):
    """The bytes are not this protocol (bad length, type, field or magic): close the link."""


class StickUpdate(NamedTuple):
    """One stick-table entry: in `table` (a backend's name), client `key` goes to `server`
    for `remaining_ms` more milliseconds unless used again."""

    table: str
    key: bytes
    server: str
    remaining_ms: int


class Frame(NamedTuple):
    kind: int
    payload: bytes


def frame(kind: int, payload: bytes = b"") -> bytes:
    if len(payload) + 1 > MAX_FRAME:
        raise PeerProtocolError(f"frame of {len(payload) + 1} bytes is over {MAX_FRAME}")
    return _LENGTH.pack(len(payload) + 1) + bytes((kind,)) + payload


def _short(value: bytes, what: str) -> bytes:
    if len(value) > 255:
        raise PeerProtocolError(f"{what} of {len(value)} bytes is over 255")
    return bytes((len(value),)) + value


class _Reader:
    """Reads a payload's fields in order; any shortfall or leftover is a protocol error."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.at = 0

    def take(self, size: int) -> bytes:
        if self.at + size > len(self.payload):
            raise PeerProtocolError("frame ends inside a field")
        value = self.payload[self.at : self.at + size]
        self.at += size
        return value

    def short(self) -> bytes:
        return self.take(self.take(1)[0])

    def text(self) -> str:
        try:
            return self.short().decode()
        except UnicodeDecodeError:
            raise PeerProtocolError("a name is not UTF-8") from None

    def end(self) -> None:
        if self.at != len(self.payload):
            raise PeerProtocolError(f"{len(self.payload) - self.at} bytes after the last field")


# -- encoding ------------------------------------------------------------------------------


def hello(address: str, nonce: bytes) -> bytes:
    return frame(HELLO, MAGIC + _short(address.encode(), "address") + nonce)


def challenge(nonce: bytes) -> bytes:
    return frame(CHALLENGE, nonce)


def dial_proof(key: bytes, acceptor_nonce: bytes, dialer_nonce: bytes, address: str) -> bytes:
    return hmac.new(key, b"dial" + acceptor_nonce + dialer_nonce + address.encode(), hashlib.sha256).digest()


def accept_proof(key: bytes, dialer_nonce: bytes, acceptor_nonce: bytes) -> bytes:
    return hmac.new(key, b"accept" + dialer_nonce + acceptor_nonce, hashlib.sha256).digest()


def update(entry: StickUpdate) -> bytes:
    remaining = min(max(entry.remaining_ms, 0), MAX_REMAINING_MS)
    return frame(
        UPDATE,
        _short(entry.table.encode(), "table name")
        + _short(entry.key, "key")
        + _short(entry.server.encode(), "server name")
        + _REMAINING.pack(remaining),
    )


# -- decoding ------------------------------------------------------------------------------


def parse_hello(payload: bytes) -> tuple[str, bytes]:
    """(the dialer's address, its nonce)."""
    reader = _Reader(payload)
    if reader.take(len(MAGIC)) != MAGIC:
        raise PeerProtocolError("not a balancer peer (bad magic)")
    address = reader.text()
    nonce = reader.take(NONCE_SIZE)
    reader.end()
    return address, nonce


def parse_nonce(payload: bytes) -> bytes:
    reader = _Reader(payload)
    nonce = reader.take(NONCE_SIZE)
    reader.end()
    return nonce


def parse_proof(payload: bytes) -> bytes:
    reader = _Reader(payload)
    proof = reader.take(hashlib.sha256().digest_size)
    reader.end()
    return proof


def parse_update(payload: bytes) -> StickUpdate:
    reader = _Reader(payload)
    table = reader.text()
    key = reader.short()
    server = reader.text()
    (remaining,) = _REMAINING.unpack(reader.take(_REMAINING.size))
    reader.end()
    if not table or not key or not server:
        raise PeerProtocolError("an update with an empty table, key or server")
    return StickUpdate(table, key, server, int(remaining))


class FrameDecoder:
    """Bytes in, whole frames out, in order: `feed` what arrives, `next` the frames it made
    (None when it needs more bytes). Refuses a length of 0 or over MAX_FRAME and an unknown
    type by raising PeerProtocolError (the caller closes the link)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._frames: deque[Frame] = deque()

    def feed(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        at = 0
        while len(buffer) - at >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer, at)
            if length == 0 or length > MAX_FRAME:
                raise PeerProtocolError(f"frame length {length} (1 to {MAX_FRAME})")
            if len(buffer) - at - _LENGTH.size < length:
                break
            start = at + _LENGTH.size
            kind = buffer[start]
            if kind not in _TYPES:
                raise PeerProtocolError(f"unknown frame type {kind}")
            self._frames.append(Frame(kind, bytes(buffer[start + 1 : start + length])))
            at = start + length
        del buffer[:at]

    def next(self) -> Frame | None:
        return self._frames.popleft() if self._frames else None
