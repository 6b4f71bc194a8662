"""The [peers] wire format: frames round-trip, and what is not the protocol is refused."""

from __future__ import annotations

import os

import pytest

from balancer.proto import peers as wire


def _frames(data: bytes, chunk: int) -> list[wire.Frame]:
    decoder = wire.FrameDecoder()
    frames: list[wire.Frame] = []
    for at in range(0, len(data), chunk):
        decoder.feed(data[at : at + chunk])
        while (frame := decoder.next()) is not None:
            frames.append(frame)
    return frames


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_frames_cut_anywhere_come_out_whole_and_in_order(chunk: int) -> None:
    entries = [wire.StickUpdate("web", bytes([10, 1, 0, n]), f"s{n}", n * 1000) for n in range(1, 20)] + [
        wire.StickUpdate("blog", os.urandom(16), "é-server", 0)
    ]
    nonce = os.urandom(wire.NONCE_SIZE)
    data = wire.hello("10.0.3.11:10000", nonce) + b"".join(wire.update(e) for e in entries) + wire.frame(wire.SYNCED)
    frames = _frames(data, chunk)
    assert frames[0].kind == wire.HELLO and wire.parse_hello(frames[0].payload) == ("10.0.3.11:10000", nonce)
    assert [wire.parse_update(f.payload) for f in frames[1:-1]] == entries
    assert frames[-1] == wire.Frame(wire.SYNCED, b"")


def test_remaining_time_is_clamped_to_the_field() -> None:
    decoder = wire.FrameDecoder()
    decoder.feed(
        wire.update(wire.StickUpdate("t", b"k", "s", 2**40)) + wire.update(wire.StickUpdate("t", b"k", "s", -5))
    )
    first, second = decoder.next(), decoder.next()
    assert first is not None and second is not None
    assert wire.parse_update(first.payload).remaining_ms == wire.MAX_REMAINING_MS
    assert wire.parse_update(second.payload).remaining_ms == 0


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"\x00\x00\x00\x00", "frame length 0"),
        (b"\xff\xff\xff\xff", "frame length"),
        (b"\x00\x00\x00\x01\x63", "unknown frame type 99"),
        (b"GET / HTTP/1.1\r\n\r\n", "frame length"),
    ],
)
def test_garbage_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(wire.PeerProtocolError, match=reason):
        wire.FrameDecoder().feed(data)


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # nothing
        b"\x03web",  # no key
        b"\x03web\x04\x0a\x00\x00\x01\x02s1\x00\x00",  # remaining cut short
        b"\x03web\x04\x0a\x00\x00\x01\x02s1\x00\x00\x00\x01\xff",  # a byte too many
        b"\x00\x04\x0a\x00\x00\x01\x02s1\x00\x00\x00\x01",  # empty table
        b"\x02\xff\xfe\x04\x0a\x00\x00\x01\x02s1\x00\x00\x00\x01",  # table not UTF-8
    ],
)
def test_a_malformed_update_is_refused(payload: bytes) -> None:
    with pytest.raises(wire.PeerProtocolError):
        wire.parse_update(payload)


def test_hello_of_another_protocol_is_refused() -> None:
    with pytest.raises(wire.PeerProtocolError, match="bad magic"):
        wire.parse_hello(b"SSH-2.0-" + bytes(30))


def test_proofs_differ_by_key_by_direction_and_by_nonce() -> None:
    a, b = os.urandom(16), os.urandom(16)
    proof = wire.dial_proof(b"secret", a, b, "10.0.3.11:10000")
    assert proof == wire.dial_proof(b"secret", a, b, "10.0.3.11:10000")
    assert proof != wire.dial_proof(b"other", a, b, "10.0.3.11:10000")
    assert proof != wire.dial_proof(b"secret", b, a, "10.0.3.11:10000")
    assert proof != wire.dial_proof(b"secret", a, b, "10.0.3.12:10000")
    assert wire.accept_proof(b"secret", a, b) != proof


def test_an_over_long_name_cannot_be_encoded() -> None:
    with pytest.raises(wire.PeerProtocolError):
        wire.update(wire.StickUpdate("t" * 256, b"k", "s", 1))
