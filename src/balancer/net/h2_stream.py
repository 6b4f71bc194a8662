"""One HTTP/2 stream, carried by an HttpSession of its own as one HTTP/1.1 exchange.

Theory of operation. Every stream a client opens gets an HttpSession (net.http_session),
the very session an HTTP/1.1 connection gets, and an H2Stream is that session's transport.
The stream's request is handed to the session parsed (proto/_heads.http2_head: a request
without a body, of plain fields, as the HTTP/1.1 parser would read it) or as the HTTP/1.1
request it stands for (proto.h2_message.request_head; DATA frames as body bytes, chunked
when no length was given), so the request goes through the one request path there is:
limits, rules, persistence, balancing, queueing, retries, pooled HTTP/1.1 server connections, the
access log and the counters. A server's response, which the upstream has parsed already,
comes back as events (net.response_sink: the head after the response rules and the
persistence cookie, the body un-chunked, trailers, the end) and goes to the HTTP/2
connection (net.h2_session) as HEADERS and DATA frames, without being written out as
HTTP/1.1 and parsed again. A response the session makes itself (error pages, redirects,
a deny's 403, 100 Continue) is written as the HTTP/1.1 bytes an HTTP/1.1 client would get;
the stream reads those with httptools (1xx heads are not passed on).

Flow control, both ways, is the transport API the session already obeys:
- The session pauses reading (the server takes the upload slower than it comes, or a
  server connection is being opened): the stream stops handing the client window
  (WINDOW_UPDATE) back, so the client can send at most one window more.
- Response bytes wait here while the client's window is closed or the client's socket
  is full; past the high-water mark the session is told `pause_writing`, and it stops
  reading the server, as for a slow HTTP/1.1 client.

Trailer fields of a chunked response (gRPC's grpc-status) go as a last HEADERS frame
with END_STREAM after the DATA (RFC 9113 8.1), less the fields HTTP/2 forbids there;
without any, the last DATA frame (or an empty one) carries END_STREAM.

The stream ends when the response message has been sent whole (END_STREAM), or is reset:
by the client (RST_STREAM: the session sees its client leave, and a request not yet sent
to a server never is), or here (the session aborted or closed mid-response).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import httptools
from mypy_extensions import trait

from balancer.net.http_session import HttpSession
from balancer.net.response_sink import ResponseSink
from balancer.proto.h2_message import (
    MalformedRequest,
    RequestHead,
    response_field,
    response_headers,
    response_trailer_field,
    response_trailers,
    trailer_section,
)

try:
    # A response head's fields translated and encoded in one C call (proto/_h2_fields.c);
    # None (not built: BALANCER_PURE=1): h2_message's Python, which it mirrors, and the
    # connection's HPACK encoder.
    from balancer.proto import _h2_fields
except ImportError:  # pragma: no cover - a build without C
    _h2_fields = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from balancer.proto._heads import ParsedHead

# The C function itself, bound once: a module attribute is a dict lookup per call.
_response_block: Final[Callable[[int, bytes], bytes] | None] = (
    _h2_fields.response_block if _h2_fields is not None else None
)

log = logging.getLogger("balancer.http")

# Response bytes held per stream before the session stops reading its server.
WRITE_HIGH: Final = 65536


@trait
class StreamOwner:
    """What a stream asks of its HTTP/2 connection (net.h2_session.H2Session implements it). A
    mypyc trait: compiled calls through it stay native, and the stream never imports the
    connection."""

    loop: asyncio.AbstractEventLoop

    def extra_info(self, name: str, default: Any = None) -> Any:
        raise NotImplementedError

    def acknowledge(self, stream_id: int, size: int) -> None:
        raise NotImplementedError

    def send_headers(self, stream: H2Stream, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        raise NotImplementedError

    def send_header_block(self, stream: H2Stream, block: bytes, end: bool) -> None:
        raise NotImplementedError

    def pump(self, stream: H2Stream) -> None:
        raise NotImplementedError

    def pump_soon(self, stream: H2Stream) -> None:
        raise NotImplementedError

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        raise NotImplementedError

    def stream_gone(self, stream: H2Stream) -> None:
        raise NotImplementedError


class H2Stream(asyncio.Transport, ResponseSink):
    """The transport of one stream's HttpSession, and the translation of what it writes."""

    def __init__(self, connection: StreamOwner, stream_id: int, method: bytes, chunked: bool) -> None:
        # Not asyncio.Transport.__init__: it keeps only the `extra` get_extra_info reads,
        # which the connection answers here (a Python call per stream saved).
        self.connection = connection
        self.stream_id = stream_id
        self.chunked_request = chunked  # the request body goes to the session as chunks
        self.head_only = method == b"HEAD"
        self.session: HttpSession | None = None
        # Made for a response the session writes as HTTP/1.1 bytes (one it makes itself):
        # most streams never need one (a server's response comes as relay_* events).
        self.parser: httptools.HttpResponseParser | None = None
        self.fields: list[tuple[bytes, bytes]] = []
        # The response's trailer fields: a HEADERS frame with END_STREAM after its DATA.
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.interim = False
        self.headers_sent = False
        self.response_framed = False  # by a Content-Length or chunked coding (else: until close)
        self.response_done = False  # the whole response is here (END_STREAM once `pending` is out)
        self.ended = False  # END_STREAM or RST_STREAM sent or received: nothing more goes out
        self.closed = False  # the session is gone or going
        self.pending = bytearray()  # response body bytes the client's window has no room for yet
        self.write_high = WRITE_HIGH
        self.write_paused = False  # the session was told pause_writing
        self.reading_paused = False  # the session paused reading: window not handed back
        self.unacked = 0  # flow-controlled bytes received and not yet handed back
        self.request_ended = False
        self.pump_due = False  # the connection pumps it at the end of this loop pass

    # -- the request, from the connection --------------------------------------------------

    def start(self, session: HttpSession, head: RequestHead | ParsedHead, fresh: bool, now: float) -> None:
        """Hand the session its request: as parsed already (proto/_heads.http2_head: a
        request without a body, of plain fields, the usual) or as the HTTP/1.1 head it
        stands for (request_head: any other). `fresh`: a new session, else one an earlier
        stream of the connection ended with (HttpSession.carry_stream); `now`: the loop time
        of the read that brought the request."""
        self.session = session
        session.sink = self
        if fresh:
            session.connection_made(self)
        else:
            session.carry_stream(self)
        if isinstance(head, RequestHead):
            session.data_received(head.head)
        else:
            session.head_received(head, now)

    def request_data(self, data: bytes, flow_controlled: int) -> None:
        """DATA of the request; `flow_controlled` counts its padding too, for the window."""
        if data and not self.closed and self.session is not None:
            self.session.data_received(b"%x\r\n%b\r\n" % (len(data), data) if self.chunked_request else data)
        self._consumed(flow_controlled)

    def _consumed(self, size: int) -> None:
        if not size:
            return
        if self.reading_paused and not self.closed:
            self.unacked += size
        else:
            self.connection.acknowledge(self.stream_id, size)

    def request_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None:
        """Trailers end a chunked body; a body of known length carries none in HTTP/1.1."""
        if self.chunked_request and not self.closed and self.session is not None:
            self.request_ended = True
            try:
                section = trailer_section(trailers)
            except MalformedRequest as exc:
                log.info("stream %d: %s", self.stream_id, exc)
                self.reset(1)  # PROTOCOL_ERROR
                return
            self.session.data_received(section)

    def request_end(self) -> None:
        if self.request_ended:
            return
        self.request_ended = True
        if self.chunked_request and not self.closed and self.session is not None:
            self.session.data_received(b"0\r\n\r\n")

    def client_reset(self) -> None:
        """The client reset the stream: its session sees the client leave."""
        self.ended = True
        self._lost()

    # -- asyncio.Transport, as the session uses it -----------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.connection.extra_info(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass  # the stream's own mark (WRITE_HIGH): HTTP/2 frames cost more than a socket write

    def get_write_buffer_size(self) -> int:
        return len(self.pending)

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False
        unacked = self.unacked
        if unacked and not self.closed:
            self.unacked = 0
            self.connection.acknowledge(self.stream_id, unacked)

    def is_reading(self) -> bool:
        return not self.reading_paused

    def can_write_eof(self) -> bool:
        return False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed or self.ended or self.response_done:
            return
        parser = self.parser
        if parser is None:
            parser = self.parser = httptools.HttpResponseParser(self)
        try:
            parser.feed_data(bytes(data))
        except Exception:
            # A bug of ours (the session writes well-formed responses): this stream is cut,
            # loudly; the outbox, which calls this, would only note it at debug level.
            log.exception("stream %d: internal error on the response", self.stream_id)
            self.abort()

    def close(self) -> None:
        """The session is done with the stream. A response sent whole has ended it; one
        whose end only the close tells (no length) ends now; any other is cut (RST_STREAM)."""
        if self.closed:
            return
        if not self.response_done:
            if self.headers_sent and not self.response_framed and not self.interim:
                self._message_complete()
            else:
                self.reset(2)  # INTERNAL_ERROR: the response cannot be completed
        self.closed = True
        self.connection.loop.call_soon(self._lost)

    def abort(self) -> None:
        if self.closed:
            return
        if not self.response_done:
            self.reset(8)  # CANCEL
        self.closed = True
        self.connection.loop.call_soon(self._lost)

    def reset(self, error_code: int) -> None:
        if not self.ended:
            self.ended = True
            self.pending.clear()
            self.connection.reset_stream(self.stream_id, error_code)

    def finished(self) -> HttpSession | None:
        """The response was sent whole (END_STREAM): the stream goes; its session, when it is
        between two exchanges, is handed back for the connection's next stream, else it
        sees its client leave."""
        session = self.session
        if session is not None and session.between_exchanges():
            self.session = None
            session.sink = None  # until its next stream (start)
            session.deadline.clear()  # the keep-alive wait: the connection keeps its own
        else:
            session = None
        self._lost()
        return session

    def _lost(self) -> None:
        """Tell the session its transport is gone (outside its own calls: call_soon)."""
        self.closed = True
        # The parser of a response the session wrote itself (an error page) calls this
        # stream back: without this, the two, and through the stream its connection, would
        # wait for the cyclic collector.
        self.parser = None
        session = self.session
        if session is not None:
            self.session = None
            session.connection_lost(None)
        self.connection.stream_gone(self)

    # -- a server's response, as the session relays it (net.response_sink) ----------------

    def relay_head(self, status: int, lines: bytes) -> None:
        if self.closed or self.ended or self.response_done:
            return
        self.headers_sent = True
        self.response_framed = True  # relay_end tells its end; a close before it is a cut
        end = self.head_only or status == 204 or status == 304
        if end:
            self.response_done = True
        if _response_block is not None:
            self.connection.send_header_block(self, _response_block(status, lines), end)
        else:
            self.connection.send_headers(self, response_headers(status, lines), end)

    def relay_body(self, data: bytes) -> None:
        if not self.response_done and not self.ended and not self.closed:
            self._queue(data)

    def relay_trailers(self, lines: bytes) -> None:
        if not self.response_done and not self.ended:
            trailers = _h2_fields.response_trailers(lines) if _h2_fields is not None else response_trailers(lines)
            self.trailers = trailers or None

    def relay_end(self) -> None:
        if not self.response_done and not self.ended and not self.closed:
            self._message_complete()

    # -- flow of the response towards the client -------------------------------------------

    def take(self, size: int) -> bytes:
        """Up to `size` pending response bytes, for a DATA frame."""
        pending = self.pending
        if len(pending) <= size:  # the usual: all of it (no slice made, nothing moved)
            data = bytes(pending)
            pending.clear()
        else:
            data = bytes(pending[:size])
            del pending[:size]
        if self.write_paused and len(pending) <= self.write_high // 4:
            self.write_paused = False
            if self.session is not None and not self.closed:
                self.session.resume_writing()
        return data

    def _queue(self, data: bytes) -> None:
        self.pending += data
        if not self.write_paused and len(self.pending) > self.write_high:
            self.write_paused = True
            if self.session is not None:
                self.session.pause_writing()
        self.connection.pump_soon(self)

    # -- httptools callbacks: the response the session writes --------------------------------

    def on_message_begin(self) -> None:
        self.fields = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.headers_sent:
            # A trailer field (the head has gone as HEADERS): kept for the last frame.
            trailer = response_trailer_field(name)
            if trailer is not None:
                if self.trailers is None:
                    self.trailers = []
                self.trailers.append((trailer, value.strip(b" \t")))
            return
        field = response_field(name)
        if field is None:
            if name.lower() == b"transfer-encoding":
                self.response_framed = True  # chunked: the parser finds its end
            return
        if field == b"content-length":
            self.response_framed = True
        self.fields.append((field, value.strip(b" \t")))  # llhttp keeps trailing whitespace

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            # An interim response (100 Continue, 103) is not passed on: the final one follows.
            self.interim = True
            self.response_framed = False
            return
        headers = [(b":status", b"%d" % status), *self.fields]
        self.fields = []
        end = self.head_only or status in (204, 304)
        self.headers_sent = True
        if end:
            self.response_done = True
        self.connection.send_headers(self, headers, end)

    def on_body(self, body: bytes) -> None:
        if not self.response_done:
            self._queue(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if not self.response_done:
            self._message_complete()

    def _message_complete(self) -> None:
        self.response_done = True
        self.connection.pump(self)
