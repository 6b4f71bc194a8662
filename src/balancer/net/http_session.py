"""The HTTP/1.1 client side of the proxy: one HttpSession per client connection.

Theory of operation. httptools parses the client's bytes and calls back per request.
Requests wait in `queue` in arrival order; the first one is the exchange in flight, the
others are pipelined and wait (reading from the client pauses while any wait, so at most
one read's worth is buffered). For the request in flight the session routes it (rules →
backend), picks a server, takes an idle pooled connection or opens one, and streams the
request to it; the UpstreamConnection streams the response back through `response_*`.
When the response ends the server connection goes back to the pool and the next request
starts. Bodies are forwarded as they arrive, in both directions, and each side's write
buffer pauses the other side's reads (backpressure).

The session never trusts what the client may not send: every ambiguity the parser or
`proto.http1` detects ends in an error response and a closed connection before anything
reaches a server. One connection's failure is caught here and never escapes to the loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Final, cast

import httptools

from balancer.lb import least_time, least_traffic
from balancer.net.context import BackendContext, FrontendContext
from balancer.net.deadline import Deadline
from balancer.net.peer import client_address, local_address
from balancer.net.plain_transport import PlainTransport
from balancer.net.request import NOTHING_KEPT, KnownRequest, Request, RequestOwner
from balancer.net.response_sink import ResponseSink
from balancer.net.upstream import UpstreamConnection, UpstreamOwner
from balancer.proto.h2_message import http2_request_line
from balancer.proto.http1 import (
    FIELD_CONNECTION,
    FIELD_CONTENT_LENGTH,
    FIELD_FORWARDED_FOR,
    FIELD_FORWARDED_PROTO,
    FIELD_HOP,
    FIELD_HOST,
    FIELD_OTHER,
    FIELD_PROXY_CONNECTION,
    FIELD_TRANSFER_ENCODING,
    FIELD_UPGRADE,
    IDEMPOTENT_METHODS,
    LAST_CHUNK,
    NOT_NAMEABLE,
    BadRequest,
    auth_response,
    check_request_head,
    chunk,
    connection_tokens,
    error_response,
    header_kind,
    monitor_response,
    redirect_response,
    too_many_requests,
)
from balancer.route.client_limits import REFUSED, ClientLimits
from balancer.route.persistence import Persistence
from balancer.route.rules import Decision, NumericIP, numeric_ip, redirect_target
from balancer.runtime.state import RESPONSE_BROKEN, RESPONSE_TIMEOUT, ServerRuntime, status_class

try:
    # One whole plain request head in one C call (proto/_heads.c), without llhttp's Python
    # callback per header name and value; None (not built: BALANCER_PURE=1) parses every
    # head with httptools.
    from balancer.proto import _heads
except ImportError:  # pragma: no cover - a build without C
    _heads = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from balancer.proto._heads import ParsedHead  # the stub's: a build without C has no module

# The C function itself, bound once: a module attribute is a dict lookup per call.
_parse_head: Final[Callable[[bytes], ParsedHead | None] | None] = _heads.parse_head if _heads is not None else None

log = logging.getLogger("balancer.http")

# Reasons to pause reading from the client; reading resumes when none is left.
PIPELINE_WAIT: Final = 1  # a pipelined request waits for the one in flight
UPLOAD_BACKPRESSURE: Final = 2  # the server takes the request body slower than it comes
CONNECTING: Final = 4
TARPIT: Final = 8  # a request over rate_limit is held (action "tarpit")
# The connection's last request is read (it asked to close): nothing more is read, so a
# plain connection whose request came whole is never polled (net.plain_transport).
LAST_REQUEST: Final = 16
# How long a connection over conn_limit may take to send the request its 429 answers: it
# does not count as open, so it must not be held for the whole http_request timeout.
CONN_REFUSED_WAIT: Final = 1.0

WRITE_BUFFER_HIGH: Final = 32768
# Response bytes of one server read from which the write skips the outbox (_flush_out).
BULK_WRITE: Final = 16384
# A request body is kept for a transparent retry on a fresh connection up to this size.
REPLAY_LIMIT: Final = 65536
# Upstream connections a request may burn through because pooled ones turned out dead.
MAX_STALE_RETRIES: Final = 3
# Request heads a frontend remembers (KnownRequest), and the largest one it remembers.
KNOWN_MAX: Final = 256
KNOWN_HEAD_MAX: Final = 1024
# Reads that do not look the memo up once KNOWN_MAX heads in a row were never read again:
# where every head differs (browsers' cookies, paths, referers) hashing each read to look
# it up and remembering it cost 6% of a request for nothing (bench/micro_http.py).
KNOWN_PAUSE: Final = 16384
# Bound once: `time.time` in a method looks the module's attribute up at each call.
WALL_CLOCK: Final = time.time


class HttpSession(asyncio.Protocol, UpstreamOwner, RequestOwner):
    def __init__(self, frontend: FrontendContext) -> None:
        self.frontend = frontend
        self.outbox = frontend.outbox  # every write to the client goes through it (net.outbox)
        self.loop = self.outbox.event_loop()  # without get_running_loop()'s getpid()
        self.transport: asyncio.Transport | None = None
        # Made when a read first needs it (_request_parser): a head proto/_heads takes whole,
        # or an HTTP/2 stream's parsed head, needs none (making one binds its ten callbacks).
        self.parser: httptools.HttpRequestParser | None = None
        self.queue: list[Request] = []  # a list, not a deque: compiled list operations are direct
        self.parsing: Request | None = None
        # The bytes being fed when no request was half-parsed before them, so the first
        # request of this read starts at their first byte (or after empty lines llhttp
        # skips); taken by that request's on_message_begin as `head_source`.
        self.fresh = b""
        self.head_source = b""
        # A request whose head is all the current read (fresh), as KnownRequest took it: the
        # frontend remembers it if the read held nothing else.
        self.learning: KnownRequest | None = None
        self.learning_request: Request | None = None
        # The method and version of a head proto/_heads parsed (_take_head), which
        # on_headers_complete reads instead of asking the parser, which did not see it.
        self.head_method = b""
        self.head_version = ""
        self.upstream: UpstreamConnection | None = None
        self.client_ip_text = "-"
        self.client_ip_bytes = b"-"  # for X-Forwarded-For
        self.forwarded_lines = b""  # X-Forwarded-For and -Proto of a request that had none
        self.client_text = "-:0"  # "ip:port", for the access log
        self.client_port = 0
        self._client_ip: NumericIP | None = None
        self.deadline = Deadline(self.loop, self._timed_out)
        # Loop time as of the event being handled: read once per read from either side and
        # at the few other entry points (timers, connect), instead of at every timestamp
        # and deadline of a request.
        self.now = self.deadline.loop_time()
        # Wall clock minus loop clock, once per connection: a request's log time is its loop
        # time plus this, without a time.time() call per request.
        self.wall_offset = WALL_CLOCK() - self.now
        self.header_bytes = 0
        self.header_count = 0
        # The header lines of the request being parsed as they are in head_source
        # (on_header, _follow_raw): where the next one must start (0: after the request
        # line; -1: not as received, or not all in head_source), where the forwarded lines
        # began, where the current run of them began, and the runs before a dropped line.
        self.raw_pos = -1
        self.raw_begin = 0
        self.raw_run = 0
        self.raw_runs: list[bytes] | None = None
        self.paused = 0
        self.writing_paused = False
        self.closing = False  # close once the exchange in flight ends
        self.refusing = False  # a pipelined request was refused: read nothing more (_reject)
        self.closed = False
        self.tunnel = False
        self.out: list[bytes] = []  # response bytes collected during one server read
        self.to_server: list[bytes] = []  # request bytes collected during one client read
        self.connect_task: asyncio.Task[None] | None = None
        # The client's address when it is known apart from the transport: the one a PROXY
        # header named, or an HTTP/2 stream's connection's (read once per connection).
        self.proxied: tuple[str, int] | None = None
        # rate_limit and conn_limit (route.client_limits): the client's table key when its
        # requests are limited, its entry and tag while conn_limit counts this connection,
        # and whether conn_limit refused it (its first request gets a 429, then a close).
        self.rate_key: tuple[int, int] | None = None
        self.rate_entry = -1  # where its last request was counted (ClientLimits.request)
        self.limit_entry = -1
        self.limit_tag = 0
        self.conn_refused = False
        # The session of one HTTP/2 stream (net.h2_stream): not a client connection of its
        # own (the HTTP/2 connection counts as one), and its requests log as HTTP/2.0.
        self.http2 = False
        # The trailer field lines of the chunked request body being read (CRLF after each).
        self.trailers = b""
        # Where a server's response goes when the client takes it as events, not HTTP/1.1
        # bytes (an HTTP/2 stream, net.response_sink); None for an HTTP/1.1 client.
        self.sink: ResponseSink | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        # What a slow reader may leave in the proxy before the server's reads pause: this
        # plus one server read (upstream.READ_SIZE). uvloop's default is 64 KiB.
        if isinstance(transport, PlainTransport):
            cast(PlainTransport, transport).set_write_buffer_limits(WRITE_BUFFER_HIGH)  # compiled: direct
        else:
            self.transport.set_write_buffer_limits(WRITE_BUFFER_HIGH)
        self.client_ip_text, self.client_port = self.proxied or client_address(transport)
        self.client_ip_bytes = self.client_ip_text.encode()
        scheme = self.frontend.scheme
        self.forwarded_lines = b"X-Forwarded-For: %b\r\nX-Forwarded-Proto: %b\r\n" % (self.client_ip_bytes, scheme)
        self.client_text = f"{self.client_ip_text}:{self.client_port}"
        if self.http2 or self.frontend.opened(self, self.transport):  # a stream is no connection
            self.admitted()
        # else parked over maxconn (net.parked): `admitted` is called once there is room

    def admitted(self) -> None:
        """The connection may be served (at once, or after it was parked over maxconn)."""
        frontend = self.frontend
        if frontend.limits is not None:
            self._limit_connection(frontend.limits)
        self.deadline.set(frontend.request_timeout if not self.conn_refused else CONN_REFUSED_WAIT)
        if frontend.stopping:
            self.closing = True

    def between_exchanges(self) -> bool:
        """Kept open with nothing in flight, held or paused: where a keep-alive connection
        waits for its next request. An HTTP/2 stream's session in this state may carry the
        connection's next stream (net.h2_session)."""
        return not (
            self.closed
            or self.closing
            or self.refusing
            or self.tunnel
            or self.queue
            or (self.parsing is not None and not self.parsing.body_done)
            or self.upstream is not None
            or self.connect_task is not None
            or self.paused
            or self.writing_paused
        )

    def carry_stream(self, transport: asyncio.Transport) -> None:
        """Carry another stream of the same HTTP/2 connection (`transport`, net.h2_stream),
        as a keep-alive connection carries its next request: its client, its limits and its
        counters stay; a session only goes here from `between_exchanges`."""
        self.transport = transport

    def source_ip(self) -> NumericIP | None:
        if self._client_ip is None:
            self._client_ip = _numeric_client_ip(self.client_ip_text)
        return self._client_ip

    def local_port(self) -> int:
        """The port the client connected to, for dst_port rules (read when first asked)."""
        transport = self.transport
        name = transport.get_extra_info("sockname") if transport is not None else None
        return int(name[1]) if isinstance(name, tuple) else 0

    def _new_request(self, t_start: float) -> Request:
        """A request of this connection whose first byte came at loop time `t_start`."""
        wall = t_start + self.wall_offset
        return Request(self, t_start, self.frontend.name, self.client_ip_text, self.client_port, wall, self.client_text)

    def over_tls(self) -> bool:
        return self.frontend.scheme == b"https"

    def local_text(self) -> str:
        transport = self.transport
        return local_address(transport) if transport is not None else ""

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.deadline.cancel()
        # Nothing more is read once closed: the parser, which calls the session back, goes
        # (without that cycle a connection is freed when it closes, not by the cyclic GC).
        self.parser = None
        self.parsing = None
        self.frontend.closed(self)
        if self.limit_entry >= 0 and self.frontend.limits is not None:
            self.frontend.limits.closed(self.limit_entry, self.limit_tag)
            self.limit_entry = -1
        if self.connect_task is not None:
            self.connect_task.cancel()
        upstream = self.upstream
        self.upstream = None
        if self.queue:
            request = self.queue[0]
            if request.head_done:
                # The client left before its response ended (abandoned requests log too).
                if request.termination == "--" and not self.tunnel:
                    request.termination = "C" + self._phase(request)
                self._finish_log(request, request.status)
            self._release_slot(request)
            self.queue.clear()
        if upstream is not None:
            # The client left mid-exchange: the server connection's state is unknown.
            upstream.abort()

    def stop(self) -> None:
        # Closing an idle keep-alive connection now would race a request the client may
        # be sending: answer its next request with `Connection: close` instead, and let
        # the keep-alive timeout close it if none comes.
        self.closing = True

    def abort(self) -> None:
        if self.transport is not None:
            self.outbox.flush()
            self.transport.abort()
        if self.upstream is not None:
            self.upstream.abort()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.outbox.close(self.transport)

    def pause_writing(self) -> None:
        # The client reads slower than the server sends: stop reading the server, and
        # while we wait on the client it is the client's timeout that runs, not the server's.
        self.writing_paused = True
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.pause_reading()
            if not self.tunnel and upstream.deadline is not None:
                upstream.deadline.clear()
                self.deadline.set(self.frontend.client_timeout)

    def resume_writing(self) -> None:
        self.writing_paused = False
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None and not upstream.closed:
            upstream.resume_reading()
            if not self.tunnel and upstream.deadline is not None:
                upstream.deadline.set(upstream.server_timeout)
                if self.queue and self.queue[0].body_done:
                    self.deadline.clear()

    def upload_blocked(self, conn: UpstreamConnection) -> None:
        """The server does not take the request body as fast as it comes: stop reading the
        client. Waiting is then the server's doing: its timeout runs, not the client's."""
        self.pause_client_reading(UPLOAD_BACKPRESSURE)
        if self.queue and not self.queue[0].body_done and not self.tunnel:
            self.deadline.clear()
            if conn.deadline is not None:
                conn.deadline.set(conn.server_timeout)

    def upload_unblocked(self, conn: UpstreamConnection) -> None:
        self.resume_client_reading(UPLOAD_BACKPRESSURE)
        if self.queue and not self.queue[0].body_done and not self.tunnel:
            self.deadline.set(self.frontend.client_timeout)
            if conn.deadline is not None:
                conn.deadline.clear()

    def pause_client_reading(self, reason: int) -> None:
        if not self.paused and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self.paused |= reason

    def resume_client_reading(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # -- client bytes ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closed or self.refusing:
            return
        self.now = self.deadline.loop_time()
        if self.tunnel:
            if self.upstream is not None:
                self.upstream.write(data)
                self.deadline.set(self.frontend.tunnel_timeout)
            return
        parsing = self.parsing
        if parsing is None or parsing.body_done:
            frontend = self.frontend
            if frontend.known_pause:
                frontend.known_pause -= 1
            elif len(data) <= KNOWN_HEAD_MAX:
                known = frontend.known_requests.get(data)
                if known is not None:
                    frontend.known_hits += 1
                    self._take_known(known)
                    if self.to_server:
                        self._flush_to_server()
                    return
            self.fresh = data
        else:
            self.fresh = b""
        fed = False  # the parser took all of `data` without an exception
        try:
            head = None
            if self.fresh and _parse_head is not None and (not self.queue or self.queue[-1].keep_alive):
                # Not after a request that closes: llhttp refuses what follows it.
                head = _parse_head(data)
            if head is not None:
                self._take_head(head)
            else:
                self._request_parser().feed_data(data)
            fed = True
        except httptools.HttpParserUpgrade as upgrade:
            self._client_upgrade(data[upgrade.args[0] :])
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__  # what a callback raised
            self._failed(cause if isinstance(cause, Exception) else exc)
        except httptools.HttpParserError as exc:
            self._reject(400, str(exc))
        except Exception as exc:  # raised by a callback _take_head called, or a bug
            self._failed(exc)
        self.fresh = b""
        # An idle connection keeps no read buffer alive, and a head that began in this
        # read but ends in a later one reads its method and version from the parser.
        self.head_source = b""
        if self.learning_request is not None:
            self._learn(data, fed)
        if self.to_server:
            self._flush_to_server()

    def head_received(self, head: ParsedHead, now: float) -> None:
        """A request head parsed elsewhere, as proto/_heads parses one without a body: an
        HTTP/2 stream's (net.h2_stream), whose header list was never written out as HTTP/1.1.
        It goes the way a parsed HTTP/1.1 head goes (_take_head), refusals and errors alike.
        `now`: the loop time of the read that brought it (read once for all its streams)."""
        if self.closed or self.refusing:
            return
        self.now = now
        try:
            self._take_head(head)
        except Exception as exc:
            self._failed(exc)
        if self.to_server:
            self._flush_to_server()

    def _failed(self, exc: Exception) -> None:
        """What an exception out of taking a request head becomes: nothing for a session closed
        meanwhile (_Closed), the answer a BadRequest names, else a 500 and the traceback in
        the log (one connection's bug, never the worker's)."""
        if isinstance(exc, _Closed):
            return
        if isinstance(exc, BadRequest):
            self._reject(exc.status, exc.reason)
            return
        log.error("internal error on a connection from %s", self.client_ip_text, exc_info=exc)
        self._reject(500, "internal error")

    def _request_parser(self) -> httptools.HttpRequestParser:
        """The connection's HTTP/1.1 parser, made now if no read needed it before (a new
        one is between two messages, as one that never saw the heads _heads took)."""
        parser = self.parser
        if parser is None:
            parser = self.parser = httptools.HttpRequestParser(self)
        return parser

    def _learn(self, data: bytes, fed: bool) -> None:
        """Remember the request on_headers_complete took from `data`, if the parser took
        all of `data` (`fed`) and it held that request and nothing else: as a KnownRequest
        when it read these bytes before (`learning`), else that it read them once (None)."""
        learning = self.learning
        request = self.learning_request
        self.learning = None
        self.learning_request = None
        # The request began at the read's first byte (KnownRequest is only taken then), no
        # other began after it, and it ended: at most empty lines, which llhttp skips, follow.
        if fed and request is self.parsing and request is not None and request.body_done:
            frontend = self.frontend
            known = frontend.known_requests
            if len(known) >= KNOWN_MAX:
                known.clear()
                if not frontend.known_hits:  # a table of heads that all differ (cookies, ids)
                    frontend.known_pause = KNOWN_PAUSE
                    return
                frontend.known_hits = 0
            known[data] = learning

    def _take_known(self, known: KnownRequest) -> None:
        """The read is exactly a request head the frontend knows (KnownRequest): the same
        request, made without the parser, which stays between two messages."""
        try:
            request = known.fill(self._new_request(self.now))
            self.parsing = request
            queue = self.queue
            queue.append(request)
            if len(queue) > 1:
                self.pause_client_reading(PIPELINE_WAIT)  # _next starts it in its turn
                return
            self.deadline.clear()  # waiting for the server now: its timeout runs upstream
            self._start(request)
        except Exception as exc:
            self._failed(exc)

    def _take_head(self, head: ParsedHead) -> None:
        """The read is exactly one plain request head without a body, parsed by proto/_heads:
        the callbacks httptools would have made, in its order, without the parser (which
        stays between two messages). Their limits and checks raise as under httptools.
        A head whose fields are all ordinary, Host or Connection (`hop` is a list: the usual)
        takes what on_header would have worked out per field from _heads' result instead:
        the forwarded fields, the Connection ones, the Host, their size, and the forwarded
        header lines as received (`block`)."""
        method, url, version, headers, hop, host, host_count, header_bytes, block, fields = head
        self.on_message_begin()
        self.on_url(url)
        if hop is not None:
            request = self.parsing
            assert request is not None
            self.header_count = fields
            self.header_bytes = header_bytes
            self._check_header_size()
            if headers is None:
                request.fields_block = block  # the list is made if something asks for it
            else:
                request.headers = headers
            request.host = host
            request.host_count = host_count
            if hop:  # Connection fields: seen by rules, never forwarded (_special_header)
                request.hop_headers = hop
                request.connection_values = [value for _, value in hop]
            # on_headers_complete follows no raw lines: the block is taken whole here, for
            # the HTTP/1.1 request line it then finds as read.
            self.raw_pos = -1
            if version == "1.1":
                request.header_block = block
        else:
            for name, value in headers or ():
                self.on_header(name, value)
        self.head_method = method
        self.head_version = version
        try:
            self.on_headers_complete()
        finally:
            self.head_method = b""
            self.head_version = ""
        self.on_message_complete()

    def _flush_to_server(self) -> None:
        data = b"".join(self.to_server) if len(self.to_server) > 1 else self.to_server[0]
        self.to_server.clear()
        if self.upstream is not None:
            self.upstream.write(data)

    def eof_received(self) -> bool | None:
        # Returning False lets the transport close itself, outside the outbox: what it
        # holds for this client (a response read in this same pass) must be out first.
        self.outbox.flush()
        if self.tunnel:
            return self.upstream is not None and self.upstream.write_eof()
        # A client that half-closes after its request still gets the response (HTTP/1.0
        # tools do this); with nothing in flight there is nothing left to do.
        if not self.queue:
            return False
        self.closing = True
        return True

    # -- httptools callbacks (requests) ----------------------------------------------------

    def on_message_begin(self) -> None:
        # At the first byte of a request, not at its URL: a client that sends "GET" and
        # stops still gets the request timeout (408) and a log line.
        if self.closed:
            raise _Closed
        request = self._new_request(self.now)
        self.parsing = request
        self.head_source = self.fresh
        self.fresh = b""
        self.header_bytes = 0
        self.header_count = 0
        self.raw_pos = 0 if self.head_source else -1
        self.raw_runs = None
        self.queue.append(request)
        if len(self.queue) > 1:
            self.pause_client_reading(PIPELINE_WAIT)
        else:
            self.deadline.set(self.frontend.request_timeout, self.now)

    def on_url(self, url: bytes) -> None:
        request = self.parsing
        assert request is not None
        # Mostly in one piece: taken as it is (`+=` on bytes is a generic call, compiled).
        request.url = request.url + url if request.url else url
        if len(request.url) > self.frontend.max_request_line:
            raise BadRequest(414, "request line too long")

    def _check_header_size(self) -> None:
        """The head's fields so far within the frontend's count and size limits, or 431."""
        frontend = self.frontend
        if self.header_count > frontend.max_header_count or self.header_bytes > frontend.max_header_bytes:
            raise BadRequest(431, "request headers too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.parsing
        assert request is not None
        self.header_count += 1
        self.header_bytes += len(name) + len(value) + 4
        self._check_header_size()
        kind = header_kind(name)  # not name.lower(): a method call costs more than the match
        if request.head_done:
            # A trailer field (the head has gone): forwarded with the last chunk, but for
            # the framing, Host and hop-by-hop fields, which trailers must not carry.
            if kind == FIELD_OTHER:
                self.trailers += b"%b: %b\r\n" % (name, value)
            return
        if kind == FIELD_OTHER:
            request.headers.append((name, value))
        elif kind == FIELD_HOST:
            request.host = value
            request.host_count += 1
            request.headers.append((name, value))
        elif kind == FIELD_CONTENT_LENGTH:
            request.content_length = int(value)  # httptools has checked it is digits
            request.headers.append((name, value))
        else:
            self._special_header(request, kind, name, value)
            if self.raw_pos >= 0:
                self._follow_raw(len(name), len(value), self._forwarded(kind, name))
            return
        if self.raw_pos >= 0:
            self._follow_raw(len(name), len(value), True)

    def _forwarded(self, kind: int, name: bytes) -> bool:
        """Whether a header of `kind` (not OTHER, HOST nor CONTENT_LENGTH) goes to the
        server as received (_special_header appended it to the request's headers)."""
        if kind == FIELD_HOP:
            return self.http2 and name == b"te"
        return kind in (FIELD_FORWARDED_FOR, FIELD_FORWARDED_PROTO) and not self.frontend.forwardfor

    def _follow_raw(self, name_size: int, value_size: int, forwarded: bool) -> None:
        """Follow the header line just parsed in head_source, so the lines forwarded as
        received can go to the server as one slice of it (on_headers_complete). Only a line
        "Name: value" CRLF, one space after the colon and the CRLF right after the value as
        the parser gave it (llhttp keeps spaces after a value), is exactly what the proxy
        would write; any other (or one beyond head_source, a head read in pieces) ends the
        following for this request: its header lines are then written from the parsed
        headers, as before. llhttp reads header lines one after the other from the end of
        the request line, so the checks below find each line where it is."""
        source = self.head_source
        pos = self.raw_pos
        if pos == 0:  # the first header line: after the request line (checked at its end)
            pos = source.find(b"\r\n") + 2
            self.raw_begin = self.raw_run = pos
        colon = pos + name_size
        end = colon + 2 + value_size  # where its CRLF must be
        if (
            pos < 2
            or end + 1 >= len(source)
            or source[colon] != 0x3A
            or source[colon + 1] != 0x20
            or source[end] != 0x0D
            or source[end + 1] != 0x0A
        ):
            self.raw_pos = -1
            return
        self.raw_pos = end + 2
        if not forwarded:  # a run of forwarded lines ends before this one
            if self.raw_runs is None:
                self.raw_runs = []
            self.raw_runs.append(source[self.raw_run : pos])
            self.raw_run = end + 2

    def _raw_block(self, line: bytes) -> bytes:
        """The forwarded header lines as received (_follow_raw) of a request whose request
        line `line` starts head_source and whose header lines were all followed (raw_pos > 0);
        b"" when they do not follow `line` (the session then writes them from the parsed
        headers)."""
        pos = self.raw_pos
        if self.raw_begin != len(line):
            return b""
        source = self.head_source
        last = source[self.raw_run : pos]
        runs = self.raw_runs
        return last if runs is None else b"".join(runs) + last

    def _special_header(self, request: Request, kind: int, name: bytes, value: bytes) -> None:
        """A header on_header does not just forward: hop-by-hop, X-Forwarded-*."""
        # Not forwarded as received, but rules (hdr) still see it.
        if request.hop_headers is None:
            request.hop_headers = []
        request.hop_headers.append((name, value))
        if kind in (FIELD_CONNECTION, FIELD_PROXY_CONNECTION):  # llhttp reads both alike
            if request.connection_values is None:
                request.connection_values = []
            request.connection_values.append(value)
        elif kind == FIELD_TRANSFER_ENCODING:
            request.te = value
            request.chunked = True
        elif kind == FIELD_UPGRADE:
            request.upgrade = value
        elif kind == FIELD_FORWARDED_FOR:
            if not self.frontend.forwardfor:
                request.headers.append((name, value))
            elif request.xff_values is None:
                request.xff_values = [value]
            else:
                request.xff_values.append(value)
            text = value.decode("latin-1")
            request.xff = f"{request.xff}, {text}" if request.xff else text
        elif kind == FIELD_FORWARDED_PROTO and not self.frontend.forwardfor:
            request.headers.append((name, value))
        elif kind == FIELD_HOP and self.http2 and name == b"te":
            # "te: trailers", the one TE an HTTP/2 client may send (proto.h2_message): the
            # server learns the client takes trailers (gRPC servers require it).
            request.headers.append((name, value))
        # other hop-by-hop headers (keep-alive, te, trailer, proxy-*) stop here

    def on_headers_complete(self) -> None:
        if self.closed:
            raise _Closed
        request = self.parsing
        assert request is not None
        # The parser's getters are Python method calls, and get_http_version() formats a new
        # str each time (5% of the proxy's own work per request): read the method and the
        # version from the request line when it is at hand (head_source starts with it).
        source = self.head_source  # data_received drops it after the read
        if source.startswith(b"GET "):
            request.method = b"GET"
        elif self.head_method:
            request.method = self.head_method
        else:
            request.method = self._request_parser().get_method()
        request.head_line = line = b"".join((request.method, b" ", request.url, b" HTTP/1.1\r\n"))
        as_read = bool(source) and source.startswith(line)  # the request line is as it was read
        if as_read:
            request.version = "1.1"
        elif self.head_version:
            request.version = self.head_version
        else:
            request.version = self._request_parser().get_http_version()
        if as_read and self.raw_pos > 0:
            # Before the target is read: an absolute-form one replaces the Host line.
            request.header_block = self._raw_block(line)
        check_request_head(request.version, request.host_count, request.te)
        if request.connection_values:
            request.conn_tokens = connection_tokens(request.connection_values)
        # What llhttp's should_keep_alive() says of a request, without the method call:
        # HTTP/1.1 unless "close", HTTP/1.0 only with "keep-alive" (check_request_head
        # has refused every other version).
        if request.version == "1.1":
            request.keep_alive = b"close" not in request.conn_tokens
        else:
            request.keep_alive = b"keep-alive" in request.conn_tokens
        if request.upgrade and not self._request_parser().should_upgrade():
            request.upgrade = b""
        if request.method == b"CONNECT":
            raise BadRequest(501, "CONNECT is not supported")
        url = request.url
        if url[:1] == b"/":
            request.path, _, request.query = url.partition(b"?")
        elif url == b"*" and request.method == b"OPTIONS":
            request.path = url
        else:
            self._absolute_target(request, url)
        if request.version == "1.1":
            request.request_line = line[:-2].decode("latin-1")  # one decode, no formatting
        else:
            request.request_line = f"{request.method.decode()} {url.decode('latin-1')} HTTP/{request.version}"
        request.t_request = (self.now - request.t_start) * 1000
        # The head as received (but for spaces around header values): request line,
        # header lines, final CRLF.
        request.bytes_in = len(request.method) + len(url) + 14 + self.header_bytes
        request.head_done = True
        if not request.keep_alive and not (request.content_length or request.chunked or self.http2):
            self.pause_client_reading(LAST_REQUEST)
        max_body = self.frontend.max_body
        if max_body and request.content_length > max_body:
            raise BadRequest(413, "request body too large")
        if (
            source
            and len(source) <= KNOWN_HEAD_MAX
            and request.keep_alive
            and request.version == "1.1"
            and not request.content_length
            and not request.chunked
            and not request.upgrade
            and not self.frontend.known_pause
        ):
            # Remembered once it is read a second time: a head every client sends once (the
            # usual) costs a dict entry, not a KnownRequest.
            if source in self.frontend.known_requests:
                self.learning = KnownRequest(request)
            self.learning_request = request
        if request is self.queue[0]:
            if self._body_first(request):
                self._buffer_body(request)
            else:
                self._start(request)

    def _body_first(self, request: Request) -> bool:
        """buffer_request: whether `request`, whose head is done, waits for its body (or for
        as much of it as may be buffered) before a server is chosen."""
        buffer_body = self.frontend.buffer_body
        return (
            buffer_body > 0
            and (request.content_length > 0 or request.chunked)
            and not request.body_done
            and request.body_bytes < buffer_body
        )

    def _buffer_body(self, request: Request) -> None:
        """buffer_request: read the body before choosing a server (on_message_complete or
        _send_body starts the request), so a slow upload never holds a server connection and
        a request with its body at hand can be retried. The frontend's http_request timeout
        covers the body. A client that waits for `100 Continue` gets it from here."""
        request.buffering = True
        for i, (name, value) in enumerate(request.headers):
            if header_kind(name) == FIELD_OTHER and name.lower() == b"expect":
                if value.strip().lower() == b"100-continue" and request.version == "1.1":
                    del request.headers[i]  # answered here: the server gets the whole body
                    request.header_block = b""
                    if self.transport is not None and not self.closed:
                        self.outbox.write(self.transport, b"HTTP/1.1 100 Continue\r\n\r\n")
                break

    @staticmethod
    def _absolute_target(request: Request, url: bytes) -> None:
        """An absolute-form target ("http://host[:port]/path?query"), forwarded as received.
        Its authority is the request's host for rules and for the Host the server gets,
        whatever Host said (RFC 9112 3.2.2).
        Anything else (no scheme, no host, "*" but for OPTIONS) is refused with 400."""
        try:
            # Any: httptools' stub says bytes where the parser gives None for a missing part,
            # and compiled code would check the stub's type.
            parsed: Any = httptools.parse_url(url)
        except httptools.HttpParserInvalidURLError:
            raise BadRequest(400, "invalid request target") from None
        schema: bytes | None = parsed.schema
        host: bytes | None = parsed.host
        if schema is None or schema.lower() not in (b"http", b"https") or not host:
            raise BadRequest(400, "invalid request target")
        path: bytes | None = parsed.path
        query: bytes | None = parsed.query
        port: int | None = parsed.port
        request.path = path if path else b"/"
        request.query = query if query is not None else b""
        authority = host if port is None else host + b":" + str(port).encode()
        request.host = authority
        # The server gets a Host that says the same (RFC 9112 3.2.2: a proxy generates it
        # from the target): one that reads only Host must not route where rules did not.
        request.headers = [(name, value) for name, value in request.headers if name.lower() != b"host"]
        request.headers.append((b"Host", authority))
        request.host_count = 1
        request.header_block = b""  # its Host is no longer the one received

    def on_body(self, body: bytes) -> None:
        if self.closed:
            raise _Closed
        request = self.parsing
        assert request is not None
        request.body_bytes += len(body)
        max_body = self.frontend.max_body
        if max_body and request.body_bytes > max_body:
            raise BadRequest(413, "request body too large")
        self._send_body(request, chunk(body) if request.chunked else body)

    def on_message_complete(self) -> None:
        if self.closed:
            raise _Closed
        request = self.parsing
        assert request is not None
        request.body_done = True
        if not request.keep_alive and not self.http2:
            self.pause_client_reading(LAST_REQUEST)
        if request.chunked:
            trailers = self.trailers
            if trailers:
                self.trailers = b""
                self._send_body(request, b"0\r\n" + trailers + b"\r\n")
            else:
                self._send_body(request, LAST_CHUNK)
        if request.buffering:
            request.buffering = False
            if request is self.queue[0] and request.t_total < 0:
                self._start(request)
        if self.queue and request is self.queue[0] and request.queued_at < 0:
            # Waiting for the server now: its timeout runs on the upstream side.
            self.deadline.clear()
            upstream = self.upstream
            if (request.content_length or request.chunked) and upstream is not None and not upstream.tunnel:
                # The body is all sent: from now on the server is waited for (_attach).
                assert upstream.deadline is not None
                upstream.deadline.set(upstream.server_timeout, self.now)

    def _send_body(self, request: Request, framed: bytes) -> None:
        if request.t_total >= 0:
            return  # already answered here (deny, redirect, error): the body goes nowhere
        request.bytes_in += len(framed)
        if request is self.queue[0] and self.upstream is not None and not request.pending:
            self.to_server.append(framed)
            if request.replay is not None:
                self._keep_for_replay(request, framed)
            if not request.body_done:
                self.deadline.set(self.frontend.client_timeout)
        else:
            request.hold(framed)
            if request.buffering and request.body_bytes >= self.frontend.buffer_body:
                request.buffering = False  # as much as may be buffered: send what there is
                self._start(request)

    @staticmethod
    def _keep_for_replay(request: Request, framed: bytes) -> None:
        replay = request.replay
        assert replay is not None
        if replay is NOTHING_KEPT:
            request.replay = [framed]
        else:
            replay.append(framed)
        if request.bytes_in > REPLAY_LIMIT:
            request.replay = None

    # -- routing and connecting ------------------------------------------------------------

    def _start(self, request: Request) -> None:
        """Route the request in flight and send it to a server, or answer it here."""
        frontend = self.frontend
        frontend.requests += 1
        if frontend.monitor_uri and request.path == frontend.monitor_uri and not request.query:
            self._answer_monitor(request)
            return
        if (self.rate_key is not None or self.conn_refused) and self._over_limits(request):
            return
        rules = frontend.rules
        if rules.rules:
            decision = rules.evaluate(request)
            if rules.rewrites:
                request.header_block = b""  # the headers may no longer be the known head's
        else:
            decision = rules.default
        if decision.verdict != "backend":
            self._answer_here(request, decision)
            return
        backend = frontend.backends.get(decision.backend) if decision.backend else frontend.default_backend
        if backend is None:
            self._local_response(request, 503, error_response(503, True), "PC")
            return
        request.backend = backend
        request.backend_name = backend.name
        backend.runtime.requests += 1
        backend_rules = backend.rules
        if backend_rules is not None:  # [[backend.rule]]: after the frontend's, as HAProxy
            decision = backend_rules.evaluate(request)
            if backend_rules.rewrites:
                request.header_block = b""
            if decision.verdict != "backend":
                self._answer_here(request, decision)  # the backend's errorfiles apply
                return
        if backend.persistence is not None and backend.persistence.cookie is not None:
            # Read (and in prefix mode strip) the cookie once: retries dispatch again.
            request.persisted = backend.persistence.cookie.find(request.headers)
            request.header_block = b""
        self._dispatch(request)

    # -- rate_limit and conn_limit -----------------------------------------------------------

    def _limit_connection(self, limits: ClientLimits) -> None:
        """At accept: note whether this client's requests are rate-limited, and count the
        connection against conn_limit (over it, the first request is answered 429). An
        HTTP/2 stream's requests are rate-limited too, but the stream is no connection: its
        HTTP/2 connection counts itself (net.h2_session)."""
        ip = self.client_ip_text
        self.rate_key = limits.rate_key(ip)
        if not self.http2:
            entry, self.limit_tag = limits.open_connection(ip)
            self.conn_refused = entry == REFUSED
            self.limit_entry = max(entry, -1)

    def _over_limits(self, request: Request) -> bool:
        """Answer `request` here if its client is over conn_limit or rate_limit: 429 with
        Retry-After, or the tarpit. True when answered."""
        limits = self.frontend.limits
        assert limits is not None
        if self.conn_refused:
            # conn_limit: one 429 and a close, kinder than a reset at accept (what a TCP
            # frontend does), and the client reads why.
            self._local_response(request, 429, too_many_requests(1, True), "RC")
            return True
        assert self.rate_key is not None
        wait = limits.request(self.rate_key, self.rate_entry)
        self.rate_entry = limits.entry
        if not wait:
            return False
        if limits.tarpit:
            # HAProxy's tarpit: hold the request (reading nothing more) for timeouts.tarpit,
            # then answer and close; a client that leaves first has spent its time anyway.
            request.termination = "PT"
            self.deadline.clear()
            self.pause_client_reading(TARPIT)
            self.loop.call_later(self.frontend.config.timeouts.tarpit, self._end_tarpit, request, wait)
            return True
        close = not request.keep_alive or _body_unread(request) or self.closing
        self._local_response(request, 429, too_many_requests(wait, close), "RR", close)
        return True

    def _end_tarpit(self, request: Request, wait: int) -> None:
        if self.closed or not self.queue or self.queue[0] is not request:
            return
        self.now = self.deadline.loop_time()
        self._local_response(request, 429, too_many_requests(wait, True), "PT")

    def _answer_monitor(self, request: Request) -> None:
        """monitor_uri: 200 from balancer itself, 503 while stopping or while the disable file exists."""
        frontend = self.frontend
        down = (
            frontend.stopping or self.closing or bool(frontend.disable_file and os.path.exists(frontend.disable_file))
        )
        status = 503 if down else 200
        # A HEAD gets the page's body too: closing after it keeps the client in step.
        close = down or not request.keep_alive or _body_unread(request) or request.method == b"HEAD"
        self._local_response(request, status, monitor_response(status, close), "--", close)

    def _answer_here(self, request: Request, decision: Decision) -> None:
        """Answer a rule's deny (403), auth (401) or redirect without a server."""
        if decision.verdict == "deny":
            self.frontend.denied += 1
            self._local_response(request, 403, error_response(403, True), "PR")
            return
        close = not request.keep_alive or _body_unread(request) or self.closing
        if decision.verdict == "auth":
            close = close or request.method == b"HEAD"  # the challenge has a body
            self._local_response(request, 401, auth_response(decision.realm, close), "PR", close)
            return
        code = decision.redirect_code
        response = redirect_response(code, redirect_target(decision, request), close)
        self._local_response(request, code, response, "--", close)

    def _dispatch(
        self,
        request: Request,
        avoid: ServerRuntime | None = None,
        server: ServerRuntime | None = None,
        held: bool = False,
    ) -> None:
        """Send `request` to `server`, or to the one the algorithm picks (avoiding `avoid`).
        Without either, a persisted client goes back to its server (route.persistence).
        `held`: a slot on `server` is already taken for it (a queued request's turn)."""
        backend = request.backend
        assert backend is not None
        persistence = backend.persistence
        if server is None:
            if persistence is not None and avoid is None:
                server = persistence.lookup(request.persisted, self.client_ip_text)
            if server is None:
                key = backend.key_of(request) if backend.key_of is not None else None
                server = backend.servers.pick(key, avoid)
                if server is not None and persistence is not None and avoid is None:
                    server = persistence.claim(self.client_ip_text, server)
        if server is None:
            self._local_response(request, 503, error_response(503, True), "SC")
            return
        if not held:
            maxconn = server.maxconn
            if not maxconn:
                server.take()
            elif backend.waiting or not server.try_take(maxconn):
                # Full, or requests wait already: another server with room, else the queue.
                free = None if backend.waiting else backend.take_server_with_room()
                if free is None:
                    self._wait_for_slot(request, backend)
                    return
                server = free
        request.holds_slot = True
        request.server = server
        request.server_name = server.name
        if persistence is not None:
            persistence.assigned(self.client_ip_text, server)
        request.attempts += 1
        if request.t_queue < 0:
            request.t_queue = 0.0
        conn = backend.idle.get(server)
        if conn is not None:
            request.t_connect = 0.0
            self._attach(request, conn)
            return
        self.pause_client_reading(CONNECTING)
        self.connect_task = self.loop.create_task(self._connect(request, server, backend))

    def _wait_for_slot(self, request: Request, backend: BackendContext) -> None:
        """Every server is at its maxconn: wait in the backend's FIFO queue, at most
        `timeouts.queue`, for a slot (BackendContext.slot_freed hands one over)."""
        request.queued_at = self.deadline.loop_time()
        self.deadline.set(backend.queue_timeout)
        backend.enqueue(self, request)

    def slot_ready(self, request: Request, server: ServerRuntime) -> bool:
        """A slot on `server` is held for `request`, which waited for it. False when the
        request is no longer waiting (the client left or the queue timeout fired)."""
        if self.closed or request.queued_at < 0 or not self.queue or self.queue[0] is not request:
            return False
        request.t_queue = (self.deadline.loop_time() - request.queued_at) * 1000
        request.queued_at = -1.0
        self.deadline.clear()
        self.now = self.deadline.loop_time()
        self._dispatch(request, server=server, held=True)
        return True

    def _release_slot(self, request: Request) -> None:
        """The request no longer occupies its server: let a waiting request have the slot."""
        if request.holds_slot:
            request.holds_slot = False
            server = request.server
            assert server is not None and request.backend is not None
            server.release()
            if request.backend.waiting:
                request.backend.slot_freed(server)
        elif request.queued_at >= 0 and request.backend is not None:
            request.queued_at = -1.0
            request.backend.forget(self, request)

    async def _connect(self, request: Request, server: ServerRuntime, backend: BackendContext) -> None:
        t0 = self.deadline.loop_time()
        assert self.transport is not None
        try:
            conn = await backend.connect(
                partial(UpstreamConnection, server, backend.idle),
                server,
                (self.client_ip_text, self.client_port),
                self.transport,
            )
        except asyncio.CancelledError:
            return
        except (OSError, TimeoutError) as exc:
            self.connect_task = None
            if self.closed:
                return
            # Whatever comes next (a retry on a pooled connection, a queue, an error page),
            # the client must be read again once it is over.
            self.resume_client_reading(CONNECTING)
            self.now = self.deadline.loop_time()
            reason = backend.connect_failed(server, exc)
            self._release_slot(request)
            self._connect_failed(request, server, reason)
            return
        self.connect_task = None
        if self.closed or not self.queue or self.queue[0] is not request:
            conn.release()
            return
        self.now = self.deadline.loop_time()
        request.t_connect = (self.now - t0) * 1000
        if backend.send_proxy:
            conn.private = True  # its PROXY header named this client: it can serve no other
        self.resume_client_reading(CONNECTING)
        self._attach(request, conn)

    def _connect_failed(self, request: Request, server: ServerRuntime, reason: str) -> None:
        backend = request.backend
        assert backend is not None
        log.warning(
            "connect to %s/%s (%s) failed: %s (attempt %d)",
            backend.name,
            server.name,
            server.address,
            reason,
            request.attempts,
        )
        if request.attempts > backend.retries:
            self._local_response(request, 503, error_response(503, True), "SC")
            return
        self._retry(request, server)

    def _retry(self, request: Request, failed: ServerRuntime) -> None:
        """Send `request` again after `failed` could not take it (refused, reset or closed
        before any byte of a response): with `redispatch`, at once to another usable
        server; on the same server (no `redispatch`, or no other server usable) after a
        turn-around (BackendContext.retry_delay), as HAProxy does, so that a restarting
        server is not hammered."""
        backend = request.backend
        assert backend is not None
        if backend.redispatch and backend.other_usable(failed):
            self._dispatch(request, avoid=failed)
            return
        request.queued_at = -1.0
        self.loop.call_later(backend.retry_delay, self._retry_same, request, failed)

    def _retry_same(self, request: Request, server: ServerRuntime) -> None:
        if self.closed or not self.queue or self.queue[0] is not request or request.t_total >= 0:
            return  # the client left, or the request was answered meanwhile (its timeout)
        self.now = self.deadline.loop_time()
        if server.usable:
            self._dispatch(request, server=server)
        else:
            self._dispatch(request, avoid=server)

    def _attach(self, request: Request, conn: UpstreamConnection) -> None:
        backend = request.backend
        server = request.server
        assert backend is not None and server is not None
        self.upstream = conn
        server.requests += 1
        conn.start(self, request.method == b"HEAD", backend.server_timeout, self.now)
        if conn.closed:
            # Lost between its connect and now (a server whose accept queue overflowed
            # resets connections it had completed): nothing would be sent on it and no
            # timer would run. A failed exchange, retried as any other.
            self.upstream_failed(conn, "server closed the connection before the request was sent")
            return
        head = self._request_head(request, backend, server)
        if not request.replay and not request.pending:
            conn.write(head)  # most requests: no body yet, no retry
        else:
            parts = [head]
            if request.replay:
                parts.extend(request.replay)  # a retry: what the first connection already got
            if request.pending:
                for framed in request.pending:
                    parts.append(framed)
                    if request.replay is not None:
                        self._keep_for_replay(request, framed)
                request.pending = None
            conn.write(b"".join(parts))
        if not request.body_done:
            # While the client still sends its body the server is not late: the client's
            # timeout runs, the server's starts once the body is all sent (on_message_complete).
            self.deadline.set(self.frontend.client_timeout)
            if request.content_length or request.chunked:
                assert conn.deadline is not None
                conn.deadline.clear()
            if conn.writing_paused:
                self.upload_blocked(conn)

    def _request_head(self, request: Request, backend: BackendContext, server: ServerRuntime) -> bytes:
        # Connection tokens that name headers to drop: none for a mere "close" or
        # "keep-alive" (a subset test makes no set, where the difference makes one).
        tokens = request.conn_tokens
        extra_hop = tokens - NOT_NAMEABLE if tokens and not tokens <= NOT_NAMEABLE else None
        if request.header_block and not extra_hop and not backend.host_header:
            parts = [request.head_line, request.header_block]  # every header, as received
        else:
            parts = [request.head_line]
            for name, value in request.headers:
                if extra_hop and name.lower() in extra_hop:
                    continue
                if backend.host_header and name.lower() == b"host":
                    continue
                parts += (name, b": ", value, b"\r\n")
        if backend.host_header:
            parts += (b"Host: ", backend.host_header, b"\r\n")
        elif not request.host_count:
            parts += (b"Host: ", str(server.address).encode(), b"\r\n")
        if self.frontend.forwardfor:
            if request.xff_values:
                xff = b", ".join([*request.xff_values, self.client_ip_bytes])
                parts += (b"X-Forwarded-For: ", xff, b"\r\nX-Forwarded-Proto: ", self.frontend.scheme, b"\r\n")
            else:
                parts.append(self.forwarded_lines)
        if request.chunked:
            parts += (b"Transfer-Encoding: ", request.te, b"\r\n")
        if request.upgrade:
            parts += (b"Connection: upgrade\r\nUpgrade: ", request.upgrade, b"\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def _client_upgrade(self, rest: bytes) -> None:
        """The client asked to switch protocols; what follows its head waits for the server."""
        request = self.queue[-1] if self.queue else None
        if request is None or not request.upgrade:
            self._reject(400, "unexpected upgrade")
            return
        self.pause_client_reading(PIPELINE_WAIT)
        if rest:
            request.hold(rest)

    # -- server events (from UpstreamConnection) ------------------------------------------

    def set_now(self, now: float) -> None:
        self.now = now

    def interim_response(self, conn: UpstreamConnection) -> None:
        request = self.queue[0] if self.queue else None
        # An HTTP/2 client (a sink) is not told of interim responses.
        if request is not None and request.version == "1.1" and not self.closed and self.transport and not self.sink:
            self.outbox.write(self.transport, conn.head_bytes(b""))

    def response_head(self, conn: UpstreamConnection) -> None:
        request = self.queue[0]
        request.status = conn.status
        request.t_response = (self.now - request.t_start) * 1000 - request.t_request
        request.response_started = True
        sink = self.sink
        if conn.chunked and (request.version == "1.0" or sink is not None):
            conn.chunked = False
            if sink is not None:
                conn.dechunked = True  # the body bare, its trailers apart (response_trailers)
            else:
                # HTTP/1.0 has no chunked coding: send the body bare and end it by closing.
                request.keep_alive = False
        if conn.status == 101:
            extra = b"Connection: upgrade\r\n"
        elif not request.keep_alive or self.closing or conn.until_close or not request.body_done or request.upgrade:
            request.keep_alive = False
            extra = b"Connection: close\r\n"
        elif request.version == "1.0":
            extra = b"Connection: keep-alive\r\n"
        else:
            extra = b""
        backend = request.backend
        if backend is not None and backend.persistence is not None:
            extra += self._persistence_cookie(request, backend.persistence, conn)
        if backend is not None and backend.response_rules is not None:  # the backend's, then the frontend's
            conn.header_lines = backend.response_rules.apply(request, conn.status, conn.header_lines)
        if self.frontend.response_rules is not None:
            conn.header_lines = self.frontend.response_rules.apply(request, conn.status, conn.header_lines)
        if sink is not None:
            lines = conn.header_lines + b"\r\n" + extra if extra else conn.header_lines
            request.bytes_out += 13 + len(conn.status_text) + len(lines)  # what the HTTP/1.1 head is
            sink.relay_head(conn.status, lines)
            return
        head = conn.head_bytes(extra)
        request.bytes_out += len(head)
        self.out.append(head)

    @staticmethod
    def _persistence_cookie(request: Request, persistence: Persistence, conn: UpstreamConnection) -> bytes:
        """Insert, prefix or rewrite the persistence cookie of a response head; returns the
        header lines to add (insert mode), having rewritten `conn.header_lines` (the others)."""
        cookie = persistence.cookie
        if cookie is None or request.server is None:
            return b""
        conn.header_lines, extra = cookie.response(
            conn.header_lines, request.persisted, request.server.name, request.method
        )
        return extra

    def response_data(self, data: bytes) -> None:
        request = self.queue[0]
        request.bytes_out += len(data)
        sink = self.sink
        if sink is not None:
            sink.relay_body(data)
            return
        if self.tunnel:
            if self.transport is not None and not self.closed:
                self.outbox.write(self.transport, data)
            self.deadline.set(self.frontend.tunnel_timeout)
            return
        self.out.append(data)

    def response_trailers(self, conn: UpstreamConnection, lines: bytes) -> None:
        sink = self.sink
        if sink is not None:
            self.queue[0].bytes_out += len(lines)
            sink.relay_trailers(lines)

    def flush_response(self) -> None:
        """End of one read from the server: write what it gave in one go."""
        self._flush_out()

    def _flush_out(self) -> None:
        if self.out:
            out = self.out
            count = len(out)
            data = out[0] if count == 1 else out[0] + out[1] if count == 2 else b"".join(out)
            self.out.clear()
            if self.transport is not None and not self.closed:
                if len(data) < BULK_WRITE:
                    self.outbox.write(self.transport, data)
                else:
                    # A large body read: written now, after what is held (the order kept), so a
                    # client that cannot take it pauses the server's reads within this read
                    # callback (pause_writing), before uvloop reads the server socket again:
                    # held to the end of the pass, up to 32 reads would pile up per slow client.
                    self.outbox.flush()
                    self.transport.write(data)

    def response_done(self, conn: UpstreamConnection) -> None:
        self._flush_out()
        if self.sink is not None:
            self.sink.relay_end()
        request = self.queue.pop(0)
        self.upstream = None
        server = request.server
        if server is not None:
            server.bytes_in += request.bytes_in
            server.bytes_out += request.bytes_out
            request.t_total = (self.now - request.t_start) * 1000
            server.observe_response(request.t_response)
            backend = request.backend
            assert backend is not None
            if backend.times_responses:
                least_time.observe(server, request.t_response / 1000)
            elif backend.counts_bytes:
                least_traffic.observe_bytes(server, request.bytes_in + request.bytes_out)
            if request.status >= 500:
                backend.server_failed(server, f"status {request.status}")
            elif server.failure_streak:
                server.failure_streak = 0
        if not request.body_done:
            conn.keep_alive = False
        conn.release(self.now)
        self._finish_log(request, request.status)
        if not request.keep_alive or self.closing or not request.body_done:
            self.close()
            return
        self._next()

    def _next(self) -> None:
        """The exchange in flight ended with the connection kept: start the next one."""
        if self.queue:
            request = self.queue[0]
            refused = request.refused
            if refused:
                self._local_response(request, refused, error_response(refused, True), request.termination)
                return
            if len(self.queue) == 1:
                self.resume_client_reading(PIPELINE_WAIT)
            if not request.head_done:
                self.deadline.set(self.frontend.request_timeout, self.now)
            elif self._body_first(request):
                self.deadline.set(self.frontend.request_timeout, self.now)
                self._buffer_body(request)
            else:
                self._start(request)
        else:
            self.resume_client_reading(PIPELINE_WAIT)
            self.deadline.set(self.frontend.keep_alive_timeout, self.now)

    def upstream_tunnel(self, conn: UpstreamConnection, rest: bytes) -> None:
        self._flush_out()
        request = self.queue[0]
        self.tunnel = True
        if rest:
            self.response_data(rest)
        if request.pending:
            for framed in request.pending:
                conn.write(framed)  # what the client sent after its upgrade request
            request.pending = None
        self.resume_client_reading(PIPELINE_WAIT)
        # One inactivity timeout for the tunnel, refreshed by traffic either way.
        self.deadline.set(self.frontend.tunnel_timeout)
        assert conn.deadline is not None
        conn.deadline.clear()

    def upstream_failed(self, conn: UpstreamConnection, reason: str) -> None:
        self.now = self.deadline.loop_time()
        if not self.queue or conn is not self.upstream:
            conn.close()
            return
        request = self.queue[0]
        self.upstream = None
        server = request.server
        conn.close()
        if self.tunnel:
            self._end_tunnel(request)
            return
        # Not a byte of a response came: an idempotent request whose body is still at hand
        # can be sent again (the server may have seen it, which idempotence allows).
        replayable = (
            conn.bytes_received == 0
            and not request.response_started
            and request.method in IDEMPOTENT_METHODS
            and request.replay is not None
        )
        if replayable and conn.reused and request.stale_retries < MAX_STALE_RETRIES:
            # A pooled connection the server had closed: replay on a fresh one.
            request.stale_retries += 1
            if server is not None:
                server.requests -= 1
            request.attempts -= 1
            self._release_slot(request)
            self._dispatch(request)
            return
        log.warning("server %s/%s failed: %s", request.backend_name, request.server_name, reason)
        backend = request.backend
        if replayable and server is not None and backend is not None and request.attempts <= backend.retries:
            # The server died under the request (reset, closed): count it, try another.
            backend.exchange_failed(server, RESPONSE_BROKEN, reason)
            self._release_slot(request)
            self._retry(request, server)
            return
        self._server_broke(request, reason, 502, "S")

    def upstream_timeout(self, conn: UpstreamConnection) -> None:
        self.now = self.deadline.loop_time()
        if not self.queue or conn is not self.upstream:
            conn.close()
            return
        request = self.queue[0]
        self.upstream = None
        conn.abort()
        if self.tunnel:
            self._end_tunnel(request)
            return
        log.warning("server %s/%s timed out", request.backend_name, request.server_name)
        self._server_broke(request, "timeout", 504, "s")

    def _end_tunnel(self, request: Request) -> None:
        request.t_total = (self.deadline.loop_time() - request.t_start) * 1000
        self._finish_log(request, request.status)
        self.queue.clear()
        self.close()

    def _server_broke(self, request: Request, reason: str, status: int, who: str) -> None:
        """The server failed the exchange in flight (`who`: "S" broke it, "s" timed out):
        counted against it; the client gets `status` if nothing was sent yet, else a cut."""
        if request.server is not None:
            assert request.backend is not None
            request.backend.exchange_failed(request.server, RESPONSE_BROKEN if who == "S" else RESPONSE_TIMEOUT, reason)
        if request.response_started:
            self._flush_out()
            request.termination = who + "D"
            self._abort_request(request)
        else:
            self._local_response(request, status, error_response(status, True), who + "H")

    # -- answering here --------------------------------------------------------------------

    def _local_response(
        self, request: Request, status: int, response: bytes, termination: str, close: bool = True
    ) -> None:
        """Answer `request` without a server. Closes the connection unless told otherwise."""
        if self.closed:
            return
        request.status = status
        request.termination = termination
        if status >= 400 and self.frontend.has_error_pages:
            response = self._error_page(request, status, close, response)
        request.bytes_out += len(response)
        self.out.clear()
        assert self.transport is not None
        self.outbox.write(self.transport, response)
        request.t_total = (self.deadline.loop_time() - request.t_start) * 1000
        self._finish_log(request, status)
        if close or not request.keep_alive or self.closing:
            self.queue.clear()
            self.close()
            return
        self.queue.pop(0)
        self._next()

    def _error_page(self, request: Request, status: int, close: bool, built_in: bytes) -> bytes:
        """The errorfiles page for `status` (the backend's wins over the frontend's), or `built_in`."""
        backend = request.backend
        page = backend.error_pages.get(status) if backend is not None else None
        if page is None:
            page = self.frontend.error_pages.get(status)
        if page is None:
            return built_in
        return page.close if close or not request.keep_alive or self.closing else page.keep_alive

    def _reject(self, status: int, reason: str) -> None:
        """The client sent something we refuse: answer `status` (if we still can) and close."""
        if self.closed:
            return
        request = self.parsing
        if request is None or request.body_done:
            request = self._new_request(self.deadline.loop_time())  # refused before a message began
        if not request.request_line:
            request.request_line = "<BADREQ>"
        log.info("%s from %s:%s: %s", status, self.client_ip_text, self.client_port, reason)
        request.termination = "PR" if status != 500 else "IR"
        if self.queue and self.queue[0] is not request:
            # Pipelined after requests still in flight: they are answered first, in order
            # (HAProxy does the same), then this refusal, then the connection closes.
            # Nothing more is read from the client meanwhile.
            request.refused = status
            if request not in self.queue:
                self.queue.append(request)
            self.refusing = True
            self.pause_client_reading(PIPELINE_WAIT)
            return
        if self.upstream is not None:
            self.upstream.abort()
            self.upstream = None
        self._local_response(request, status, error_response(status, True), request.termination)

    def _abort_request(self, request: Request) -> None:
        request.t_total = (self.deadline.loop_time() - request.t_start) * 1000
        self._finish_log(request, request.status)
        self.queue.clear()
        if self.transport is not None and not self.closed:
            self.outbox.close(self.transport)
        self.closed = True

    def _timed_out(self) -> None:
        if self.closed:
            return
        self.now = self.deadline.loop_time()
        if self.tunnel or not self.queue:
            self.close()  # idle keep-alive or idle tunnel
            return
        request = self.queue[0]
        if request.queued_at >= 0:
            log.warning("no slot on any server of %s within the queue timeout", request.backend_name)
            self._local_response(request, 503, error_response(503, True), "sQ")
        elif not request.head_done:
            request.request_line = request.request_line or "<BADREQ>"
            self._local_response(request, 408, error_response(408, True), "cR")
        elif not request.response_started:
            if self.upstream is not None:
                self.upstream.abort()
                self.upstream = None
            self._local_response(request, 408, error_response(408, True), "cD")
        else:
            request.termination = "cD"
            self._abort_request(request)

    def _finish_log(self, request: Request, status: int) -> None:
        """The request is over, whichever way: free its server slot and log it."""
        self._release_slot(request)
        request.status = status
        if self.http2:
            request.request_line = http2_request_line(request.request_line)
        if request.t_total < 0:
            request.t_total = (self.deadline.loop_time() - request.t_start) * 1000
        frontend = self.frontend
        frontend.bytes_in += request.bytes_in
        frontend.bytes_out += request.bytes_out
        if status:  # 0: the client left before any response
            index = status_class(status)
            counts = frontend.responses  # list[int]: `x[i] += 1` is a generic call, compiled
            counts[index] = counts[index] + 1
            backend = request.backend
            if backend is not None:
                counts = backend.runtime.responses
                counts[index] = counts[index] + 1
        frontend.access_log.log(request)

    @staticmethod
    def _phase(request: Request) -> str:
        if not request.head_done:
            return "R"
        if request.server is None:
            return "Q"
        if not request.response_started:
            return "H"
        return "D"


class HttpSessionMaker:
    """Makes the HttpSession of each connection to `frontend` (an acceptor's protocol
    factory). Compiled, its call makes the session directly, where
    functools.partial(HttpSession, frontend) went through the class's generic call: the
    arguments packed into a tuple, then parsed (~700 instructions a connection)."""

    __slots__ = ("frontend",)

    def __init__(self, frontend: FrontendContext) -> None:
        self.frontend = frontend

    def __call__(self) -> HttpSession:
        return HttpSession(self.frontend)


def _body_unread(request: Request) -> bool:
    """The request has a body not all read yet: an answer made here must close the
    connection, since the rest of that body would be read as the next request."""
    return (request.chunked or request.content_length > 0) and not request.body_done


# Client addresses in numeric form by text, for `src` rules: clients come back, and turning
# the text into a number was 3% of a connection with one request (bench/conn_cost.py).
# Emptied when full, so it stays small whatever the clients.
_NUMERIC_IPS: Final[dict[str, NumericIP | None]] = {}
NUMERIC_IPS_MAX: Final = 4096


def _numeric_client_ip(text: str) -> NumericIP | None:
    known = _NUMERIC_IPS.get(text)  # one lookup for a known address, where `in` then [] make two
    if known is not None or text in _NUMERIC_IPS:
        return known
    value = numeric_ip(text)
    if len(_NUMERIC_IPS) >= NUMERIC_IPS_MAX:
        _NUMERIC_IPS.clear()
    _NUMERIC_IPS[text] = value
    return value


class _Closed(Exception):
    """Raised inside parser callbacks to stop parsing bytes of a connection already closed."""
