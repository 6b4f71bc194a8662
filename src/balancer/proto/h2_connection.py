"""A sans-I/O HTTP/2 server connection (RFC 9113): frames in, events out, frames to send.

Theory of operation. `receive(data)` parses the client's bytes frame by frame, enforces
the protocol's rules (frame sizes, stream states and ids, flow control, CONTINUATION
sequences, SETTINGS values) and returns the events the owner (net.h2_session) acts on:
a request's header list, its DATA, its trailers and end, a reset, a window update, a
control frame (for the owner's flood budgets), the end of the connection. What the
server sends (`send_headers`, `send_data`, `reset_stream`, `goaway`, and the frames the
protocol answers by itself: SETTINGS and PING acknowledgements, WINDOW_UPDATE,
RST_STREAM for stream errors, GOAWAY for connection errors) is appended to one output
buffer that the owner takes once per loop pass (`data_to_send`).

A connection error writes GOAWAY with its code and the last stream id taken, and returns
an ERROR event: nothing more is read. A stream error writes RST_STREAM and forgets the
stream (a RESET event tells the owner when the stream had been handed to it).

HPACK is proto.hpack_codec's: a block it cannot decode is a connection error
COMPRESSION_ERROR, a header list past its limit a stream error (ENHANCE_YOUR_CALM).
Request header validation (pseudo-header rules, field names) is proto.h2_message's;
this module checks only what framing needs: content-length against the DATA received,
and that trailers carry no pseudo-header.

Written for mypyc: no per-frame objects beyond the events, integers read byte by byte.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

from balancer.proto.hpack_codec import HeaderListTooLarge, HpackDecoder, HpackEncoder, HpackError

try:
    from balancer.proto import _h2_fields
except ImportError:  # pragma: no cover - a build without C
    _h2_fields = None  # type: ignore[assignment]

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 6).
DATA: Final = 0
HEADERS: Final = 1
PRIORITY: Final = 2
RST_STREAM: Final = 3
SETTINGS: Final = 4
PUSH_PROMISE: Final = 5
PING: Final = 6
GOAWAY: Final = 7
WINDOW_UPDATE: Final = 8
CONTINUATION: Final = 9

FLAG_END_STREAM: Final = 0x1
FLAG_ACK: Final = 0x1
FLAG_END_HEADERS: Final = 0x4
FLAG_PADDED: Final = 0x8
FLAG_PRIORITY: Final = 0x20

# Error codes (RFC 9113 7).
NO_ERROR: Final = 0
PROTOCOL_ERROR: Final = 1
INTERNAL_ERROR: Final = 2
FLOW_CONTROL_ERROR: Final = 3
STREAM_CLOSED: Final = 5
FRAME_SIZE_ERROR: Final = 6
REFUSED_STREAM: Final = 7
CANCEL: Final = 8
COMPRESSION_ERROR: Final = 9
ENHANCE_YOUR_CALM: Final = 11

MAX_WINDOW: Final = 2147483647
DEFAULT_WINDOW: Final = 65535
# A header block may come in at most this many CONTINUATION frames (a flood defence).
MAX_CONTINUATIONS: Final = 64

# Event kinds.
EV_REQUEST: Final = 1  # headers: the request's header list; end: END_STREAM came with it (no EV_END then)
EV_DATA: Final = 2  # data, flow (bytes counted against the windows, padding included)
EV_TRAILERS: Final = 3  # headers
EV_END: Final = 4  # the client ended its side of the stream (after DATA or trailers)
EV_RESET: Final = 5  # the client reset the stream (code)
EV_WINDOW: Final = 6  # stream_id 0: the connection's window grew
EV_SETTINGS: Final = 7
EV_PING: Final = 8
EV_PRIORITY: Final = 9
EV_GOAWAY: Final = 10  # the client is leaving
EV_ERROR: Final = 11  # a connection error of ours (code): GOAWAY sent, nothing more is read


class H2Event:
    __slots__ = ("code", "data", "end", "flow", "headers", "kind", "stream_id")

    def __init__(self, kind: int, stream_id: int) -> None:
        self.kind = kind
        self.stream_id = stream_id
        self.headers: list[tuple[bytes, bytes]] = []
        self.data = b""
        self.flow = 0
        self.end = False
        self.code = 0


class StreamState:
    """What the connection keeps of one open (or half-closed) stream."""

    __slots__ = (
        "content_length",
        "local_closed",
        "received",
        "recv_unacked",
        "recv_window",
        "remote_closed",
        "send_window",
    )

    def __init__(self, send_window: int, recv_window: int) -> None:
        self.send_window = send_window
        self.recv_window = recv_window
        self.recv_unacked = 0
        self.remote_closed = False
        self.local_closed = False
        self.content_length = -1  # the request's content-length, -1 when none was given
        self.received = 0  # DATA bytes received (padding excluded)


class ConnectionError_(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


# A frame header (RFC 9113 4.1): the length's high byte and low 16 bits, type, flags, stream.
_FRAME_HEAD: Final = struct.Struct(">BHBBI")


def _frame_head(out: bytearray, length: int, kind: int, flags: int, stream_id: int) -> None:
    # One C call: a bytes() of nine ints cost ~2k instructions compiled, per frame sent.
    out += _FRAME_HEAD.pack(length >> 16, length & 0xFFFF, kind, flags, stream_id & 0x7FFFFFFF)


def _put_frame_python(out: bytearray, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
    """proto/_h2_fields.put_frame's reference: one frame, its head and `payload`, onto `out`."""
    _frame_head(out, len(payload), kind, flags, stream_id)
    out += payload


# A frame appended in one C call where built: a struct pack, its boxed integers and the
# bytearray's two resizes cost ~1.5k instructions per frame sent, compiled.
_put_frame: Final[Callable[[bytearray, int, int, int, bytes], None]] = (
    _h2_fields.put_frame if _h2_fields is not None else _put_frame_python
)


def goaway_frame(last_stream_id: int, code: int) -> bytes:
    """A GOAWAY frame (RFC 9113 6.8) naming `last_stream_id` and the error `code`."""
    out = bytearray()
    _frame_head(out, 8, GOAWAY, 0, 0)
    out += _u32_bytes(last_stream_id & 0x7FFFFFFF)
    out += _u32_bytes(code)
    return bytes(out)


def _u32(b: bytes, i: int) -> int:
    return (b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]


_U32: Final = struct.Struct(">I")


def _u32_bytes(value: int) -> bytes:
    return _U32.pack(value & 0xFFFFFFFF)


class H2Connection:
    """The server side of one HTTP/2 connection (see the module's docstring)."""

    def __init__(
        self,
        decoder: HpackDecoder,
        encoder: HpackEncoder,
        max_streams: int = 100,
        stream_window: int = DEFAULT_WINDOW,
        max_frame: int = 16384,
        max_header_list: int = 65536,
        header_table: int = 4096,
        connection_window: int = DEFAULT_WINDOW,
    ) -> None:
        self.decoder = decoder
        self.encoder = encoder
        self.max_streams = max_streams
        self.stream_window = stream_window
        self.max_frame = max_frame
        self.max_header_list = max_header_list
        self.header_table = header_table
        self.connection_window = connection_window
        self.out = bytearray()
        self.pending = b""  # received bytes not yet a whole frame
        self.preface_done = False
        self.settings_seen = False
        self.dead = False
        self.streams: dict[int, StreamState] = {}
        self.highest_id = 0  # the highest stream id the client opened
        self.peer_window = DEFAULT_WINDOW  # the client's initial stream window
        self.peer_max_frame = 16384
        self.send_window = DEFAULT_WINDOW  # the connection's window towards the client
        self.recv_window = connection_window
        self.recv_unacked = 0
        # A header block in CONTINUATION frames: its stream, flags, fragments so far.
        self.block_stream = 0
        self.block_end_stream = False
        self.block = bytearray()
        self.block_frames = 0
        self.block_error = 0  # a stream error the block's HEADERS frame already showed

    # -- start --------------------------------------------------------------------------

    def initiate(self) -> None:
        """Our SETTINGS, then the connection window's increment past the default."""
        payload = bytearray()
        for ident, value in (
            (3, self.max_streams),
            (4, self.stream_window),
            (5, self.max_frame),
            (6, self.max_header_list),
            (1, self.header_table),
        ):
            payload += bytes((0, ident))
            payload += _u32_bytes(value)
        out = self.out
        _frame_head(out, len(payload), SETTINGS, 0, 0)
        out += payload
        if self.connection_window > DEFAULT_WINDOW:
            _frame_head(out, 4, WINDOW_UPDATE, 0, 0)
            out += _u32_bytes(self.connection_window - DEFAULT_WINDOW)

    # -- receiving ----------------------------------------------------------------------

    def receive(self, data: bytes) -> list[H2Event]:
        """The events of the frames `data` completes. After an ERROR event, none."""
        events: list[H2Event] = []
        if self.dead:
            return events
        if self.pending:
            data = self.pending + data
        pos = 0
        size = len(data)
        try:
            if not self.preface_done:
                if size < 24:
                    if PREFACE[:size] != data:
                        raise ConnectionError_(PROTOCOL_ERROR, "invalid connection preface")
                    self.pending = data
                    return events
                if data[:24] != PREFACE:
                    raise ConnectionError_(PROTOCOL_ERROR, "invalid connection preface")
                self.preface_done = True
                pos = 24
            while size - pos >= 9:
                length = (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]
                if length > self.max_frame:
                    raise ConnectionError_(FRAME_SIZE_ERROR, "frame larger than SETTINGS_MAX_FRAME_SIZE")
                end = pos + 9 + length
                if end > size:
                    break
                kind = data[pos + 3]
                flags = data[pos + 4]
                stream_id = _u32(data, pos + 5) & 0x7FFFFFFF
                payload = data[pos + 9 : end]
                pos = end
                self._frame(kind, flags, stream_id, payload, events)
                if self.dead:
                    return events
        except ConnectionError_ as exc:
            self._connection_error(exc.code, events)
            return events
        self.pending = data[pos:] if pos < size else b""
        return events

    def _connection_error(self, code: int, events: list[H2Event]) -> None:
        self.goaway(self.highest_id, code)
        self.dead = True
        self.pending = b""
        event = H2Event(EV_ERROR, 0)
        event.code = code
        events.append(event)

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes, events: list[H2Event]) -> None:
        if not self.settings_seen:
            if kind != SETTINGS or flags & FLAG_ACK:
                raise ConnectionError_(PROTOCOL_ERROR, "the preface must be followed by SETTINGS")
            self.settings_seen = True
        if self.block_stream:
            if kind != CONTINUATION or stream_id != self.block_stream:
                raise ConnectionError_(PROTOCOL_ERROR, "header block interrupted")
            self._continuation(flags, payload, events)
            return
        if kind == DATA:
            self._data(flags, stream_id, payload, events)
        elif kind == HEADERS:
            self._headers(flags, stream_id, payload, events)
        elif kind == PRIORITY:
            self._priority(stream_id, payload, events)
        elif kind == RST_STREAM:
            self._rst_stream(stream_id, payload, events)
        elif kind == SETTINGS:
            self._settings(flags, stream_id, payload, events)
        elif kind == PUSH_PROMISE:
            raise ConnectionError_(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        elif kind == PING:
            if stream_id:
                raise ConnectionError_(PROTOCOL_ERROR, "PING on a stream")
            if len(payload) != 8:
                raise ConnectionError_(FRAME_SIZE_ERROR, "PING not 8 bytes")
            if not flags & FLAG_ACK:
                _frame_head(self.out, 8, PING, FLAG_ACK, 0)
                self.out += payload
                events.append(H2Event(EV_PING, 0))
        elif kind == GOAWAY:
            if stream_id:
                raise ConnectionError_(PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise ConnectionError_(FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
            event = H2Event(EV_GOAWAY, 0)
            event.code = _u32(payload, 4)
            events.append(event)
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload, events)
        elif kind == CONTINUATION:
            raise ConnectionError_(PROTOCOL_ERROR, "CONTINUATION without a header block")
        # Unknown frame types are ignored (RFC 9113 5.5).

    def _strip_padding(self, flags: int, payload: bytes) -> bytes:
        if not flags & FLAG_PADDED:
            return payload
        if not payload:
            raise ConnectionError_(FRAME_SIZE_ERROR, "padded frame without a pad length")
        pad = payload[0]
        if pad >= len(payload):
            raise ConnectionError_(PROTOCOL_ERROR, "padding longer than the frame")
        return payload[1 : len(payload) - pad]

    def _idle(self, stream_id: int) -> bool:
        return stream_id > self.highest_id

    def _known(self, stream_id: int) -> StreamState | None:
        """The open stream `stream_id`, None for one closed or not opened yet. A new
        stream's id is past every known one: no lookup for it, the dearest kind (a key
        missing from a dict whose keys come and go walks past the slots they left)."""
        return self.streams.get(stream_id) if stream_id <= self.highest_id else None

    def _data(self, flags: int, stream_id: int, payload: bytes, events: list[H2Event]) -> None:
        if not stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "DATA on stream 0")
        flow = len(payload)
        data = self._strip_padding(flags, payload)
        self.recv_window -= flow
        if self.recv_window < 0:
            raise ConnectionError_(FLOW_CONTROL_ERROR, "connection window exceeded")
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_closed:
            if stream is None and self._idle(stream_id):
                raise ConnectionError_(PROTOCOL_ERROR, "DATA on an idle stream")
            # Closed, or half-closed (remote): its bytes still count on the connection.
            self._give_back_connection(flow)
            self._stream_error(stream_id, STREAM_CLOSED, events)
            return
        stream.recv_window -= flow
        if stream.recv_window < 0:
            self._give_back_connection(flow)
            self._stream_error(stream_id, FLOW_CONTROL_ERROR, events)
            return
        stream.received += len(data)
        ended = bool(flags & FLAG_END_STREAM)
        if stream.content_length >= 0 and (
            stream.received > stream.content_length or (ended and stream.received != stream.content_length)
        ):
            self._give_back_connection(flow)
            self._stream_error(stream_id, PROTOCOL_ERROR, events)
            return
        if data or flow:
            event = H2Event(EV_DATA, stream_id)
            event.data = data
            event.flow = flow
            event.end = ended
            events.append(event)
        elif not ended:
            events.append(H2Event(EV_DATA, stream_id))  # an empty DATA frame (flood budget)
        if ended:
            self._remote_end(stream_id, stream, events)

    def _remote_end(self, stream_id: int, stream: StreamState, events: list[H2Event]) -> None:
        stream.remote_closed = True
        events.append(H2Event(EV_END, stream_id))
        if stream.local_closed:
            del self.streams[stream_id]

    def _headers(self, flags: int, stream_id: int, payload: bytes, events: list[H2Event]) -> None:
        if not stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "HEADERS on stream 0")
        block = self._strip_padding(flags, payload)
        if flags & FLAG_PRIORITY:
            if len(block) < 5:
                raise ConnectionError_(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            if _u32(block, 0) & 0x7FFFFFFF == stream_id:
                # A stream depending on itself: a stream error, but the block must be decoded.
                block = block[5:]
                self._header_block(flags, stream_id, block, events, PROTOCOL_ERROR)
                return
            block = block[5:]
        self._header_block(flags, stream_id, block, events, 0)

    def _header_block(self, flags: int, stream_id: int, block: bytes, events: list[H2Event], error: int) -> None:
        if stream_id % 2 == 0:
            raise ConnectionError_(PROTOCOL_ERROR, "even stream id from a client")
        stream = self._known(stream_id)
        if stream is not None:
            if stream.remote_closed:
                raise ConnectionError_(STREAM_CLOSED, "HEADERS on a half-closed stream")
            if not flags & FLAG_END_STREAM:
                raise ConnectionError_(PROTOCOL_ERROR, "trailers without END_STREAM")
        elif not self._idle(stream_id):
            raise ConnectionError_(STREAM_CLOSED, "HEADERS on a closed stream")
        if flags & FLAG_END_HEADERS:
            self._complete_block(stream_id, block, bool(flags & FLAG_END_STREAM), events, error)
            return
        self.block_stream = stream_id
        self.block_end_stream = bool(flags & FLAG_END_STREAM)
        self.block = bytearray(block)
        self.block_frames = 0
        self.block_error = error

    def _continuation(self, flags: int, payload: bytes, events: list[H2Event]) -> None:
        self.block_frames += 1
        self.block += payload
        if self.block_frames > MAX_CONTINUATIONS or len(self.block) > 2 * self.max_header_list:
            raise ConnectionError_(ENHANCE_YOUR_CALM, "header block in too many CONTINUATION frames")
        if flags & FLAG_END_HEADERS:
            stream_id = self.block_stream
            block = bytes(self.block)
            self.block_stream = 0
            self.block = bytearray()
            self._complete_block(stream_id, block, self.block_end_stream, events, self.block_error)

    def _complete_block(self, stream_id: int, block: bytes, ended: bool, events: list[H2Event], error: int) -> None:
        try:
            headers = self.decoder.decode(block)
        except HeaderListTooLarge:
            # Decoded whole (the table is in step): only the stream is refused.
            headers = []
            if not error:
                error = ENHANCE_YOUR_CALM
        except HpackError as exc:
            raise ConnectionError_(COMPRESSION_ERROR, "invalid header block") from exc
        stream = self._known(stream_id)
        if stream is not None:  # trailers
            if error:
                self._stream_error(stream_id, PROTOCOL_ERROR, events)
                return
            for name, _ in headers:
                if name[:1] == b":":
                    self._stream_error(stream_id, PROTOCOL_ERROR, events)
                    return
            if stream.content_length >= 0 and stream.received != stream.content_length:
                self._stream_error(stream_id, PROTOCOL_ERROR, events)
                return
            event = H2Event(EV_TRAILERS, stream_id)
            event.headers = headers
            events.append(event)
            self._remote_end(stream_id, stream, events)
            return
        self.highest_id = stream_id
        if error:
            self._stream_error(stream_id, error, events)
            return
        if len(self.streams) >= self.max_streams:
            self._stream_error(stream_id, REFUSED_STREAM, events)
            return
        stream = StreamState(self.peer_window, self.stream_window)
        for name, value in headers:
            if name == b"content-length":
                length = _content_length(value)
                if length < 0 or (stream.content_length >= 0 and length != stream.content_length):
                    self._stream_error(stream_id, PROTOCOL_ERROR, events)
                    return
                stream.content_length = length
        if ended and stream.content_length > 0:
            self._stream_error(stream_id, PROTOCOL_ERROR, events)
            return
        self.streams[stream_id] = stream
        event = H2Event(EV_REQUEST, stream_id)
        event.headers = headers
        event.end = ended
        events.append(event)
        stream.remote_closed = ended  # `end` tells it: no EV_END (one event less per GET)

    def _priority(self, stream_id: int, payload: bytes, events: list[H2Event]) -> None:
        if not stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) != 5:
            self._stream_error(stream_id, FRAME_SIZE_ERROR, events)
            return
        if _u32(payload, 0) & 0x7FFFFFFF == stream_id:
            self._stream_error(stream_id, PROTOCOL_ERROR, events)
            return
        events.append(H2Event(EV_PRIORITY, stream_id))

    def _rst_stream(self, stream_id: int, payload: bytes, events: list[H2Event]) -> None:
        if not stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise ConnectionError_(FRAME_SIZE_ERROR, "RST_STREAM not 4 bytes")
        if self._idle(stream_id):
            raise ConnectionError_(PROTOCOL_ERROR, "RST_STREAM on an idle stream")
        if self.streams.pop(stream_id, None) is not None:
            event = H2Event(EV_RESET, stream_id)
            event.code = _u32(payload, 0)
            events.append(event)

    def _settings(self, flags: int, stream_id: int, payload: bytes, events: list[H2Event]) -> None:
        if stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & FLAG_ACK:
            if payload:
                raise ConnectionError_(FRAME_SIZE_ERROR, "SETTINGS acknowledgement with a payload")
            return
        if len(payload) % 6:
            raise ConnectionError_(FRAME_SIZE_ERROR, "SETTINGS not a multiple of 6 bytes")
        for i in range(0, len(payload), 6):
            ident = (payload[i] << 8) | payload[i + 1]
            value = _u32(payload, i + 2)
            if ident == 1:
                self.encoder.set_max_table_size(value)
            elif ident == 2:
                if value > 1:
                    raise ConnectionError_(PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH not 0 or 1")
            elif ident == 4:
                if value > MAX_WINDOW:
                    raise ConnectionError_(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE too large")
                delta = value - self.peer_window
                self.peer_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise ConnectionError_(FLOW_CONTROL_ERROR, "a stream window past 2^31-1")
            elif ident == 5:
                if value < 16384 or value > 16777215:
                    raise ConnectionError_(PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of bounds")
                self.peer_max_frame = value
        _frame_head(self.out, 0, SETTINGS, FLAG_ACK, 0)
        events.append(H2Event(EV_SETTINGS, 0))

    def _window_update(self, stream_id: int, payload: bytes, events: list[H2Event]) -> None:
        if len(payload) != 4:
            raise ConnectionError_(FRAME_SIZE_ERROR, "WINDOW_UPDATE not 4 bytes")
        increment = _u32(payload, 0) & 0x7FFFFFFF
        if not stream_id:
            if not increment:
                raise ConnectionError_(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                raise ConnectionError_(FLOW_CONTROL_ERROR, "connection window past 2^31-1")
            events.append(H2Event(EV_WINDOW, 0))
            return
        if self._idle(stream_id):
            raise ConnectionError_(PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
        stream = self.streams.get(stream_id)
        if not increment:
            self._stream_error(stream_id, PROTOCOL_ERROR, events)
            return
        if stream is None:
            return  # a closed stream: ignored
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            self._stream_error(stream_id, FLOW_CONTROL_ERROR, events)
            return
        events.append(H2Event(EV_WINDOW, stream_id))

    def _stream_error(self, stream_id: int, code: int, events: list[H2Event]) -> None:
        """RST_STREAM `code`; a stream the owner knows gets a RESET event."""
        _frame_head(self.out, 4, RST_STREAM, 0, stream_id)
        self.out += _u32_bytes(code)
        if self.streams.pop(stream_id, None) is not None:
            event = H2Event(EV_RESET, stream_id)
            event.code = code
            events.append(event)

    def _give_back_connection(self, size: int) -> None:
        if size:
            self.recv_unacked += size
            if self.recv_unacked >= self.connection_window // 2:
                self._window_out(0, self.recv_unacked)
                self.recv_window += self.recv_unacked
                self.recv_unacked = 0

    def _window_out(self, stream_id: int, increment: int) -> None:
        _frame_head(self.out, 4, WINDOW_UPDATE, 0, stream_id)
        self.out += _u32_bytes(increment)

    def acknowledge(self, stream_id: int, size: int) -> None:
        """`size` flow-controlled bytes of stream `stream_id` were consumed: window back
        to the client, in updates of at least half a window."""
        if self.dead or size <= 0:
            return
        self._give_back_connection(size)
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_closed:
            return
        stream.recv_unacked += size
        if stream.recv_unacked >= self.stream_window // 2:
            self._window_out(stream_id, stream.recv_unacked)
            stream.recv_window += stream.recv_unacked
            stream.recv_unacked = 0

    # -- sending ------------------------------------------------------------------------

    def data_window(self, stream_id: int) -> int:
        """Bytes of DATA stream `stream_id` may send now (0 for a stream not open)."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.local_closed:
            return 0
        window = stream.send_window
        if self.send_window < window:
            window = self.send_window
        return window if window > 0 else 0

    def stream_open(self, stream_id: int) -> bool:
        stream = self.streams.get(stream_id)
        return stream is not None and not stream.local_closed

    def send_headers(self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        stream = self.streams.get(stream_id)
        if self.dead or stream is None or stream.local_closed:
            return
        self._header_frames(stream_id, stream, self.encoder.encode(headers), end_stream)

    def send_header_block(self, stream_id: int, block: bytes, end_stream: bool) -> None:
        """A header block encoded without the dynamic table (proto/_h2_fields), after any
        table size update the encoder owes the client."""
        stream = self.streams.get(stream_id)
        if self.dead or stream is None or stream.local_closed:
            return
        updates = self.encoder.size_updates()
        self._header_frames(stream_id, stream, updates + block if updates else block, end_stream)

    def _header_frames(self, stream_id: int, stream: StreamState, block: bytes, end_stream: bool) -> None:
        """HEADERS and, past the client's frame size, CONTINUATION frames carrying `block`."""
        out = self.out
        limit = self.peer_max_frame
        flags = FLAG_END_STREAM if end_stream else 0
        if len(block) <= limit:
            _put_frame(out, HEADERS, flags | FLAG_END_HEADERS, stream_id, block)
        else:
            _frame_head(out, limit, HEADERS, flags, stream_id)
            out += block[:limit]
            start = limit
            while start < len(block):
                piece = block[start : start + limit]
                start += limit
                _frame_head(out, len(piece), CONTINUATION, FLAG_END_HEADERS if start >= len(block) else 0, stream_id)
                out += piece
        if end_stream:
            self._local_end(stream_id, stream)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        """DATA frames of at most the client's frame size. The caller keeps within
        data_window()."""
        stream = self.streams.get(stream_id)
        if self.dead or stream is None or stream.local_closed:
            return
        out = self.out
        size = len(data)
        limit = self.peer_max_frame
        if size <= limit:
            _put_frame(out, DATA, FLAG_END_STREAM if end_stream else 0, stream_id, data)
        else:
            view = memoryview(data)
            start = 0
            while start < size:
                stop = start + limit if start + limit < size else size
                _frame_head(out, stop - start, DATA, FLAG_END_STREAM if end_stream and stop == size else 0, stream_id)
                out += view[start:stop]
                start = stop
        stream.send_window -= size
        self.send_window -= size
        if end_stream:
            self._local_end(stream_id, stream)

    def _local_end(self, stream_id: int, stream: StreamState) -> None:
        stream.local_closed = True
        if stream.remote_closed:
            del self.streams[stream_id]

    def reset_stream(self, stream_id: int, code: int) -> None:
        """RST_STREAM `code`, for a stream still known (a closed one is left alone)."""
        if self.dead or self.streams.pop(stream_id, None) is None:
            return
        _frame_head(self.out, 4, RST_STREAM, 0, stream_id)
        self.out += _u32_bytes(code)

    def goaway(self, last_stream_id: int, code: int) -> None:
        self.out += goaway_frame(last_stream_id, code)

    def data_to_send(self) -> bytearray:
        """What is to be written, taken: the buffer is handed over, a new one started."""
        out = self.out
        self.out = bytearray()
        return out


def _content_length(value: bytes) -> int:
    """A content-length value's number, or -1 when it is not one."""
    if not value or len(value) > 18:
        return -1
    number = 0
    for byte in value:
        if byte < 48 or byte > 57:
            return -1
        number = number * 10 + (byte - 48)
    return number
