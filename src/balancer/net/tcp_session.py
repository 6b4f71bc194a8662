"""The TCP (L4) relay: one TcpSession per client connection, bytes passed through untouched.

The client side is accepted first; what it sends before the server connection is up is
held (up to PENDING_LIMIT, then its reading pauses) and sent once it is (connect retries
and redispatch as for HTTP). Then each direction's write buffer pauses the other side's
reads (backpressure), an end of stream on one side is passed on as a half-close, and the
session ends when both directions are done or either side resets. One inactivity timeout
(`timeouts.client`, or `timeouts.tunnel` once both sides are connected) guards the whole
connection; while a connection attempt runs, `timeouts.connect` bounds it too.

A plain TCP server at a numeric address (no TLS, no PROXY header, no `source` address:
`_plain`) is connected without a task or the loop's transports: net.plain_connect makes the
socket and connects in one C call, waits in the writable set of the client's acceptor's
Poller (net.poller), and gives the server side a PlainTransport; the session relays from the
server side's `connection_made`. The connect timeout is the session's own Deadline. The
loop's `create_connection` in a Task cost ~35k instructions, two tasks, a timer and three
loop passes per connection, and its transports four system calls each that ours do not make
(bench/conn_cost.py --mode tcp). The other servers go through BackendContext.connect in a
task.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, Final, cast

from balancer.lb import least_traffic
from balancer.net.context import BackendContext, FrontendContext
from balancer.net.deadline import Deadline
from balancer.net.peer import client_address, local_address
from balancer.net.plain_connect import PlainConnect
from balancer.net.poller import Poller
from balancer.route.client_limits import REFUSED, ClientLimits
from balancer.route.rules import NumericIP, numeric_ip
from balancer.runtime.record import LogRecord
from balancer.runtime.state import ServerRuntime

log = logging.getLogger("balancer.tcp")

# Bytes a client may send before its server is connected; past them its reading pauses
# until the server is (no unbounded buffer for a client that floods a slow connect).
PENDING_LIMIT: Final = 65536


class _ServerSide(asyncio.Protocol):
    """The server half of a TcpSession.

    `early`: a task-free connect (see the module's docstring): the session relays from
    this side's `connection_made`. `abandon` stops it the way cancelling a task would.
    """

    def __init__(self, session: TcpSession, early: bool = False) -> None:
        self.session = session
        self.early = early
        self.transport: asyncio.Transport | None = None
        self.connecting: PlainConnect | None = None
        self.abandoned = False

    def failed(self, exc: OSError) -> None:
        """The task-free connect failed (after it started)."""
        self.connecting = None
        if not self.abandoned:
            self.session.attempt_failed(self, exc)

    def abandon(self) -> None:
        self.abandoned = True
        connecting = self.connecting
        if connecting is not None:
            self.connecting = None
            connecting.abandon()
        transport = self.transport
        if transport is not None:
            transport.abort()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.connecting = None
        if self.abandoned:
            self.transport.abort()
        elif self.early:
            self.session.server_connected(self)

    def data_received(self, data: bytes) -> None:
        self.session.from_server(data)

    def eof_received(self) -> bool:
        return self.session.server_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.abandoned:
            self.session.server_lost(exc)

    def pause_writing(self) -> None:
        self.session.pause_client()

    def resume_writing(self) -> None:
        self.session.resume_client()


class TcpSession(asyncio.Protocol):
    def __init__(self, frontend: FrontendContext, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """`loop`: the running loop when the caller has it (asyncio.get_running_loop() is a
        getpid() system call per connection on CPython 3.11)."""
        self.frontend = frontend
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.server_side: _ServerSide | None = None
        self.backend: BackendContext | None = frontend.default_backend
        self.server: ServerRuntime | None = None
        self.view: _ConnectionView | None = None  # made when rules, hashes or persistence ask
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.client_until = math.inf  # loop time timeouts.client ends before the server is up
        self.client_eof = False
        self.server_eof_seen = False
        self.closed = False
        self.attempts = 0
        self.t_start = 0.0
        self.record: LogRecord | None = None
        self.deadline = Deadline(self.loop, self._timed_out)
        self.connect_task: asyncio.Task[None] | None = None
        self.attempt: _ServerSide | None = None  # a task-free connect under way (_plain)
        self.connect_t0 = 0.0
        self.proxied: tuple[str, int] | None = None  # the client a PROXY header named
        self.holds_slot = False  # counted in server.active (server maxconn)
        self.queued_at = -1.0  # loop time it started waiting for a server slot; -1: not waiting
        self.limit_entry = -1  # conn_limit counts this connection in this table entry...
        self.limit_tag = 0  # ...while the entry holds this tag (route.client_limits)

    # -- client side -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        if self.frontend.opened(self, self.transport):
            self._serve(transport)
        # else parked over maxconn (net.parked): `admitted` serves it once there is room

    def admitted(self) -> None:
        if not self.closed and self.transport is not None:
            self._serve(self.transport)

    def _serve(self, transport: asyncio.BaseTransport) -> None:
        # Reading is not paused while the server connects: what arrives is held in
        # `pending` (bounded by PENDING_LIMIT). uvloop starts reading after
        # connection_made anyway, so a pause here was no pause there.
        frontend = self.frontend
        self.t_start = now = self.loop.time()
        ip, port = self.proxied or client_address(transport)
        self.record = record = LogRecord(frontend.name, ip, port, time.time())
        record.t_request = 0.0
        # timeouts.client is armed by what comes next (the connect attempt, which takes the
        # nearer of it and timeouts.connect; the queue's own timeout; a refusal closes):
        # arming it here too would cost a second loop timer per connection.
        if frontend.client_timeout > 0:
            self.client_until = now + frontend.client_timeout
        if frontend.limits is not None and self._over_limits(frontend.limits, ip):
            return
        decision = frontend.rules.evaluate(self._view()) if frontend.rules.rules else frontend.rules.default
        if decision.verdict != "backend":
            record.termination = "PR"
            self._close()
            return
        if decision.backend:
            self.backend = frontend.backends.get(decision.backend)
        if self.backend is None:
            record.termination = "PC"
            self._close()
            return
        record.backend_name = self.backend.name
        backend_rules = self.backend.rules  # [[backend.rule]]: src tests, deny/allow
        if backend_rules is not None and backend_rules.evaluate(self._view()).verdict != "backend":
            record.termination = "PR"
            self._close()
            return
        self._dispatch(None)

    def _view(self) -> _ConnectionView:
        view = self.view
        if view is None:
            record = self.record
            assert record is not None and self.transport is not None
            view = self.view = _ConnectionView(record.client_ip, record.client_port, self.transport)
        return view

    def _over_limits(self, limits: ClientLimits, ip: str) -> bool:
        """conn_limit, then rate_limit (per connection in TCP mode): True when the
        connection is refused (closed now, or held by the tarpit and closed later)."""
        record = self.record
        assert record is not None
        entry, tag = limits.open_connection(ip)
        if entry == REFUSED:
            record.termination = "RC"
            self._close()
            return True
        if entry >= 0:
            self.limit_entry, self.limit_tag = entry, tag
        key = limits.rate_key(ip)
        if key is None or not limits.request(key):
            return False
        if limits.tarpit:
            record.termination = "PT"
            self.deadline.clear()
            self.loop.call_later(self.frontend.config.timeouts.tarpit, self._close)
            return True
        record.termination = "RR"
        self._close()
        return True

    def _dispatch(self, avoid: ServerRuntime | None, server: ServerRuntime | None = None, held: bool = False) -> None:
        """Connect to `server`, or to the one the algorithm picks (avoiding `avoid`); `held`:
        a slot on `server` is already taken for this connection (its turn in the queue)."""
        backend = self.backend
        assert backend is not None and self.record is not None
        persistence = backend.persistence
        if server is None:
            if persistence is not None and avoid is None:
                # A stick table on src: the client goes back to its server (route.persistence).
                server = persistence.lookup(None, self.record.client_ip)
            if server is None:
                key = backend.key_of(self._view()) if backend.key_of is not None else None
                server = backend.servers.pick(key, avoid)
                if server is not None and persistence is not None and avoid is None:
                    server = persistence.claim(self.record.client_ip, server)
        if server is None:
            self.record.termination = "SC"
            self._close()
            return
        if not held:
            maxconn = server.maxconn
            if not maxconn:
                server.take()
            elif backend.waiting or not server.try_take(maxconn):
                # Full, or connections wait already: another server with room, else the
                # backend's FIFO queue (as HTTP requests do).
                free = None if backend.waiting else backend.take_server_with_room()
                if free is None:
                    self.queued_at = self.loop.time()
                    self.deadline.set(backend.queue_timeout)
                    backend.enqueue(self, self)
                    return
                server = free
        if persistence is not None:
            persistence.assigned(self.record.client_ip, server)
        # The slot is held from now until the connection ends.
        self.holds_slot = True
        self.server = server
        self.record.server_name = server.name
        self.attempts += 1
        if _plain(backend, server):
            self._connect_plain(server)
        else:
            self._client_deadline()  # backend.connect bounds the attempt itself
            self.connect_task = self.loop.create_task(self._connect(server, backend))

    def _client_deadline(self) -> None:
        """The deadline is what is left of timeouts.client (none when it is 0)."""
        if self.client_until != math.inf:
            self.deadline.set(max(self.client_until - self.loop.time(), 0.001))

    # -- the task-free connect (see the module's docstring) --------------------------------

    def _connect_plain(self, server: ServerRuntime) -> None:
        backend = self.backend
        assert backend is not None
        # The client's transport is one of ours (net.plain_transport, net.tls_transport):
        # its acceptor's Poller takes the server side too.
        poller: Poller = cast(Any, self.transport).poller
        self.connect_t0 = now = self.loop.time()
        # The connect attempt is bounded by timeouts.connect within what is left of
        # timeouts.client (the Deadline holds one time: the nearer one).
        limit = self.client_until - now
        if backend.connect_timeout > 0 and backend.connect_timeout < limit:
            limit = backend.connect_timeout
        self.deadline.set(limit if limit != math.inf else 0.0, now)
        side = self.attempt = _ServerSide(self, early=True)
        try:
            connecting = PlainConnect(self.loop, poller, server.host, server.port, side, side.failed)
        except OSError as exc:  # refused at once, or no socket to be had
            # Told from the loop, not from here: this runs inside a freed slot's hand-over
            # (context.slot_freed), and a failure frees the slot again, for the next queued
            # session, which would fail within it in turn: one stack frame deeper per
            # queued session when a dead server refuses them all.
            self.loop.call_soon(self.attempt_failed, side, exc)
            return
        if side.transport is None and not side.abandoned:
            side.connecting = connecting  # still under way

    def attempt_failed(self, side: _ServerSide, exc: OSError) -> None:
        """The task-free connect of `side` failed."""
        if side is not self.attempt:
            return
        self.attempt = None
        self._connect_failed(exc)

    def server_connected(self, side: _ServerSide) -> None:
        """The task-free connect's server side is connected: relay."""
        if side is self.attempt:
            self.attempt = None
        if self.closed:
            if side.transport is not None:
                side.transport.close()
            return
        server = self.server
        assert server is not None
        self._relay(side, server, self.connect_t0)

    def _connect_failed(self, exc: OSError | TimeoutError) -> None:
        """A connect attempt to `self.server` failed: retry, redispatch, or give up (SC)."""
        if self.closed:
            return
        backend, server = self.backend, self.server
        assert backend is not None and server is not None
        reason = backend.connect_failed(server, exc)
        self._release_slot()
        log.warning("connect to %s/%s (%s) failed: %s", backend.name, server.name, server.address, reason)
        if self.attempts <= backend.retries:
            self._client_deadline()  # between attempts only timeouts.client runs
            if backend.redispatch and backend.other_usable(server):
                self._dispatch(server)
            else:
                # The same server, after a turn-around (as HTTP: HttpSession._retry).
                self.loop.call_later(backend.retry_delay, self._retry_same, server)
        else:
            assert self.record is not None
            self.record.termination = "SC"
            self._close()

    def _retry_same(self, server: ServerRuntime) -> None:
        if self.closed:
            return
        if server.usable:
            self._dispatch(None, server)
        else:
            self._dispatch(server)

    def slot_ready(self, request: object, server: ServerRuntime) -> bool:
        """A slot on `server` is held for this connection, which waited in the queue."""
        if self.closed or self.queued_at < 0:
            return False
        assert self.record is not None
        self.record.t_queue = (self.loop.time() - self.queued_at) * 1000
        self.queued_at = -1.0
        self._dispatch(None, server, held=True)
        return True

    def _release_slot(self) -> None:
        if self.holds_slot and self.server is not None:
            self.holds_slot = False
            self.server.release()
            if self.backend is not None and self.backend.waiting:
                self.backend.slot_freed(self.server)
        elif self.queued_at >= 0 and self.backend is not None:
            self.queued_at = -1.0
            self.backend.forget(self, self)

    async def _connect(self, server: ServerRuntime, backend: BackendContext) -> None:
        """The connect through BackendContext.connect (TLS, PROXY header, source address)."""
        t0 = self.loop.time()
        record = self.record
        assert self.transport is not None and record is not None
        try:
            side = await backend.connect(
                lambda: _ServerSide(self), server, (record.client_ip, record.client_port), self.transport
            )
        except asyncio.CancelledError:
            return
        except (OSError, TimeoutError) as exc:
            self.connect_task = None
            self._connect_failed(exc)
            return
        self.connect_task = None
        if self.closed:
            if side.transport is not None:
                side.transport.close()
            return
        self._relay(side, server, t0)

    def _relay(self, side: _ServerSide, server: ServerRuntime, t0: float) -> None:
        """Both sides are connected (the server's since `t0`): what the client sent goes on."""
        assert self.record is not None and self.transport is not None
        self.server_side = side
        server.requests += 1
        now = self.loop.time()
        self.record.t_connect = (now - t0) * 1000
        self.deadline.set(self.frontend.tunnel_timeout, now)
        if self.pending and side.transport is not None:
            side.transport.write(self.pending[0] if len(self.pending) == 1 else b"".join(self.pending))
            self.pending.clear()
            if self.pending_size > PENDING_LIMIT and not self.client_eof:
                self.transport.resume_reading()
            self.pending_size = 0
        if self.client_eof:
            self._server_write_eof()

    def data_received(self, data: bytes) -> None:
        assert self.record is not None
        self.record.bytes_in += len(data)
        side = self.server_side
        if side is not None and side.transport is not None:
            self.deadline.set(self.frontend.tunnel_timeout)
            side.transport.write(data)
        else:
            # Still connecting or queued (its own deadline runs): held, within a bound.
            self.pending.append(data)
            self.pending_size += len(data)
            if self.pending_size > PENDING_LIMIT and self.transport is not None:
                self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.client_eof = True
        if self.server_eof_seen:
            # Both directions are done: closing sends the server its FIN (after what is
            # still buffered toward it), so no shutdown() first: a syscall per connection.
            self._close()
            return False
        if self.server_side is not None:
            self._server_write_eof()
        return True  # keep our sending side open: the server may still answer

    def _server_write_eof(self) -> None:
        side = self.server_side
        if side is not None and side.transport is not None and side.transport.can_write_eof():
            side.transport.write_eof()

    def pause_writing(self) -> None:
        side = self.server_side
        if side is not None and side.transport is not None:
            side.transport.pause_reading()

    def resume_writing(self) -> None:
        side = self.server_side
        if side is not None and side.transport is not None and not side.transport.is_closing():
            side.transport.resume_reading()

    def pause_client(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_client(self) -> None:
        if self.transport is not None and not self.closed and not self.client_eof:
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.record is not None and self.record.termination == "--" and not self.client_eof:
            self.record.termination = "CD" if exc is not None else "--"
        self._close()

    # -- server side -----------------------------------------------------------------------

    def from_server(self, data: bytes) -> None:
        assert self.record is not None
        self.record.bytes_out += len(data)
        self.deadline.set(self.frontend.tunnel_timeout)
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def server_eof(self) -> bool:
        self.server_eof_seen = True
        if self.client_eof:
            self._close()  # the client's FIN goes with the close, as in eof_received
            return False
        if self.transport is not None and not self.closed and self.transport.can_write_eof():
            self.transport.write_eof()
        return True

    def server_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.record is not None and self.record.termination == "--":
            self.record.termination = "SD"
            if self.server is not None:
                self.server.errors += 1
        self._close()

    # -- ending ----------------------------------------------------------------------------

    def _timed_out(self) -> None:
        attempt = self.attempt
        if attempt is not None and self.server_side is None and self.loop.time() < self.client_until - 0.001:
            # timeouts.connect, within timeouts.client: this attempt failed, not the connection.
            self.attempt = None
            attempt.abandon()
            self._connect_failed(TimeoutError())
            return
        if self.record is not None:
            if self.queued_at >= 0:
                self.record.termination = "sQ"  # no server slot within timeouts.queue
            else:
                self.record.termination = "cD" if self.server_side is not None else "sC"
        self._close()

    def stop(self) -> None:
        if self.server_side is None:
            self._close()
        # a connection in use is left to finish until the stop's grace runs out

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        side = self.server_side
        if side is not None and side.transport is not None:
            side.transport.abort()
        self._close()

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.deadline.cancel()
        self.frontend.closed(self)
        if self.limit_entry >= 0 and self.frontend.limits is not None:
            self.frontend.limits.closed(self.limit_entry, self.limit_tag)
            self.limit_entry = -1
        if self.connect_task is not None:
            self.connect_task.cancel()
        attempt = self.attempt
        if attempt is not None:
            self.attempt = None
            if attempt is not self.server_side:
                attempt.abandon()
        if self.transport is not None:
            self.transport.close()
        side = self.server_side
        self._release_slot()
        if side is not None:
            if self.server is not None and self.record is not None:
                self.server.bytes_in += self.record.bytes_in
                self.server.bytes_out += self.record.bytes_out
                if self.backend is not None and self.backend.counts_bytes:
                    least_traffic.observe_bytes(self.server, self.record.bytes_in + self.record.bytes_out)
            if side.transport is not None:
                side.transport.close()
            # The two sides point at each other: without that cycle this session is freed
            # when it closes, not by the cyclic garbage collector.
            self.server_side = None
        record = self.record
        if record is not None:
            record.t_total = (self.loop.time() - self.t_start) * 1000
            self.frontend.bytes_in += record.bytes_in
            self.frontend.bytes_out += record.bytes_out
            self.frontend.access_log.log(record)


class TcpSessionMaker:
    """Makes the TcpSession of each connection to `frontend` on `loop` (an acceptor's
    protocol factory): a compiled call, as net.http_session's HttpSessionMaker."""

    __slots__ = ("frontend", "loop")

    def __init__(self, frontend: FrontendContext, loop: asyncio.AbstractEventLoop) -> None:
        self.frontend = frontend
        self.loop = loop

    def __call__(self) -> TcpSession:
        return TcpSession(self.frontend, self.loop)


def _plain(backend: BackendContext, server: ServerRuntime) -> bool:
    """Whether `server` is reached by a plain TCP connect to a numeric address (the
    task-free path)."""
    return (
        not backend.send_proxy
        and not backend.sources.addresses
        and server.numeric
        and (not backend.tls or server.name not in backend.tls)
    )


class _ConnectionView:
    """A TCP connection as rule conditions and hash keys see it: only `src` can match."""

    method = b""
    path = b""
    query = b""
    host = b""
    url = b""

    def __init__(self, ip: str, port: int, transport: asyncio.BaseTransport) -> None:
        self.client_ip = ip
        self.client_port = port
        self._transport = transport
        self.headers: list[tuple[bytes, bytes]] = []
        self.hop_headers: list[tuple[bytes, bytes]] | None = None

    @property
    def local_address(self) -> str:
        return local_address(self._transport)

    def source_ip(self) -> NumericIP | None:
        return numeric_ip(self.client_ip)

    def local_port(self) -> int:
        return 0  # tcp rules test only src (config.load)

    def over_tls(self) -> bool:
        return False

    def forget_forwarded_for(self) -> None:
        pass
