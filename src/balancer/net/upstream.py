"""Connections to servers (HTTP) and the pool of idle keep-alive ones.

An UpstreamConnection parses the server's responses with httptools and hands events to
the client session that owns it for the exchange in flight (its `owner`). Callbacks only
record what the parser saw; `data_received` acts after the parser returns, so a finished
response is never handled while the parser is still inside that message.

Between exchanges a connection rests in the UpstreamPool of its server, last in first
out (the warmest connection is reused first), until `idle_timeout` or the server closes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final, cast

import httptools
from mypy_extensions import trait

from balancer.net.deadline import Deadline
from balancer.net.outbox import Outbox
from balancer.net.socket_calls import bytes_of
from balancer.proto.http1 import (
    LAST_CHUNK,
    TRAILER_TAIL,
    AcceptedHead,
    ResponseSplit,
    accept_response_head,
    accepted_response_head,
    bodiless_status,
    chunk,
    last_chunk,
    status_code,
)
from balancer.runtime.state import ServerRuntime

log = logging.getLogger("balancer.http")

# How much of a response one read from a server brings in. uvloop's own reads are 256 KB,
# and backpressure (a slow client pausing the server's reads) only acts between reads: a
# slow reader of a large response held ~450 KiB in the proxy (1,000 of them, 477 MB). Reads
# go into one buffer per worker, copied out at once (uvloop calls get_buffer, reads, then
# buffer_updated, within one callback), so the buffer costs nothing per connection.
READ_SIZE: Final = 32768
_READ_BUFFER: Final = bytearray(READ_SIZE)
_READ_VIEW: Final = memoryview(_READ_BUFFER)
# What a closed connection keeps as its parser's feed: a parser bound to nothing.
DETACHED_FEED: Final[Callable[[bytes], None]] = httptools.HttpResponseParser(None).feed_data


@trait
class UpstreamOwner:
    """What an UpstreamConnection tells the client session that owns its exchange
    (net.http_session.HttpSession implements it). A mypyc trait: compiled calls through it
    stay native (a vtable look-up), and the upstream never imports the session."""

    def set_now(self, now: float) -> None:
        """The loop time of the event being handled: the upstream's read, for the owner's
        timers and deadlines (a method: mypyc cannot compile a trait's float attribute set)."""
        raise NotImplementedError

    def interim_response(self, conn: UpstreamConnection) -> None:
        raise NotImplementedError

    def response_head(self, conn: UpstreamConnection) -> None:
        raise NotImplementedError

    def response_data(self, data: bytes) -> None:
        raise NotImplementedError

    def flush_response(self) -> None:
        raise NotImplementedError

    def response_trailers(self, conn: UpstreamConnection, lines: bytes) -> None:
        """The trailer field lines of a response the owner takes de-chunked (`dechunked`)."""
        raise NotImplementedError

    def response_done(self, conn: UpstreamConnection) -> None:
        raise NotImplementedError

    def upstream_tunnel(self, conn: UpstreamConnection, rest: bytes) -> None:
        raise NotImplementedError

    def upstream_failed(self, conn: UpstreamConnection, reason: str) -> None:
        raise NotImplementedError

    def upstream_timeout(self, conn: UpstreamConnection) -> None:
        raise NotImplementedError

    def upload_blocked(self, conn: UpstreamConnection) -> None:
        raise NotImplementedError

    def upload_unblocked(self, conn: UpstreamConnection) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


class UpstreamConnection(asyncio.BufferedProtocol):
    __slots__ = (
        "_feed",
        "_time",
        "body_left",
        "bytes_received",
        "chunked",
        "closed",
        "content_length",
        "deadline",
        "dechunked",
        "done",
        "head_buffer",
        "head_misses",
        "head_only",
        "head_start",
        "header_lines",
        "in_head",
        "interim",
        "keep_alive",
        "known",
        "known_head",
        "outbox",
        "owner",
        "parser_idle",
        "pool",
        "private",
        "reading_paused",
        "reused",
        "server",
        "server_timeout",
        "status",
        "status_text",
        "tail",
        "transport",
        "tunnel",
        "until_close",
        "writing_paused",
    )

    def __init__(self, server: ServerRuntime, pool: UpstreamPool) -> None:
        self.server = server
        self.pool = pool
        self.outbox = pool.outbox
        self.transport: asyncio.Transport | None = None
        self.owner: UpstreamOwner | None = None
        # The parser comes with the connection (connection_made): it calls this object back,
        # and a connect that fails never tells connection_lost, which undoes that cycle.
        self._feed: Callable[[bytes], None] = DETACHED_FEED
        self.parser_idle = True
        self.deadline: Deadline | None = None
        self.closed = False
        self.reused = False
        self.head_misses = 0  # responses in a row whose head _take_known had not seen
        # The last head _take_known knew and what it was accepted as: a server repeats its
        # head on a connection (the Date changes once a second), and comparing bytes costs a
        # twentieth of the hash a look-up in proto.http1's table takes.
        self.known_head = b""
        self.known: AcceptedHead | None = None
        self.tunnel = False
        self.writing_paused = False
        self.reading_paused = False
        self.private = False  # began with a PROXY header: belongs to one client, never pooled
        self.server_timeout = 0.0
        self._time: Callable[[], float] = time.monotonic  # the loop's clock once connected
        self._reset()

    def _new_parser(self) -> None:
        # Only its feed_data is needed, bound once: a call through a stored bound method
        # skips the method lookup that costs the compiled code most per call. Server
        # connections are few (pooled), so this object per connection is cheap here.
        self._feed = httptools.HttpResponseParser(self).feed_data
        # Between two messages with no byte fed since the last one ended: a response may
        # then bypass the parser (_take_known).
        self.parser_idle = True

    def _reset(self) -> None:
        self.status = 0
        self.status_text = b""
        self.header_lines = b""
        self.head_buffer = b""
        self.head_start = 0
        self.in_head = True
        self.chunked = False  # the owner gets the body chunk-framed (the response is chunked)
        # The response is chunked and the owner takes it bare: its trailers go apart.
        self.dechunked = False
        self.until_close = False
        self.keep_alive = True
        self.head_only = False
        self.interim = False
        self.done = False
        self.bytes_received = 0
        self.content_length = -1  # of the response head, when it has one that frames its body
        self.body_left = 0  # bytes of a body framed here (not by the parser) still to come
        # The last bytes read of a chunked response (at most TRAILER_TAIL), where its
        # trailer section is found once the parser has read it whole (last_chunk).
        self.tail = b""

    # -- lifecycle -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self._new_parser()
        loop = asyncio.get_running_loop()
        self._time = loop.time
        self.deadline = Deadline(loop, self._timed_out)

    def start(self, owner: UpstreamOwner, head_only: bool, timeout: float, now: float) -> None:
        """Take part in a new exchange for `owner`; `head_only` for a HEAD request; `now`
        is the loop time."""
        self._reset()
        self.owner = owner
        self.head_only = head_only
        self.server_timeout = timeout  # re-armed on every read from the server
        assert self.deadline is not None
        self.deadline.set(timeout, now)

    def write(self, data: bytes) -> None:
        """Send `data` to the server at the end of this loop iteration (net.outbox)."""
        if not self.closed and self.transport is not None:
            self.outbox.write(self.transport, data)

    def write_eof(self) -> bool:
        """Half-close towards the server after what was written; False if the transport cannot."""
        transport = self.transport
        if self.closed or transport is None or not transport.can_write_eof():
            return False
        self.outbox.flush()
        transport.write_eof()
        return True

    def pause_reading(self) -> None:
        """The client cannot take more yet (backpressure)."""
        if self.transport is not None and not self.closed and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed and self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()

    def release(self, now: float = -1.0) -> None:
        """The exchange is over: rest in the pool if the connection can carry another.
        `now` is the loop time when the caller has it at hand."""
        self.owner = None
        # A response can end while the client still holds us back; the next exchange on
        # this connection must be read, whoever it is for.
        self.resume_reading()
        if self.closed or not self.keep_alive or self.until_close or self.tunnel or self.writing_paused or self.private:
            self.close()
            return
        self.pool.put(self, now)

    def close(self) -> None:
        self.owner = None
        if not self.closed:
            self.closed = True
            self.pool.discard(self)
            if self.deadline is not None:
                self.deadline.cancel()
            if self.transport is not None:
                self.outbox.close(self.transport)

    def abort(self) -> None:
        self.owner = None
        if self.transport is not None and not self.closed:
            self.outbox.flush()
            self.transport.abort()
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.discard(self)
        if self.deadline is not None:
            self.deadline.cancel()
        # Nothing more is read: the parser, which calls this connection back, goes (without
        # that cycle the connection is freed when it closes, not by the cyclic collector).
        self._feed = DETACHED_FEED
        owner = self.owner
        if owner is None:
            return
        if self.until_close and self.status and not self.interim:
            # The response had no length: the end of the connection is its end.
            self.done = True
            self.keep_alive = False
            owner.set_now(self._time())
            owner.response_done(self)
        else:
            owner.upstream_failed(self, "server closed the connection" if exc is None else str(exc))

    def _timed_out(self) -> None:
        owner = self.owner
        if owner is None:
            self.close()  # idle too long in the pool
        else:
            owner.upstream_timeout(self)

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.owner is not None:
            self.owner.upload_blocked(self)

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.owner is not None:
            self.owner.upload_unblocked(self)

    # -- data ------------------------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes_of(_READ_VIEW, nbytes))

    def data_received(self, data: bytes) -> None:
        try:
            self._receive(data)
        except Exception:
            # A bug of ours while handling this response: cut this exchange, keep the worker.
            log.exception("internal error on a response from %s", self.server)
            owner = self.owner
            self.abort()
            if owner is not None:
                owner.abort()

    def _receive(self, data: bytes) -> None:
        owner = self.owner
        if owner is None:
            self.close()  # a server speaking out of turn cannot be trusted with the next request
            return
        if self.tunnel:
            owner.response_data(data)
            return
        # The session's clock for this event: its timers and deadlines below use it.
        now = self._time()
        owner.set_now(now)
        self.bytes_received += len(data)
        if self.body_left:
            self._body_framed_here(owner, data, now)
            return
        if self.in_head and self.parser_idle and not self.head_buffer and self._take_known(owner, data, now):
            return
        if self.in_head:
            self.head_buffer = self.head_buffer + data if self.head_buffer else data
        self.parser_idle = False
        stray = False  # bytes past the end of the response: its trailers cannot be told apart
        try:
            self._feed(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self.status == 101:
                self.tunnel = True
                owner.response_head(self)
                owner.upstream_tunnel(self, data[upgrade.args[0] :])
                return
            owner.upstream_failed(self, "server sent an unexpected upgrade")
            return
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _StrayBytes):
                stray = True
                self._stray()
            else:
                # Our own code failed inside a callback: never the server's fault, never fatal.
                log.error("internal error on a response from %s", self.server, exc_info=exc.__context__)
                self.keep_alive = False
                owner.upstream_failed(self, "internal error")
                return
        except httptools.HttpParserError as exc:
            if self.done:
                stray = True
                self._stray()  # junk after a complete response: the client has all it asked for
            else:
                self.keep_alive = False
                owner.upstream_failed(self, f"invalid response from server: {exc}")
                return
        except Exception:
            log.exception("internal error on a response from %s", self.server)
            self.keep_alive = False
            owner.upstream_failed(self, "internal error")
            return
        if self.done:
            if self.chunked or self.dechunked:
                self._end_chunked(owner, data, stray)
            if self.head_only:
                # httptools cannot be told the response answers a HEAD: start afresh.
                self._new_parser()
            else:
                body = 0 if bodiless_status(self.status) else max(self.content_length, 0)
                if not self.chunked and self.bytes_received == self.head_start + body:
                    self.parser_idle = True  # the message ended with the bytes fed
            owner.response_done(self)  # the pool or the next exchange sets the next deadline
        else:
            if self.chunked or self.dechunked:
                # Only a short read joins the kept tail: a long one would copy its whole
                # body once more (tail + data) to keep its last TRAILER_TAIL bytes.
                tail = self.tail
                if not tail or len(data) >= TRAILER_TAIL:
                    self.tail = data[-TRAILER_TAIL:]
                else:
                    self.tail = (tail + data)[-TRAILER_TAIL:]
            if self.deadline is not None:
                self.deadline.set(self.server_timeout, now)
            owner.flush_response()

    def _end_chunked(self, owner: UpstreamOwner, data: bytes, stray: bool) -> None:
        """The parser has read a chunked response whole, ending in `data`: its last chunk
        and the trailer fields the server sent (proto.http1.last_chunk) go to the owner, as
        a chunk-framed end, or as trailer lines apart when it takes the body bare
        (`dechunked`). A trailer section that cannot be found is dropped."""
        tail = self.tail
        self.tail = b""
        end = None if stray else last_chunk(tail + data if tail else data)
        if end is None:
            if not stray:
                log.info("server %s sent a trailer section over %d bytes: dropped", self.server, TRAILER_TAIL)
            end = LAST_CHUNK
        if self.chunked:
            owner.response_data(end)
        elif len(end) > len(LAST_CHUNK):
            owner.response_trailers(self, end[3:-2])

    def _take_known(self, owner: UpstreamOwner, data: bytes, now: float) -> bool:
        """Take a response whose head the parser accepted before, byte for byte
        (proto.http1.accepted_response_head), without the parser: the head is split
        already and its Content-Length frames the body. False, having done nothing, for
        any other response: a new head, an interim or bodiless status, no Content-Length,
        a HEAD request's answer, bytes past the body's end, or a head not all in `data`."""
        if self.head_only:
            return False
        misses = self.head_misses
        if misses >= 4 and misses & 63:
            # A server whose heads all differ (cookies, ids) would pay for the look-up each
            # time: after 4 misses in a row it is tried once every 64 responses only.
            self.head_misses = misses + 1
            return False
        # A server's heads mostly keep their length (its Date is fixed-width): where the last
        # one ended is tried first, and a find() call costs more than the check. An accepted
        # head holds no blank line, so if these bytes are one, its end is the first.
        end = len(self.known_head)
        if not (
            0 < end <= len(data) - 4
            and data[end] == 13
            and data[end + 1] == 10
            and data[end + 2] == 13
            and data[end + 3] == 10
        ):
            end = data.find(b"\r\n\r\n")
            if end < 0:
                return False
        head = data[:end]
        known = self.known
        if known is None or head != self.known_head:
            known = accepted_response_head(head)
            if known is None:
                self.head_misses = misses + 1
                return False
            self.known_head = head
            self.known = known
        self.head_misses = 0
        split, length = known
        status = status_code(split[0])
        body_start = end + 4
        if length < 0 or split[2] or status < 200 or status == 204 or status == 304:
            return False
        if len(data) > body_start + length:
            return False
        self.content_length = length
        self._take_split(split)
        self.status = status
        self._final_head(split[5])
        self.head_start = body_start
        owner.response_head(self)
        if len(data) > body_start:
            owner.response_data(data[body_start:])
        self.body_left = body_start + length - len(data)
        self._framed_read_ended(owner, now)
        return True

    def _body_framed_here(self, owner: UpstreamOwner, data: bytes, now: float) -> None:
        """More of a body _take_known framed. Bytes past its end come from a server speaking
        out of turn: they are dropped and the connection is not reused."""
        left = self.body_left
        if len(data) > left:
            data = data[:left]
            self.keep_alive = False
        self.body_left = left - len(data)
        owner.response_data(data)
        self._framed_read_ended(owner, now)

    def _framed_read_ended(self, owner: UpstreamOwner, now: float) -> None:
        """A read of a response framed here is handled: the response is done, or more of
        its body is awaited (within the server timeout) once this read's bytes are out."""
        if self.body_left:
            if self.deadline is not None:
                self.deadline.set(self.server_timeout, now)
            owner.flush_response()
        else:
            self.done = True
            owner.response_done(self)

    def _take_split(self, split: ResponseSplit) -> None:
        """What the client will get of a response head (proto.http1.split_response_head)."""
        self.status_text, lines, self.chunked, upgrade, _, _ = split
        self.header_lines = lines + b"\r\nUpgrade: " + upgrade if upgrade else lines

    def _final_head(self, keep_alive: bool) -> None:
        """The head read is the final (non-1xx) one of the response."""
        self.interim = False
        self.in_head = False
        self.head_buffer = b""
        self.keep_alive = keep_alive  # a response read until the close is until_close

    def _stray(self) -> None:
        """The server sent bytes past the end of the response, with no request asking: they
        are dropped, never parsed as a response of the next exchange, and the connection,
        whose state is unknown, is not reused."""
        self.keep_alive = False
        self.parser_idle = False
        log.info("server %s sent bytes after a complete response: connection not reused", self.server)

    # -- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.done:
            raise _StrayBytes  # a second message in the bytes of one exchange

    def on_headers_complete(self) -> None:
        has_length, keep_alive = self._take_head()
        status = self.status = status_code(self.status_text)
        if 100 <= status < 200 and status != 101:
            self.interim = True
            if self.owner is not None:
                self.owner.interim_response(self)
            return
        self._final_head(keep_alive)
        if status == 101:
            return  # the upgrade exception follows; the owner writes the head then
        if self.head_only or bodiless_status(status):
            self.chunked = False
            if self.head_only:
                self.done = True
        elif not self.chunked and not has_length:
            self.until_close = True
        if self.owner is not None:
            self.owner.response_head(self)

    def _take_head(self) -> tuple[bool, bool]:
        """Cut the head just parsed out of the buffered bytes, minus hop-by-hop headers.

        httptools has validated the head; its header lines are passed on byte for byte
        (proto.http1.split_response_head), and it is remembered as accepted
        (proto.http1.accept_response_head). Returns whether the head carries a
        Content-Length, and whether the version and Connection allow another exchange.
        """
        buffer = self.head_buffer
        start = self.head_start
        while buffer[start : start + 2] == b"\r\n":  # llhttp skips empty lines before a status line
            start += 2
        end = buffer.find(b"\r\n\r\n", start)
        self.head_start = end + 4
        split, self.content_length = accept_response_head(buffer[start:end])
        self._take_split(split)
        return split[4], split[5]

    def on_body(self, body: bytes) -> None:
        if self.owner is not None:
            self.owner.response_data(chunk(body) if self.chunked else body)

    def on_message_complete(self) -> None:
        # A chunked body's last chunk and trailers are sent once the read is fed (_end_chunked).
        if self.interim:
            return
        self.done = True

    def head_bytes(self, extra: bytes) -> bytes:
        """The response head for the client: hop-by-hop headers dropped, `extra` (whole
        header lines) appended, always as HTTP/1.1."""
        if self.chunked:
            extra = b"Transfer-Encoding: chunked\r\n" + extra
        if extra:
            return b"".join((b"HTTP/1.1 ", self.status_text, self.header_lines, b"\r\n", extra, b"\r\n"))
        return b"HTTP/1.1 " + self.status_text + self.header_lines + b"\r\n\r\n"


class _StrayBytes(Exception):
    """Raised in a parser callback to stop parsing bytes past the end of the response."""


class UpstreamPool:
    """Idle keep-alive connections of one backend, per server."""

    def __init__(self, max_idle_per_server: int, idle_timeout: float, outbox: Outbox) -> None:
        self.max_idle = max_idle_per_server
        self.idle_timeout = idle_timeout
        self.outbox = outbox  # for the writes of its connections
        self._idle: dict[ServerRuntime, list[UpstreamConnection]] = {}

    def get(self, server: ServerRuntime) -> UpstreamConnection | None:
        idle = self._idle.get(server)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    def put(self, conn: UpstreamConnection, now: float = -1.0) -> None:
        idle = self._idle.setdefault(conn.server, [])
        if len(idle) >= self.max_idle:
            conn.close()
            return
        idle.append(conn)
        if conn.deadline is not None:
            conn.deadline.set(self.idle_timeout, now)

    def discard(self, conn: UpstreamConnection) -> None:
        idle = self._idle.get(conn.server)
        if idle and conn in idle:
            idle.remove(conn)

    def close_all(self) -> None:
        for idle in list(self._idle.values()):
            for conn in list(idle):
                conn.close()
        self._idle.clear()
