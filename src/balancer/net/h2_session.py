"""The HTTP/2 client side of the proxy: one H2Session per client connection that speaks h2.

Theory of operation. The h2 library (sans I/O) reads and writes the frames; this protocol
feeds it the client's bytes, acts on the events it returns, and writes what it has to
send. Each stream the client opens is an H2Stream (net.h2_stream) whose HttpSession
carries the request through the same path an HTTP/1.1 request takes, to the same pooled
HTTP/1.1 server connections. Output is written once per loop pass.

Limits and defences, each a comment where it acts:
- SETTINGS: at most MAX_STREAMS concurrent streams, a 64 KiB stream window, 16 KiB
  frames, a header list no larger than the frontend's limits.headers allows, a 4 KiB
  HPACK table; the h2 library enforces them (and bounds a header block to 64
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
import contextlib
import logging
from typing import Any, Final, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame

from balancer.net.context import FrontendContext
from balancer.net.deadline import Deadline
from balancer.net.h2_stream import H2Stream
from balancer.net.http_session import HttpSession
from balancer.net.peer import client_address
from balancer.proto.h2_message import MalformedRequest, request_head
from balancer.route.client_limits import REFUSED

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


class H2Session(asyncio.Protocol):
    def __init__(self, frontend: FrontendContext) -> None:
        self.frontend = frontend
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.proxied: tuple[str, int] | None = None  # the client a PROXY header named
        self.client_text = "-:0"
        self.client_ip = "-"
        # conn_limit (route.client_limits) counts this connection once, whatever its streams:
        # its entry and tag while counted, and whether it was over the limit (then every
        # stream is answered 429, as the first request of an HTTP/1.1 connection is).
        self.limit_entry = -1
        self.limit_tag = 0
        self.conn_refused = False
        # What is received is validated (the h2 library's checks, then proto.h2_message's);
        # what is sent is not checked again: the response fields come from a head llhttp
        # accepted, in lower case, stripped, connection-specific ones dropped
        # (proto.h2_message.response_headers), and the h2 library's checking and
        # normalising of them cost a tenth of an HTTP/2 request's CPU.
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.conn = h2.connection.H2Connection(config=config)
        self.streams: dict[int, H2Stream] = {}
        self.closed = False
        self.stopping = False
        self.goaway_sent = False
        self.writing_paused = False
        self.flush_scheduled = False
        self.last_stream_id = 0  # the highest stream taken, for GOAWAY
        self.cancelled = 0  # streams the client reset before their response was done
        self.completed = 0  # streams whose response was sent whole
        self.control_frames = 0
        self.control_second = 0.0
        self.deadline = Deadline(self.loop, self._timed_out)

    # -- lifecycle -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(WRITE_BUFFER_HIGH)
        ip, port = self.proxied or client_address(transport)
        self.client_ip = ip
        self.client_text = f"{ip}:{port}"
        if self.frontend.opened(self, self.transport):
            self.admitted()
        # else parked over maxconn (net.parked): `admitted` is called once there is room

    def admitted(self) -> None:
        """The connection may be served (at once, or after it was parked over maxconn)."""
        frontend = self.frontend
        conn = self.conn
        limits = frontend.limits
        if limits is not None:
            entry, self.limit_tag = limits.open_connection(self.client_ip)
            self.conn_refused = entry == REFUSED
            self.limit_entry = max(entry, -1)
        header_list = frontend.max_header_bytes + 1024  # room for the pseudo-header fields
        conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: header_list,
                h2.settings.SettingCodes.HEADER_TABLE_SIZE: HPACK_TABLE,
            },
        )
        # The decoder refuses a header list past twice the advertised size (a list past
        # the frontend's limits but under this gets the 431 an HTTP/1.1 client gets).
        conn.decoder.max_header_list_size = 2 * header_list
        conn.decoder.max_allowed_table_size = HPACK_TABLE
        conn.initiate_connection()
        # The connection window is all streams' windows: a stream whose server is slow
        # to take its upload holds only its own window, never the others'.
        conn.increment_flow_control_window(MAX_STREAMS * STREAM_WINDOW - 65535)
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
        """GOAWAY naming the last stream taken. Written as a frame of its own: the h2
        library's close_connection would forbid the frames of the streams still in flight."""
        if self.goaway_sent or self.transport is None or self.closed:
            return
        self.goaway_sent = True
        self._flush()
        frame = GoAwayFrame(stream_id=0, last_stream_id=self.last_stream_id, error_code=error_code)
        self.transport.write(frame.serialize())

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
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued a GOAWAY with the error's code.
            log.info("HTTP/2 protocol error from %s: %s", self.client_text, exc)
            self.goaway_sent = True
            for stream in list(self.streams.values()):
                stream.client_reset()
            self._close()
            return
        # Streams the client opened and reset within these bytes: never started.
        reset_now = {e.stream_id for e in events if isinstance(e, h2.events.StreamReset)}
        for event in events:
            if self.closed:
                return
            self._event(event, reset_now)

    def _event(self, event: h2.events.Event, reset_now: set[int]) -> None:
        streams = self.streams
        if isinstance(event, h2.events.DataReceived):
            self._data(event)
        elif isinstance(event, h2.events.RequestReceived):
            assert event.stream_id is not None and event.headers is not None
            if event.stream_id in reset_now:
                self._count_cancel()
                return
            self._request(event.stream_id, event.headers, event.stream_ended is not None)
        elif isinstance(event, h2.events.StreamEnded):
            stream = streams.get(event.stream_id or 0)
            if stream is not None:
                stream.request_end()
        elif isinstance(event, h2.events.TrailersReceived):
            stream = streams.get(event.stream_id or 0)
            if stream is not None and event.headers is not None:
                stream.request_trailers(event.headers)
        elif isinstance(event, h2.events.StreamReset):
            self._reset(event)
        elif isinstance(event, h2.events.WindowUpdated):
            stream = streams.get(event.stream_id or 0)
            if stream is not None:
                self.pump(stream)
            elif not event.stream_id:
                for each in list(streams.values()):
                    self.pump(each)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self._control("SETTINGS")
            for each in list(streams.values()):
                self.pump(each)  # the initial window may have grown
        elif isinstance(event, h2.events.PingReceived):
            self._control("PING")
        elif isinstance(event, h2.events.PriorityUpdated):
            self._control("PRIORITY")
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway_sent = True  # the client is leaving: nothing more to tell it
            for each in list(streams.values()):
                each.client_reset()
            self._close()

    def _control(self, kind: str) -> None:
        now = self.loop.time()
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
        if self.stopping:
            conn.reset_stream(stream_id, REFUSED_STREAM)
            return
        try:
            head = request_head(headers, ended)
        except MalformedRequest as exc:
            log.info("HTTP/2 request from %s refused: %s", self.client_text, exc)
            conn.reset_stream(stream_id, PROTOCOL_ERROR)
            return
        self.last_stream_id = stream_id
        self.deadline.clear()
        stream = H2Stream(self, stream_id, head)
        stream.t_opened = self.loop.time()
        self.streams[stream_id] = stream
        session = HttpSession(self.frontend)
        session.http2 = True
        session.proxied = self.proxied
        session.conn_refused = self.conn_refused
        stream.start(session, head)
        if ended:
            stream.request_end()

    def _data(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id or 0
        size = event.flow_controlled_length or 0
        data = event.data or b""
        stream = self.streams.get(stream_id)
        if not data and not event.stream_ended:
            self._control("empty DATA")
        if stream is None:
            # A stream refused or gone: its bytes still count against the connection window.
            if size:
                self.conn.acknowledge_received_data(size, stream_id)
            return
        stream.request_data(data, size)

    def _reset(self, event: h2.events.StreamReset) -> None:
        stream = self.streams.get(event.stream_id or 0)
        if stream is None:
            return
        if event.remote_reset and not stream.response_done:
            self._count_cancel()
        stream.client_reset()

    def acknowledge(self, stream_id: int, size: int) -> None:
        """Hand `size` bytes of window back to the client (stream and connection)."""
        if not self.closed:
            self.conn.acknowledge_received_data(size, stream_id)
            self._soon()

    # -- towards the client ----------------------------------------------------------------

    def send_headers(self, stream: H2Stream, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        if self.closed or stream.ended:
            return
        try:
            self.conn.send_headers(stream.stream_id, headers, end_stream=end)
        except h2.exceptions.ProtocolError as exc:
            log.warning("stream %d to %s: response head refused: %s", stream.stream_id, self.client_text, exc)
            stream.reset(2)
            return
        if end:
            self._ended(stream)
        self._soon()

    def pump(self, stream: H2Stream) -> None:
        """Send what the stream holds as far as the client's windows and socket allow, and
        END_STREAM once its response is all sent."""
        if self.closed or stream.ended or not stream.headers_sent:
            return
        conn = self.conn
        sid = stream.stream_id
        while stream.pending and not self.writing_paused:
            window = conn.local_flow_control_window(sid)
            if window <= 0:
                break
            conn.send_data(sid, stream.take(min(window, conn.max_outbound_frame_size)))
        if stream.response_done and not stream.pending:
            trailers = stream.trailers
            if trailers:
                try:
                    conn.send_headers(sid, trailers, end_stream=True)
                except h2.exceptions.ProtocolError as exc:
                    log.warning("stream %d to %s: trailers refused: %s", sid, self.client_text, exc)
                    stream.reset(2)
                    self._soon()
                    return
            else:
                conn.end_stream(sid)
            self._ended(stream)
        self._soon()

    def _ended(self, stream: H2Stream) -> None:
        """The response is sent whole: the stream's session goes once it has logged."""
        stream.ended = True
        self.completed += 1
        if not stream.request_ended:
            # The client may stop sending a body nobody reads (RFC 9113 8.1).
            self.reset_stream(stream.stream_id, NO_ERROR)
        if not stream.closed:
            stream.closed = True
            self.loop.call_soon(stream._lost)

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        if not self.closed:
            with contextlib.suppress(h2.exceptions.H2Error):  # already closed on the client's side
                self.conn.reset_stream(stream_id, error_code)
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
            self.loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self.flush_scheduled = False
        self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)
