"""Frame-level tests of proto.h2_connection: bytes in, events and frames out.

Frames are built here with struct and the PyPI hpack package (an oracle, not the code
under test); what the connection writes is read back frame by frame.
"""

from __future__ import annotations

import struct

import hpack
import pytest

from balancer.proto import h2_connection as h2c
from balancer.proto.h2_connection import H2Connection, H2Event
from balancer.proto.hpack_codec import HpackDecoder, HpackEncoder


class Encoder:
    """The client's encoder: PyPI hpack, an oracle independent of the code under test."""

    def __init__(self) -> None:
        self.inner = hpack.Encoder()

    def encode(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        return bytes(self.inner.encode(headers))


REQUEST = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/")]


def frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream_id) + payload


def frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    found = []
    pos = 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 3], "big")
        kind, flags = data[pos + 3], data[pos + 4]
        sid = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
        found.append((kind, flags, sid, bytes(data[pos + 9 : pos + 9 + length])))
        pos += 9 + length
    return found


def started(**kwargs: int) -> tuple[H2Connection, Encoder]:
    conn = H2Connection(HpackDecoder(), HpackEncoder(), **kwargs)
    conn.initiate()
    conn.receive(h2c.PREFACE + frame(h2c.SETTINGS, 0, 0, b""))
    conn.data_to_send()
    return conn, Encoder()


def headers(client: Encoder, sid: int, fields: list[tuple[bytes, bytes]], flags: int = 0x5) -> bytes:
    return frame(h2c.HEADERS, flags, sid, client.encode(fields))


def kinds(events: list[H2Event]) -> list[int]:
    return [e.kind for e in events]


def goaway_code(conn: H2Connection) -> int:
    sent = [f for f in frames(conn.data_to_send()) if f[0] == h2c.GOAWAY]
    assert sent, "no GOAWAY"
    return int.from_bytes(sent[0][3][4:8], "big")


def test_the_server_preface_is_settings_then_the_connection_window():
    conn = H2Connection(HpackDecoder(), HpackEncoder(), max_streams=100, connection_window=100 * 65535)
    conn.initiate()
    sent = frames(conn.data_to_send())
    assert [f[0] for f in sent] == [h2c.SETTINGS, h2c.WINDOW_UPDATE]
    assert b"\x00\x03\x00\x00\x00\x64" in sent[0][3]
    assert int.from_bytes(sent[1][3], "big") == 99 * 65535


def test_a_request_in_one_headers_frame_is_one_event_that_says_it_ended():
    conn, client = started()
    events = conn.receive(headers(client, 1, REQUEST))
    assert kinds(events) == [h2c.EV_REQUEST]
    assert events[0].headers == REQUEST and events[0].end


def test_bytes_split_anywhere_give_the_same_events():
    conn, client = started()
    data = headers(client, 1, REQUEST, 0x4) + frame(h2c.DATA, 1, 1, b"hello")
    events: list[H2Event] = []
    for i in range(len(data)):
        events += conn.receive(data[i : i + 1])
    assert kinds(events) == [h2c.EV_REQUEST, h2c.EV_DATA, h2c.EV_END]
    assert events[1].data == b"hello"


def test_settings_and_ping_are_acknowledged():
    conn, _ = started()
    conn.receive(frame(h2c.SETTINGS, 0, 0, b"") + frame(h2c.PING, 0, 0, b"12345678"))
    sent = frames(conn.data_to_send())
    assert (h2c.SETTINGS, 1, 0, b"") in sent
    assert (h2c.PING, 1, 0, b"12345678") in sent


def test_a_header_block_in_continuation_frames():
    conn, client = started()
    block = client.encode(REQUEST)
    events = conn.receive(
        frame(h2c.HEADERS, 0x1, 1, block[:3]) + frame(h2c.CONTINUATION, 0, 1, block[3:5]) + frame(9, 4, 1, block[5:])
    )
    assert kinds(events) == [h2c.EV_REQUEST]


def test_a_continuation_flood_is_cut():
    conn, client = started()
    data = frame(h2c.HEADERS, 0x1, 1, client.encode(REQUEST)[:1]) + frame(h2c.CONTINUATION, 0, 1, b"") * 100
    events = conn.receive(data)
    assert kinds(events) == [h2c.EV_ERROR]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(h2c.DATA, 0, 0, b"x"), h2c.PROTOCOL_ERROR),
        (frame(h2c.DATA, 0, 1, b"x"), h2c.PROTOCOL_ERROR),  # idle stream
        (frame(h2c.PING, 0, 0, b"1234"), h2c.FRAME_SIZE_ERROR),
        (frame(h2c.PING, 0, 1, b"12345678"), h2c.PROTOCOL_ERROR),
        (frame(h2c.SETTINGS, 0, 0, b"12345"), h2c.FRAME_SIZE_ERROR),
        (frame(h2c.SETTINGS, 0, 0, b"\x00\x02\x00\x00\x00\x02"), h2c.PROTOCOL_ERROR),
        (frame(h2c.SETTINGS, 0, 0, b"\x00\x04\x80\x00\x00\x00"), h2c.FLOW_CONTROL_ERROR),
        (frame(h2c.SETTINGS, 0, 0, b"\x00\x05\x00\x00\x10\x00"), h2c.PROTOCOL_ERROR),
        (frame(h2c.WINDOW_UPDATE, 0, 0, b"\x00\x00\x00\x00"), h2c.PROTOCOL_ERROR),
        (frame(h2c.WINDOW_UPDATE, 0, 0, b"\x7f\xff\xff\xff"), h2c.FLOW_CONTROL_ERROR),
        (frame(h2c.RST_STREAM, 0, 1, b"\x00\x00\x00\x08"), h2c.PROTOCOL_ERROR),
        (frame(h2c.CONTINUATION, 4, 1, b""), h2c.PROTOCOL_ERROR),
        (frame(h2c.PUSH_PROMISE, 4, 1, b"\x00\x00\x00\x02"), h2c.PROTOCOL_ERROR),
        (frame(h2c.HEADERS, 5, 2, b"\x82"), h2c.PROTOCOL_ERROR),  # even stream id
        (frame(h2c.HEADERS, 5, 1, b"\xff\xff\xff"), h2c.COMPRESSION_ERROR),
        (frame(h2c.DATA, 0, 1, b"x" * 16385), h2c.FRAME_SIZE_ERROR),
    ],
)
def test_connection_errors_send_goaway_with_their_code(data: bytes, code: int):
    conn, _ = started()
    events = conn.receive(data)
    assert kinds(events) == [h2c.EV_ERROR] and events[0].code == code
    assert goaway_code(conn) == code
    assert conn.receive(frame(h2c.PING, 0, 0, b"12345678")) == []


def test_unknown_frame_types_are_ignored():
    conn, _ = started()
    assert conn.receive(frame(0x20, 0, 1, b"whatever")) == []
    assert conn.data_to_send() == b""


def test_data_past_content_length_resets_the_stream():
    conn, client = started()
    events = conn.receive(
        headers(client, 1, [*REQUEST, (b"content-length", b"3")], 0x4) + frame(h2c.DATA, 1, 1, b"hello")
    )
    assert kinds(events) == [h2c.EV_REQUEST, h2c.EV_RESET]
    assert (h2c.RST_STREAM, 0, 1, b"\x00\x00\x00\x01") in frames(conn.data_to_send())


def test_headers_after_the_stream_ended_is_stream_closed():
    conn, client = started()
    conn.receive(headers(client, 1, REQUEST))
    events = conn.receive(headers(client, 1, REQUEST))
    assert events[-1].kind == h2c.EV_ERROR and events[-1].code == h2c.STREAM_CLOSED


def test_trailers_without_end_stream_are_a_protocol_error():
    conn, client = started()
    conn.receive(headers(client, 1, REQUEST, 0x4))
    events = conn.receive(headers(client, 1, [(b"grpc", b"x")], 0x4))
    assert events[-1].code == h2c.PROTOCOL_ERROR


def test_trailers_end_the_stream():
    conn, client = started()
    events = conn.receive(headers(client, 1, REQUEST, 0x4) + headers(client, 1, [(b"x-sum", b"1")], 0x5))
    assert kinds(events) == [h2c.EV_REQUEST, h2c.EV_TRAILERS, h2c.EV_END]


def test_streams_past_the_limit_are_refused():
    conn, client = started(max_streams=2)
    events = conn.receive(b"".join(headers(client, sid, REQUEST, 0x4) for sid in (1, 3, 5)))
    assert kinds(events) == [h2c.EV_REQUEST, h2c.EV_REQUEST]
    assert (h2c.RST_STREAM, 0, 5, b"\x00\x00\x00\x07") in frames(conn.data_to_send())


def test_send_data_splits_at_the_peer_frame_size_and_respects_windows():
    conn, client = started()
    conn.receive(headers(client, 1, REQUEST))
    assert conn.data_window(1) == 65535
    conn.send_headers(1, [(b":status", b"200")], False)
    conn.send_data(1, b"x" * 40000, True)
    sent = frames(conn.data_to_send())
    assert [(f[0], f[1], len(f[3])) for f in sent] == [(1, 4, 1), (0, 0, 16384), (0, 0, 16384), (0, 1, 7232)]
    assert conn.data_window(1) == 0  # the stream is closed both ways


def test_a_block_encoded_elsewhere_goes_after_the_table_size_update_the_client_is_owed():
    """send_header_block frames a block made without the dynamic table (proto/_h2_fields);
    a size update the encoder owes (RFC 7541 4.2) must start the next block all the same."""
    conn, client = started()
    conn.receive(headers(client, 1, REQUEST) + headers(client, 3, REQUEST))
    conn.data_to_send()
    conn.receive(frame(h2c.SETTINGS, 0, 0, struct.pack(">HI", 0x1, 256)))  # HEADER_TABLE_SIZE
    conn.data_to_send()
    literal = b"\x88\x0f\x0d\x01" + b"6"  # :status 200, content-length: 6 (without indexing)
    conn.send_header_block(1, literal, False)
    conn.send_header_block(3, literal, True)
    sent = frames(conn.data_to_send())
    assert [(f[0], f[1], f[2]) for f in sent] == [(1, 4, 1), (1, 5, 3)]
    assert sent[0][3] == b"\x3f\xe1\x01" + literal  # the update to 256 first, once
    assert sent[1][3] == literal
    decoder = hpack.Decoder()
    assert [decoder.decode(f[3]) for f in sent] == [[(":status", "200"), ("content-length", "6")]] * 2


def test_initial_window_change_adjusts_open_streams():
    conn, client = started()
    conn.receive(headers(client, 1, REQUEST))
    conn.receive(frame(h2c.SETTINGS, 0, 0, b"\x00\x04\x00\x00\x00\x01"))
    assert conn.data_window(1) == 1
    conn.receive(frame(h2c.WINDOW_UPDATE, 0, 1, b"\x00\x00\x00\x09"))
    assert conn.data_window(1) == 10


def test_acknowledged_bytes_come_back_as_window_updates():
    conn, client = started(stream_window=100, connection_window=65535)
    conn.receive(headers(client, 1, REQUEST, 0x4) + frame(h2c.DATA, 0, 1, b"x" * 60))
    conn.acknowledge(1, 60)
    sent = frames(conn.data_to_send())
    assert (h2c.WINDOW_UPDATE, 0, 1, (60).to_bytes(4, "big")) in sent
    events = conn.receive(frame(h2c.DATA, 0, 1, b"x" * 101))
    assert kinds(events) == [h2c.EV_RESET] and events[0].code == h2c.FLOW_CONTROL_ERROR


def test_a_rapid_reset_is_a_request_then_its_reset():
    conn, client = started()
    events = conn.receive(headers(client, 1, REQUEST, 0x4) + frame(h2c.RST_STREAM, 0, 1, b"\x00\x00\x00\x08"))
    assert kinds(events) == [h2c.EV_REQUEST, h2c.EV_RESET]
    assert conn.streams == {}


def test_a_header_list_past_the_limit_refuses_the_stream_only():
    conn = H2Connection(HpackDecoder(max_header_list_size=300), HpackEncoder())
    conn.initiate()
    conn.receive(h2c.PREFACE + frame(h2c.SETTINGS, 0, 0, b""))
    conn.data_to_send()
    client = Encoder()
    events = conn.receive(headers(client, 1, [*REQUEST, (b"x-big", b"y" * 300)]) + headers(client, 3, REQUEST))
    assert kinds(events) == [h2c.EV_REQUEST]  # stream 3 only
    assert (h2c.RST_STREAM, 0, 1, b"\x00\x00\x00\x0b") in frames(conn.data_to_send())
