"""The TCP (L4) relay: one TcpSession per client connection, bytes passed through untouched.

The client side is accepted first; reading from it pauses until the server connection is
up (connect retries and redispatch as for HTTP). Then each direction's write buffer
pauses the other side's reads (backpressure), an end of stream on one side is passed on as
a half-close, and the session ends when both directions are done or either side resets.
One inactivity timeout (`timeouts.client`, or `timeouts.tunnel` once both sides are
connected) guards the whole connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import cast

from balancer.lb import least_traffic
from balancer.net.context import BackendContext, FrontendContext
from balancer.net.deadline import Deadline
from balancer.net.peer import client_address, local_address
from balancer.route.client_limits import REFUSED, ClientLimits
from balancer.route.rules import NumericIP, numeric_ip
from balancer.runtime.record import LogRecord
from balancer.runtime.state import ServerRuntime

log = logging.getLogger("balancer.tcp")


class _ServerSide(asyncio.Protocol):
    """The server half of a TcpSession."""

    def __init__(self, session: TcpSession) -> None:
        self.session = session
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        self.session.from_server(data)

    def eof_received(self) -> bool:
        return self.session.server_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.server_lost(exc)

    def pause_writing(self) -> None:
        self.session.pause_client()

    def resume_writing(self) -> None:
        self.session.resume_client()


class TcpSession(asyncio.Protocol):
    def __init__(self, frontend: FrontendContext) -> None:
        self.frontend = frontend
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.server_side: _ServerSide | None = None
        self.backend: BackendContext | None = frontend.default_backend
        self.server: ServerRuntime | None = None
        self.pending: list[bytes] = []
        self.client_eof = False
        self.server_eof_seen = False
        self.closed = False
        self.attempts = 0
        self.t_start = 0.0
        self.record: LogRecord | None = None
        self.deadline = Deadline(self.loop, self._timed_out)
        self.connect_task: asyncio.Task[None] | None = None
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
        assert self.transport is not None
        self.transport.pause_reading()  # until a server is connected
        frontend = self.frontend
        self.t_start = self.loop.time()
        ip, port = self.proxied or client_address(transport)
        self.record = record = LogRecord(frontend.name, ip, port, time.time())
        record.t_request = 0.0
        self.deadline.set(frontend.client_timeout)
        self.view = _ConnectionView(ip, port, transport)
        if frontend.limits is not None and self._over_limits(frontend.limits, ip):
            return
        decision = frontend.rules.evaluate(self.view) if frontend.rules.rules else frontend.rules.default
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
        if backend_rules is not None and backend_rules.evaluate(self.view).verdict != "backend":
            record.termination = "PR"
            self._close()
            return
        self._dispatch(None)

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
                server = persistence.lookup(None, self.view.client_ip)
            if server is None:
                key = backend.key_of(self.view) if backend.key_of is not None else None
                server = backend.servers.pick(key, avoid)
                if server is not None and persistence is not None and avoid is None:
                    server = persistence.claim(self.view.client_ip, server)
        if server is None:
            self.record.termination = "SC"
            self._close()
            return
        if not held:
            maxconn = server.config.maxconn
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
            persistence.assigned(self.view.client_ip, server)
        # The slot is held from now until the connection ends.
        self.holds_slot = True
        self.server = server
        self.record.server_name = server.name
        self.attempts += 1
        self.connect_task = self.loop.create_task(self._connect(server, backend))

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
        t0 = self.loop.time()
        assert self.transport is not None
        try:
            side = await backend.connect(
                lambda: _ServerSide(self), server, (self.view.client_ip, self.view.client_port), self.transport
            )
        except asyncio.CancelledError:
            return
        except (OSError, TimeoutError) as exc:
            self.connect_task = None
            if self.closed:
                return
            reason = backend.connect_failed(server, exc)
            self._release_slot()
            log.warning("connect to %s/%s (%s) failed: %s", backend.name, server.name, server.address, reason)
            if self.attempts <= backend.retries:
                if backend.redispatch and backend.other_usable(server):
                    self._dispatch(server)
                else:
                    # The same server, after a turn-around (as HTTP: HttpSession._retry).
                    self.loop.call_later(backend.retry_delay, self._retry_same, server)
            else:
                assert self.record is not None
                self.record.termination = "SC"
                self._close()
            return
        self.connect_task = None
        if self.closed:
            if side.transport is not None:
                side.transport.close()
            return
        assert self.record is not None and self.transport is not None
        self.server_side = side
        server.requests += 1
        self.record.t_connect = (self.loop.time() - t0) * 1000
        self.deadline.set(self.frontend.tunnel_timeout)
        if self.pending and side.transport is not None:
            side.transport.write(b"".join(self.pending))
            self.pending.clear()
        if self.client_eof:
            self._server_write_eof()
        else:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        assert self.record is not None
        self.record.bytes_in += len(data)
        side = self.server_side
        if side is not None and side.transport is not None:
            self.deadline.set(self.frontend.tunnel_timeout)
            side.transport.write(data)
        else:
            self.pending.append(data)  # still connecting or queued: its own deadline runs

    def eof_received(self) -> bool:
        self.client_eof = True
        if self.server_side is not None:
            self._server_write_eof()
        if self.server_eof_seen:
            self._close()
            return False
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
        if self.transport is not None and not self.closed and self.transport.can_write_eof():
            self.transport.write_eof()
        if self.client_eof:
            self._close()
            return False
        return True

    def server_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.record is not None and self.record.termination == "--":
            self.record.termination = "SD"
            if self.server is not None:
                self.server.errors += 1
        self._close()

    # -- ending ----------------------------------------------------------------------------

    def _timed_out(self) -> None:
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
