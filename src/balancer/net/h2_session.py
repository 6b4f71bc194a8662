"""The HTTP/2 client side of the proxy: one H2Session per client connection that speaks h2.

Theory of operation. proto.h2_connection (sans I/O) reads and writes the frames; this protocol
feeds it the client's bytes, acts on the events it returns, and writes what it has to
send. Each stream the client opens is an H2Stream (net.h2_stream) whose HttpSession
carries the request through the same path an HTTP/1.1 request takes, to the same pooled
HTTP/1.1 server connections. Output is written once per loop pass.

Limits and defences, each a comment where it acts:
- SETTINGS: at most MAX_STREAMS concurrent streams, a 64 KiB stream window, 16 KiB
  frames, a header list no larger than the frontend's limits.headers allows, a 4 KiB
  HPACK table; proto.h2_connection enforces them (and bounds a header block to 64
  CONTINUATION frames).
- Rapid reset (CVE-2023-44487): streams the client resets before their response is
  done are counted; past RESET_BUDGET, and more of them than completed streams, the
  connection gets GOAWAY ENHANCE_YOUR_CALM and is closed. A stream opened and reset in
  the same read never starts, and one reset later is cancelled (its server request, if
  one was sent, is aborted, as when an HTTP/1.1 client leaves).
- Control-frame floods (PING, SETTINGS, PRIORITY, empty DATA): more than
  CONTROL_BUDGET per second: GOAWAY ENHANCE_YOUR_CALM. While the client does not read
  what is written to it (its socket is full), nothing more is read from it.
- Idle: no stream open for the frontend's http_keep_alive (http_request before the first
  request): GOAWAY NO_ERROR and close.
- Stop and reload: GOAWAY NO_ERROR naming the last stream taken; streams in flight
  finish, later ones are refused (REFUSED_STREAM); the connection closes when none is left.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, cast

from balancer.net.context import FrontendContext
from balancer.net.deadline import Deadline
from balancer.net.h2_stream import H2Stream, StreamOwner
from balancer.net.http_session import HttpSession
from balancer.net.outbox import PassEnd
from balancer.net.peer import client_address
from balancer.proto.h2_connection import (
    EV_DATA,
    EV_END,
    EV_ERROR,
    EV_GOAWAY,
    EV_PING,
    EV_PRIORITY,
    EV_REQUEST,
    EV_RESET,
    EV_SETTINGS,
    EV_TRAILERS,
    EV_WINDOW,
    H2Connection,
    H2Event,
)
from balancer.proto.h2_message import MalformedRequest, RequestHead, request_head
from balancer.proto.hpack_codec import HpackDecoder, HpackEncoder
from balancer.route.client_limits import REFUSED

try:
    # A request without a body, of plain fields, handed to its session parsed (the usual);
    # None (not built: BALANCER_PURE=1) writes every request as HTTP/1.1 for it to parse.
    from balancer.proto import _heads
except ImportError:  # pragma: no cover - a build without C
    _heads = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from balancer.proto._heads import ParsedHead

# The C function itself, bound once: a module attribute is a dict lookup per call.
_http2_head: Final[Callable[[list[tuple[bytes, bytes]]], ParsedHead | None] | None] = (
    _heads.http2_head if _heads is not None else None
)

log = logging.getLogger("balancer.http")

MAX_STREAMS: Final = 100
STREAM_WINDOW: Final = 65535
MAX_FRAME: Final = 16384
HPACK_TABLE: Final = 4096
# Client-reset streams a connection may have before the rapid-reset defence weighs them.
RESET_BUDGET: Final = 100
# PING, SETTINGS, PRIORITY and empty DATA frames a client may send per second.
CONTROL_BUDGET: Final = 200
# The client's bytes are handed to h2 this much at a time, so that a flood is stopped
# within one slice of a read instead of after all of it.
FEED_SLICE: Final = 16384
WRITE_BUFFER_HIGH: Final = 65536

NO_ERROR: Final = 0
PROTOCOL_ERROR: Final = 1
REFUSED_STREAM: Final = 7
ENHANCE_YOUR_CALM: Final = 11


class H2Session(asyncio.Protocol, StreamOwner, PassEnd):
    def __init__(self, frontend: FrontendContext) -> None:
        self.frontend = frontend
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.proxied: tuple[str, int] | None = None  # the client a PROXY header named
        self.client = ("-", 0)  # (ip, port), the streams' sessions' too
        self.client_text = "-:0"
        self.client_ip = "-"
        # conn_limit (route.client_limits) counts this connection once, whatever its streams:
        # its entry and tag while counted, and whether it was over the limit (then every
        # stream is answered 429, as the first request of an HTTP/1.1 connection is).
        self.limit_entry = -1
        self.limit_tag = 0
        self.conn_refused = False
        # What is received is validated (proto.h2_connection's framing rules, then
        # proto.h2_message's); what is sent is not checked again: the response fields come
        # from a head llhttp accepted, in lower case, stripped, connection-specific ones
        # dropped (proto/_h2_fields.c, or proto.h2_message.response_headers). Made in `admitted`.
        self.conn: H2Connection | None = None
        self.streams: dict[int, H2Stream] = {}
        self.closed = False
        self.stopping = False
        self.goaway_sent = False
        self.writing_paused = False
        self.flush_scheduled = False
        # What waits for the flush at the end of this loop pass (end_of_pass): streams
        # holding response bytes to send (so a response read whole goes as one DATA frame
        # with END_STREAM, not a DATA frame and an empty one), then streams whose response
        # is sent, whose sessions then go (outside the session's own calls).
        self.due: list[H2Stream] = []
        self.ended: list[H2Stream] = []
        # Sessions of ended streams, kept for the next streams: an HTTP/2 connection's
        # streams are a keep-alive connection's requests, one after the other or side by
        # side, and a session made anew costs a tenth of a stream's instructions. At most
        # MAX_STREAMS (as many as were open at once), dropped with the connection.
        self.spare: list[HttpSession] = []
        self.last_stream_id = 0  # the highest stream taken, for GOAWAY
        self.cancelled = 0  # streams the client reset before their response was done
        self.completed = 0  # streams whose response was sent whole
        self.control_frames = 0
        self.control_second = 0.0
        self.deadline = Deadline(self.loop, self._timed_out)
        self.now = 0.0  # the loop time of the read being handled

    # -- lifecycle -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(WRITE_BUFFER_HIGH)
        self.client = self.proxied or client_address(transport)
        ip, port = self.client
        self.client_ip = ip
        self.client_text = f"{ip}:{port}"
        if self.frontend.opened(self, self.transport):
            self.admitted()
        # else parked over maxconn (net.parked): `admitted` is called once there is room

    def admitted(self) -> None:
        """The connection may be served (at once, or after it was parked over maxconn)."""
        frontend = self.frontend
        limits = frontend.limits
        if limits is not None:
            entry, self.limit_tag = limits.open_connection(self.client_ip)
            self.conn_refused = entry == REFUSED
            self.limit_entry = max(entry, -1)
        header_list = frontend.max_header_bytes + 1024  # room for the pseudo-header fields
        # The decoder refuses a header list past twice the advertised size (a list past
        # the frontend's limits but under this gets the 431 an HTTP/1.1 client gets).
        # The connection window is all streams' windows: a stream whose server is slow
        # to take its upload holds only its own window, never the others'.
        conn = self.conn = H2Connection(
            HpackDecoder(HPACK_TABLE, 2 * header_list),
            HpackEncoder(),
            max_streams=MAX_STREAMS,
            stream_window=STREAM_WINDOW,
            max_frame=MAX_FRAME,
            max_header_list=header_list,
            header_table=HPACK_TABLE,
            connection_window=MAX_STREAMS * STREAM_WINDOW,
        )
        conn.initiate()
        self._flush()
        self.deadline.set(frontend.request_timeout)
        if frontend.stopping:
            self.stop()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.deadline.cancel()
        self.frontend.closed(self)
        if self.limit_entry >= 0 and self.frontend.limits is not None:
            self.frontend.limits.closed(self.limit_entry, self.limit_tag)
            self.limit_entry = -1
        for stream in list(self.streams.values()):
            stream.client_reset()  # the client is gone: every stream's session sees it leave
        self.streams.clear()
        spare, self.spare = self.spare, []
        for session in spare:
            session.connection_lost(None)

    def stop(self) -> None:
        """Graceful stop or reload: GOAWAY, streams in flight finish, then close."""
        if self.stopping or self.closed:
            return
        self.stopping = True
        self._goaway(NO_ERROR)
        for stream in self.streams.values():
            if stream.session is not None:
                stream.session.stop()
        if not self.streams:
            self._close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self._flush()
            self.transport.abort()

    def _close(self) -> None:
        if not self.closed and self.transport is not None:
            self._flush()
            self.closed = True
            self.transport.close()

    def _goaway(self, error_code: int) -> None:
        """GOAWAY naming the last stream taken; streams in flight may still send."""
        if self.goaway_sent or self.transport is None or self.closed or self.conn is None:
            return
        self.goaway_sent = True
        self.conn.goaway(self.last_stream_id, error_code)
        self._flush()

    def _calm_down(self, reason: str) -> None:
        """A flood: GOAWAY ENHANCE_YOUR_CALM, every stream cut, the connection closed."""
        log.warning("HTTP/2 connection from %s closed: %s", self.client_text, reason)
        self._goaway(ENHANCE_YOUR_CALM)
        for stream in list(self.streams.values()):
            stream.client_reset()
        self._close()

    def _timed_out(self) -> None:
        if self.closed:
            return
        if self.streams:
            return  # each stream's session keeps its own timeouts
        self._goaway(NO_ERROR)
        self._close()

    def pause_writing(self) -> None:
        # The client does not read what it asked for: read nothing more from it (a PING or
        # SETTINGS flood would otherwise pile up its acknowledgements here).
        self.writing_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
        for stream in list(self.streams.values()):
            self.pump(stream)
        self._flush()

    def extra_info(self, name: str, default: Any = None) -> Any:
        if self.transport is None:
            return default
        return self.transport.get_extra_info(name, default)

    # -- client bytes ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.now = self.deadline.loop_time()  # for every stream this read opens
        try:
            for start in range(0, len(data), FEED_SLICE):
                if self.closed:
                    return
                self._receive(data[start : start + FEED_SLICE] if len(data) > FEED_SLICE else data)
        except Exception:
            log.exception("internal error on an HTTP/2 connection from %s", self.client_text)
            self._calm_down("internal error")
            return
        self._flush()

    def _receive(self, data: bytes) -> None:
        conn = self.conn
        if conn is None:
            return  # parked over maxconn: nothing is read before `admitted`
        events = conn.receive(data)
        # Streams the client opened and reset within these bytes: never started.
        reset_now: set[int] = set()
        for event in events:
            if event.kind == EV_RESET:
                reset_now.add(event.stream_id)
        for event in events:
            if self.closed:
                return
            self._event(event, reset_now)

    def _event(self, event: H2Event, reset_now: set[int]) -> None:
        streams = self.streams
        kind = event.kind
        if kind == EV_DATA:
            self._data(event)
        elif kind == EV_REQUEST:
            if event.stream_id in reset_now:
                self._count_cancel()
                return
            self._request(event.stream_id, event.headers, event.end)
        elif kind == EV_END:
            stream = streams.get(event.stream_id)
            if stream is not None:
                stream.request_end()
        elif kind == EV_TRAILERS:
            stream = streams.get(event.stream_id)
            if stream is not None:
                stream.request_trailers(event.headers)
        elif kind == EV_RESET:
            self._reset(event)
        elif kind == EV_WINDOW:
            stream = streams.get(event.stream_id)
            if stream is not None:
                self.pump(stream)
            elif not event.stream_id:
                for each in list(streams.values()):
                    self.pump(each)
        elif kind == EV_SETTINGS:
            self._control("SETTINGS")
            for each in list(streams.values()):
                self.pump(each)  # the initial window may have grown
        elif kind == EV_PING:
            self._control("PING")
        elif kind == EV_PRIORITY:
            self._control("PRIORITY")
        elif kind == EV_ERROR:
            log.info("HTTP/2 protocol error from %s: code %d", self.client_text, event.code)
            self.goaway_sent = True  # the connection wrote it
            for each in list(streams.values()):
                each.client_reset()
            self._close()
        elif kind == EV_GOAWAY:
            self.goaway_sent = True  # the client is leaving: nothing more to tell it
            for each in list(streams.values()):
                each.client_reset()
            self._close()

    def _control(self, kind: str) -> None:
        now = self.now  # control frames come in reads
        if now - self.control_second >= 1.0:
            self.control_second = now
            self.control_frames = 0
        self.control_frames += 1
        if self.control_frames > CONTROL_BUDGET:
            self._calm_down(f"{kind} flood")

    def _count_cancel(self) -> None:
        self.cancelled += 1
        if self.cancelled > RESET_BUDGET and self.cancelled > self.completed:
            self._calm_down(f"rapid reset: {self.cancelled} streams reset before their response")

    def _request(self, stream_id: int, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        conn = self.conn
        assert conn is not None
        if self.stopping:
            conn.reset_stream(stream_id, REFUSED_STREAM)
            return
        parsed = _http2_head(headers) if ended and _http2_head is not None else None
        if parsed is not None:
            head: RequestHead | ParsedHead = parsed
            method, chunked = parsed[0], False
        else:
            try:
                written = request_head(headers, ended)
            except MalformedRequest as exc:
                log.info("HTTP/2 request from %s refused: %s", self.client_text, exc)
                conn.reset_stream(stream_id, PROTOCOL_ERROR)
                return
            head, method, chunked = written, written.method, written.chunked
        stream = H2Stream(self, stream_id, method, chunked)
        self.last_stream_id = stream_id
        self.deadline.clear()
        self.streams[stream_id] = stream
        spare = self.spare
        if spare:
            stream.start(spare.pop(), head, False, self.now)
        else:
            session = HttpSession(self.frontend)
            session.http2 = True
            session.proxied = self.client
            session.conn_refused = self.conn_refused
            stream.start(session, head, True, self.now)
        if ended:
            stream.request_end()

    def _data(self, event: H2Event) -> None:
        stream = self.streams.get(event.stream_id)
        if not event.flow and not event.end:
            self._control("empty DATA")
        if stream is None:
            # A stream refused or gone: its bytes still count against the connection window.
            if event.flow and self.conn is not None:
                self.conn.acknowledge(event.stream_id, event.flow)
            return
        stream.request_data(event.data, event.flow)

    def _reset(self, event: H2Event) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None:
            return
        if not stream.response_done:
            self._count_cancel()
        stream.client_reset()

    def acknowledge(self, stream_id: int, size: int) -> None:
        """Hand `size` bytes of window back to the client (stream and connection)."""
        if not self.closed and self.conn is not None:
            self.conn.acknowledge(stream_id, size)
            self._soon()

    # -- towards the client ----------------------------------------------------------------

    def send_headers(self, stream: H2Stream, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        if self.closed or stream.ended or self.conn is None:
            return
        self.conn.send_headers(stream.stream_id, headers, end)
        self._headers_sent(stream, end)

    def send_header_block(self, stream: H2Stream, block: bytes, end: bool) -> None:
        """A response head encoded already (proto/_h2_fields.response_block)."""
        if self.closed or stream.ended or self.conn is None:
            return
        self.conn.send_header_block(stream.stream_id, block, end)
        self._headers_sent(stream, end)

    def _headers_sent(self, stream: H2Stream, end: bool) -> None:
        if end:
            self._ended(stream)
        self._soon()

    def pump(self, stream: H2Stream) -> None:
        """Send what the stream holds as far as the client's windows and socket allow, and
        END_STREAM once its response is all sent."""
        self._pump(stream)
        self._soon()

    def pump_soon(self, stream: H2Stream) -> None:
        """Pump the stream at the end of this loop pass (more of its response may come in it)."""
        if not stream.pump_due:
            stream.pump_due = True
            self.due.append(stream)
            self._soon()

    def _pump(self, stream: H2Stream) -> None:
        conn = self.conn
        if self.closed or stream.ended or not stream.headers_sent or conn is None:
            return
        sid = stream.stream_id
        if stream.pending and not self.writing_paused:
            window = conn.data_window(sid)
            if window > 0:
                data = stream.take(window)
                # The last DATA frame carries END_STREAM when no trailers follow.
                last = stream.response_done and not stream.pending and not stream.trailers
                conn.send_data(sid, data, last)
                if last:
                    self._ended(stream)
                    return
        if stream.response_done and not stream.pending:
            trailers = stream.trailers
            if trailers:
                conn.send_headers(sid, trailers, True)
            else:
                conn.send_data(sid, b"", True)
            self._ended(stream)

    def _ended(self, stream: H2Stream) -> None:
        """The response is sent whole: the stream's session goes once it has logged."""
        stream.ended = True
        self.completed += 1
        if not stream.request_ended:
            # The client may stop sending a body nobody reads (RFC 9113 8.1).
            self.reset_stream(stream.stream_id, NO_ERROR)
        if not stream.closed:
            stream.closed = True
            self.ended.append(stream)

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        if not self.closed and self.conn is not None:
            self.conn.reset_stream(stream_id, error_code)  # a stream already closed is left alone
            self._soon()

    def stream_gone(self, stream: H2Stream) -> None:
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
        if self.streams or self.closed:
            return
        if self.stopping:
            self._close()
        else:
            self.deadline.set(self.frontend.keep_alive_timeout)

    def _soon(self) -> None:
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.frontend.outbox.at_end_of_pass(self)  # one loop call for all connections

    def end_of_pass(self) -> None:
        self.flush_scheduled = False
        due = self.due
        if due:
            self.due = []
            for stream in due:
                stream.pump_due = False
                self._pump(stream)
        ended = self.ended
        if ended:
            self.ended = []
            spare = self.spare
            for stream in ended:
                session = stream.finished()
                if session is not None and not self.stopping and not self.closed:
                    spare.append(session)
                elif session is not None:
                    session.connection_lost(None)
        self._flush()

    def _flush(self) -> None:
        if self.conn is None:
            return
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)
