"""Per-frontend and per-backend settings resolved once, for the connection classes.

Connections read plain attributes from these objects on the hot path instead of walking
the config model. A reload builds new contexts; connections keep the ones they started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol, TypeVar

from balancer.config.model import Backend, Frontend
from balancer.lb.base import USES_KEY
from balancer.lb.pool import ServerPool
from balancer.net.connect import SourceAddresses, open_server_connection
from balancer.net.gate import Gate
from balancer.net.outbox import Outbox
from balancer.net.parked import ParkedConnection
from balancer.net.peer import proxy_header
from balancer.net.tls import server_context
from balancer.net.upstream import UpstreamPool
from balancer.proto.basic_auth import Userlist
from balancer.proto.errorfile import MAX_ERROR_FILE, ErrorPage, parse_error_file
from balancer.route.client_limits import ClientLimits
from balancer.route.hashkey import KeyFunction, compile_hash_key
from balancer.route.persistence import Persistence
from balancer.route.response_rules import ResponseRuleSet
from balancer.route.rules import backend_rules, frontend_rules
from balancer.runtime.node_count import NodeCount
from balancer.runtime.record import LogSink
from balancer.runtime.state import (
    CONNECT_ERROR,
    CONNECT_REFUSED,
    CONNECT_TIMEOUT,
    STATUS_CLASSES,
    BackendRuntime,
    ServerRuntime,
)

P = TypeVar("P", bound=asyncio.BaseProtocol)
# Seconds between looks for a server slot freed by another worker, while requests wait here.
QUEUE_POLL = 0.005
# What buffer_request reads of a body at most when limits.body sets no smaller bound.
BUFFER_REQUEST_MAX = 1 << 20
log = logging.getLogger("balancer.observe")


class BackendContext:
    def __init__(
        self,
        config: Backend,
        runtime: BackendRuntime,
        outbox: Outbox,
        base_dir: str = ".",
        userlists: dict[str, Userlist] | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.runtime = runtime
        self.servers = ServerPool(runtime)
        self.idle = UpstreamPool(config.pool.max_idle_per_server, config.pool.idle_timeout, outbox)
        self.connect_timeout = config.timeouts.connect
        # Before a retry on the server that just failed: min(timeouts.connect, 1 s), as HAProxy.
        self.retry_delay = min(config.timeouts.connect, 1.0)
        self.server_timeout = config.timeouts.server
        self.retries = config.retries
        self.redispatch = config.redispatch
        self.host_header = config.host.encode()
        self.queue_timeout = config.timeouts.queue
        # Requests waiting for a server slot when every server is at its maxconn, in order.
        self.waiting: deque[tuple[SlotWaiter, Any]] = deque()
        # With several workers: this worker's queue length as the node sees it (the backend's
        # `queued`), and the timer that looks for slots other workers freed; None: one worker.
        self.queued: NodeCount | None = None
        self._poll: asyncio.TimerHandle | None = None
        self.observe = config.observe
        self.send_proxy = config.send_proxy
        self.sources = SourceAddresses(config.source)
        # TLS to servers that ask for it: (context, name to verify and send as SNI).
        self.tls: dict[str, tuple[ssl.SSLContext, str]] = {
            server.name: (server_context(server, base_dir), server.sni or server.address.host)
            for server in config.server
            if server.ssl
        }
        # Only algorithms that hash get a key; the others never pay for extracting one.
        self.key_of: KeyFunction | None = compile_hash_key(config.hash_key) if config.balance in USES_KEY else None
        self.times_responses = config.balance == "least_time"
        self.counts_bytes = config.balance == "least_traffic"
        # Cookie and/or stick table; None (one attribute check per request) without either.
        self.persistence = Persistence.of(config, runtime)
        # [[backend.rule]], [[backend.response_rule]]: None (one attribute check) without any.
        self.rules = backend_rules(config.name, config.rule, userlists)
        self.response_rules = ResponseRuleSet.of(config.response_rule, userlists)
        self.error_pages = load_error_pages(config.errorfiles, base_dir)

    async def connect(
        self, factory: Callable[[], P], server: ServerRuntime, client: tuple[str, int], front: asyncio.BaseTransport
    ) -> P:
        """A new connection to `server` with this backend's settings (TLS, source address,
        a PROXY header naming `client` and the address it reached through `front`)."""
        preamble = proxy_header(self.send_proxy, client, front) if self.send_proxy else b""
        return await open_server_connection(
            factory, server, self.connect_timeout, self.tls.get(server.name), self.sources.take(), preamble
        )

    def other_usable(self, server: ServerRuntime) -> bool:
        """Whether a retry can go to another server than `server`."""
        for other in self.servers.usable:  # noqa: SIM110 (a loop beats a generator compiled)
            if other is not server:
                return True
        return False

    def connect_failed(self, server: ServerRuntime, exc: OSError | TimeoutError) -> str:
        """Count a failed connection attempt against `server`; returns the reason for logs."""
        server.connect_failures += 1
        if isinstance(exc, TimeoutError):
            cause = CONNECT_TIMEOUT
        elif isinstance(exc, ConnectionRefusedError):
            cause = CONNECT_REFUSED
        else:
            cause = CONNECT_ERROR
        reason = "timeout" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        self.exchange_failed(server, cause, f"connect: {reason}")
        return reason

    def exchange_failed(self, server: ServerRuntime, cause: int, reason: str) -> None:
        """Count a failed exchange with `server` (`cause`: an index of runtime.state's
        ERROR_CAUSES) in its errors, the backend's errors by cause and passive observation."""
        server.errors += 1
        self.runtime.errors_by_cause[cause] += 1
        self.server_failed(server, reason)

    def server_failed(self, server: ServerRuntime, reason: str) -> None:
        """Passive observation: a failed exchange (connect failure, timeout, broken or 5xx
        response). After `observe.errors` in a row the server is ejected from this worker
        for `observe.cooldown`, unless that would eject more than `observe.max_ejected`
        of the backend; then the next request after the cooldown probes it again."""
        observe = self.observe
        if observe is None:
            return
        server.failure_streak += 1
        if server.ejected or server.failure_streak < observe.errors:
            return
        servers = self.runtime.servers
        ejected = sum(1 for s in servers if s.ejected)
        if (ejected + 1) * 100 > int(observe.max_ejected[:-1]) * len(servers):
            return
        server.ejected = True
        server.failure_streak = 0
        self.runtime.changed()
        log.warning(
            "server %s/%s ejected for %gs: %d consecutive failures, last: %s",
            self.name,
            server.name,
            observe.cooldown,
            observe.errors,
            reason,
        )
        asyncio.get_running_loop().call_later(observe.cooldown, self._readmit, server)

    def _readmit(self, server: ServerRuntime) -> None:
        if server.ejected:
            server.ejected = False
            self.runtime.changed()
            log.info("server %s/%s back after its cooldown (passive observation)", self.name, server.name)

    def take_server_with_room(self) -> ServerRuntime | None:
        """A usable server below its maxconn (node-wide), with the slot taken; None when
        every usable server is full."""
        for server in self.servers.usable:
            maxconn = server.maxconn
            if not maxconn:
                server.take()
                return server
            if server.try_take(maxconn):
                return server
        return None

    def enqueue(self, waiter: SlotWaiter, request: Any) -> None:
        """`request` of `waiter` waits for a server slot, behind those already waiting. It
        may get one at once (SlotWaiter.slot_ready, before this returns): when others were
        waiting, slots no release handed over (freed by another worker, or on a server back
        in service) go to them first, then to it."""
        behind = bool(self.waiting)
        self.waiting.append((waiter, request))
        if behind:
            self.serve_queue()
        self._queue_changed()

    def serve_queue(self) -> None:
        """Hand every free slot of the usable servers to the requests waiting, in order."""
        for server in self.servers.usable:
            if not self.waiting:
                break
            self.slot_freed(server)

    def forget(self, waiter: SlotWaiter, request: Any) -> None:
        """`request` no longer waits (its client left, or its queue timeout fired)."""
        with contextlib.suppress(ValueError):
            self.waiting.remove((waiter, request))
        self._queue_changed()

    def _queue_changed(self) -> None:
        """Publish the queue's length; while it is not empty and other workers hold slots
        too, look for slots they free (they cannot hand them over)."""
        queued = self.queued
        if queued is None:
            return
        queued.publish(len(self.waiting))
        if self.waiting and self._poll is None:
            self._poll = asyncio.get_running_loop().call_later(QUEUE_POLL, self._poll_slots)

    def _poll_slots(self) -> None:
        self._poll = None
        self.serve_queue()
        self._queue_changed()

    def slot_freed(self, server: ServerRuntime) -> None:
        """`server` may have room again: hand its free slots to the longest-waiting requests.
        The slot is taken before the request gets it (SlotWaiter.slot_ready), so another
        worker cannot fill it in between; a request that no longer waits gives it back."""
        if not self.waiting:
            return
        while self.waiting and server.usable:
            maxconn = server.maxconn
            if not maxconn:
                server.take()
            elif not server.try_take(maxconn):
                break
            waiter, request = self.waiting.popleft()
            if not waiter.slot_ready(request, server):
                server.release()
        self._queue_changed()

    def close(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        self.idle.close_all()


class FrontendContext:
    def __init__(
        self,
        config: Frontend,
        backends: dict[str, BackendContext],
        access_log: LogSink,
        outbox: Outbox,
        gate: Gate | None = None,
        userlists: dict[str, Userlist] | None = None,
        base_dir: str = ".",
        disable_file: str = "",
    ) -> None:
        self.config = config
        self.name = config.name
        self.rules = frontend_rules(config, userlists)
        self.response_rules = ResponseRuleSet.of(config.response_rule, userlists)
        self.monitor_uri = config.monitor_uri.encode()  # b"": none
        self.disable_file = disable_file  # while it exists, monitor_uri answers 503
        self.error_pages = load_error_pages(config.errorfiles, base_dir)
        # Whether any error page of this frontend or of a backend it may use replaces a built-in one.
        self.has_error_pages = bool(self.error_pages) or any(b.error_pages for b in backends.values())
        self.backends = backends
        self.access_log = access_log
        self.outbox = outbox
        self.forwardfor = config.forwardfor
        self.client_timeout = config.timeouts.client
        self.request_timeout = config.timeouts.http_request
        self.scheme = b"https" if config.tls is not None else b"http"
        self.keep_alive_timeout = config.timeouts.http_keep_alive
        self.tunnel_timeout = config.timeouts.tunnel
        self.max_request_line = config.limits.request_line
        self.max_header_bytes = config.limits.headers
        self.max_header_count = config.limits.header_count
        self.max_body = config.limits.body
        # buffer_request: how much of a body is read before a server is chosen; 0: none.
        self.buffer_body = (config.limits.body or BUFFER_REQUEST_MAX) if config.buffer_request else 0
        self.default_backend = backends.get(config.default_backend or "")
        # Request heads read before, by their bytes: net.http_session.KnownRequest (None:
        # read once). `known_hits`: reads made from it since it was last emptied;
        # `known_pause`: reads left that do not look it up (http_session._learn pauses it
        # when a whole table of heads brought no hit: every head differs).
        self.known_requests: dict[bytes, Any] = {}
        self.known_hits = 0
        self.known_pause = 0
        # Live client connections, so a stop can close idle ones and wait for busy ones;
        # `parked`: those of them waiting for room under maxconn (net.gate).
        self.sessions: set[Stoppable] = set()
        self.parked: set[Stoppable] = set()
        self.stopping = False
        self.connections = 0
        self.requests = 0
        self.denied = 0  # refused by a rule (403)
        self.bytes_in = 0  # from clients: request heads and bodies, TCP bytes
        self.bytes_out = 0  # to clients
        self.terminates_tls = config.tls is not None
        self.tls_handshakes = 0  # completed: each TLS connection once
        self.tls_resumed = 0  # of them, resuming a session (ticket or session cache)
        self.responses = [0] * len(STATUS_CLASSES)  # by runtime.state.status_class
        self.gate = gate
        self.limits: ClientLimits | None = None  # rate_limit, conn_limit: server.Balancer.use_tables

    def opened(self, session: Stoppable, transport: asyncio.Transport) -> bool:
        """A new client connection: True when it may be served now, False when it is
        parked over maxconn (net.gate, net.parked); its `admitted` is called once there
        is room."""
        self.sessions.add(session)
        self.connections += 1
        if self.terminates_tls:
            self._count_handshake(transport)
        gate = self.gate
        if gate is None or gate.admit(self.name):
            return True
        self.parked.add(session)
        gate.park(self.name, partial(self._admit_parked, session, ParkedConnection(session, transport)))
        return False

    def _count_handshake(self, transport: asyncio.Transport) -> None:
        """A TLS connection's handshake, done before its session was made (net.tls_transport)."""
        channel = transport.get_extra_info("ssl_object")
        if channel is not None:
            self.tls_handshakes += 1
            if channel.session_reused():
                self.tls_resumed += 1

    def _admit_parked(self, session: Stoppable, parked: ParkedConnection) -> bool:
        """The gate counted `session`, parked until now; False if it closed meanwhile."""
        if session not in self.parked:
            return False
        self.parked.discard(session)
        return parked.admit()

    def closed(self, session: Stoppable) -> None:
        if session in self.sessions:
            self.sessions.discard(session)
            if self.parked and session in self.parked:
                self.parked.discard(session)  # never counted
            elif self.gate is not None:
                self.gate.closed(self.name)


def read_error_page(path: str, name: str) -> ErrorPage:
    """The `errorfiles` file at `path` (`name` as the config writes it) as the proxy sends it;
    ValueError saying what is wrong (unreadable, over MAX_ERROR_FILE, not a response)."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_ERROR_FILE + 1)
    except OSError as exc:
        raise ValueError(f"cannot read error file {name!r}: {exc.strerror or exc}") from None
    if len(data) > MAX_ERROR_FILE:
        raise ValueError(f"error file {name!r} is larger than {MAX_ERROR_FILE} bytes")
    try:
        return parse_error_file(data)
    except ValueError as exc:
        raise ValueError(f"error file {name!r}: {exc}") from None


def load_error_pages(errorfiles: dict[str, str], base_dir: str) -> dict[int, ErrorPage]:
    """The `errorfiles` pages by status. `balancer check` read them (server.unsupported); a
    file that changed since and no longer reads as a response keeps the built-in page, with
    a warning."""
    pages: dict[int, ErrorPage] = {}
    for status, name in errorfiles.items():
        try:
            pages[int(status)] = read_error_page(os.path.join(base_dir, name), name)
        except ValueError as exc:
            log.warning("%s: the built-in page for %s is used", exc, status)
    return pages


class SlotWaiter(Protocol):
    """A session with a request waiting in a backend queue (net.http_session, net.tcp_session)."""

    def slot_ready(self, request: Any, server: ServerRuntime) -> bool:
        """A slot on `server` is now held for `request`; False when the request no longer
        waits (the caller then releases the slot)."""


class Stoppable(Protocol):
    """What a frontend's live connections offer to a graceful stop."""

    def stop(self) -> None:
        """Close now if idle; otherwise close as soon as the exchange in flight ends."""

    def abort(self) -> None:
        """Close now, whatever is in flight."""

    def admitted(self) -> None:
        """Parked over maxconn until now (FrontendContext.opened): serve the connection."""

    def data_received(self, data: bytes) -> None: ...

    def eof_received(self) -> bool | None: ...

    def connection_lost(self, exc: Exception | None) -> None: ...
