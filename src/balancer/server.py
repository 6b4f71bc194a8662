"""One balancer inside one process: listeners, the live state, and reloads.

`Balancer(config)` binds every frontend's addresses and serves them on the running loop.
A listener looks its frontend up at accept time, so `reload(new_config)` swaps in new
frontends and backends without closing a listening socket: connections accepted before
keep the settings they started with, new ones get the new settings, and run-time server
state (drain/maint, weight, health) carries over to servers that still exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from collections.abc import Callable
from functools import partial
from typing import cast

from balancer.config import ConfigError, Problem, parse_config
from balancer.config.locate import KeyPath, SourceMap
from balancer.config.model import Config, Frontend
from balancer.config.values import Address
from balancer.heap import HeapTrimmer
from balancer.lb.base import REGISTRY
from balancer.net.acceptor import Acceptor
from balancer.net.context import BackendContext, FrontendContext, read_error_page
from balancer.net.gate import Gate
from balancer.net.http_session import HttpSessionMaker
from balancer.net.outbox import Outbox
from balancer.net.plain_transport import PlainAcceptor
from balancer.net.protocol_choice import ProtocolChoice
from balancer.net.proxy_accept import ProxiedSession, ProxyHeaderReader
from balancer.net.tcp_session import TcpSessionMaker
from balancer.net.tls import TicketKeysError, frontend_context, unsettable
from balancer.net.tls_transport import TlsAcceptor
from balancer.net.transport_registry import untrack_transports
from balancer.proto.basic_auth import Userlist, hash_supported
from balancer.route.client_limits import ClientLimits
from balancer.runtime.client_table import ClientTable
from balancer.runtime.client_tables import LIMIT_CELLS, LIMIT_TABLE_SIZE, limit_expire, limited
from balancer.runtime.shared import SharedState
from balancer.runtime.state import BackendRuntime
from balancer.runtime.stick_journal import StickJournal
from balancer.stats.accesslog import AccessLog
from balancer.stats.logformat import LogFormatError, LogTemplate, is_template
from balancer.stats.syslog import facility_code

log = logging.getLogger("balancer")

SYNC_INTERVAL = 0.1  # seconds between a worker's looks at the shared state


class UnsupportedConfig(Exception):
    """A valid config asks for something this build cannot do yet."""


# Linux's IP_FREEBIND and IP_TRANSPARENT (linux/in.h); Python does not name them everywhere.
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)


def _refuse_if_taken(family: int, host: str, port: int, freebind: bool) -> None:
    """OSError EADDRINUSE if another socket listens on host:port. SO_REUSEPORT alone would
    let a second balancer started by mistake (same user) share the port silently and take
    half of the connections; a plain bind first finds it, as it would without reuseport.
    Our own sockets of the same address would be found as well: only the first socket of
    an address is checked."""
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if freebind:
            probe.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        if family == socket.AF_INET6 and host == "::":
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        probe.bind((host, port))


def bind_socket(
    address: Address, backlog: int, freebind: bool = False, reuseport: bool = False, joining: bool = False
) -> socket.socket:
    """A listening socket for `address` with a queue of `backlog` connections (the kernel caps
    it at net.core.somaxconn); raises OSError with the address in the message. `freebind`:
    the address need not be on this node yet (a [vrrp] VIP the peer holds now); with
    CAP_NET_ADMIN the socket is also IP_TRANSPARENT, which its connections inherit: one
    accepted just before the VIP moved can still send its response from the VIP (a freebind
    socket's sends fail once the address is gone, and the client waits out its timeout).
    `reuseport`: SO_REUSEPORT, so that one such socket per worker can share the address and
    the kernel spreads new connections over them (supervisor.Master.bind); `joining`: one
    of ours already listens there, so the check that nobody else does is skipped."""
    try:
        if address.is_unix:
            if os.path.exists(address.path):
                os.unlink(address.path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(address.path)
        else:
            host = address.host or "::"
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            if not address.host:
                family = socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET
                host = "::" if family == socket.AF_INET6 else "0.0.0.0"
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuseport:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if freebind:
                sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
                with contextlib.suppress(PermissionError):
                    sock.setsockopt(socket.IPPROTO_IP, IP_TRANSPARENT, 1)
            if family == socket.AF_INET6 and not address.host:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            if reuseport and not joining and address.port:
                _refuse_if_taken(family, host, address.port, freebind)
            sock.bind((host, address.port))
        sock.listen(backlog)
        sock.setblocking(False)
        return sock
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on {address}: {exc.strerror}") from None


def listen(sock: socket.socket, frontend: Frontend) -> None:
    """Give `sock` (bound) the frontend's listen queue and tell the kernel whether to hand
    a connection over only once its first bytes arrive (TCP_DEFER_ACCEPT, where
    `frontend.defers_accept()`): a reload calls this again with the new values. The
    deferral lasts 1 s: a client that stays silent is handed over after one SYN-ACK
    retransmission."""
    sock.listen(frontend.backlog)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1 if frontend.defers_accept() else 0)


class Listener:
    """One listening socket; it serves whichever frontend is current for its address."""

    def __init__(
        self, address: Address, sock: socket.socket, frontend: FrontendContext, tls: ssl.SSLContext | None = None
    ) -> None:
        self.address = address
        # Non-blocking as a Python object too (timeout 0), before `start` dups it: a listening
        # socket is one open file description shared by the master and every worker, and its
        # O_NONBLOCK flag with it. A worker's socket made from an inherited descriptor has
        # the default timeout (None), and socket.dup() copies the timeout with settimeout,
        # which would clear O_NONBLOCK for every process until the new Acceptor's add_reader
        # set it again. A worker covering that slot and accepting in that moment would block
        # in accept4 until some other client connected, its loop and every connection it
        # holds stalled. setblocking(False) only ever sets the flag.
        sock.setblocking(False)
        self.sock = sock
        self.frontend = frontend
        self.tls = tls
        self.server: Acceptor | None = None
        self.closed = False
        self.unlink_on_close = True  # False in workers: the master owns unix socket paths
        self._resuming: asyncio.Task[None] | None = None
        # Another worker slot's socket (supervisor.Master.bind): served only while that
        # slot has no worker serving (`cover`), so its connections never wait for a restart.
        self.owner = -1  # the slot whose socket it is; -1: this worker's own
        self.covering = False
        self.held = False  # paused by the gate (maxconn)
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop it serves on, once started

    @property
    def wanted(self) -> bool:
        """Whether it should accept when the gate allows: its own socket, or one it covers."""
        return self.owner < 0 or self.covering

    def pause(self) -> None:
        """Stop accepting: connections wait in the kernel's queue (see net.gate)."""
        if self.server is not None:
            self.server.close()
            self.server = None

    def resume(self) -> None:
        if self.server is None and not self.closed and self.wanted:
            task = asyncio.get_running_loop().create_task(self.start())
            self._resuming = task  # keep a reference until it has run

    def hold(self) -> None:
        """The gate's pause (maxconn reached)."""
        self.held = True
        self.pause()

    def release(self) -> None:
        """The gate's resume."""
        self.held = False
        self.resume()

    def cover(self, on: bool) -> None:
        """Accept from another slot's socket (its worker is gone) or stop (it is back)."""
        if on == self.covering:
            return
        self.covering = on
        if not on:
            self.pause()
        elif not self.held:
            self.resume()

    def session_factory(self, loop: asyncio.AbstractEventLoop) -> Callable[[], asyncio.BaseProtocol]:
        """What makes each connection's protocol, chosen once per start: compiled (a maker
        or a partial of a compiled class), so that accepting a connection runs no
        interpreted frame."""
        frontend = self.frontend
        config = frontend.config
        make: Callable[[], ProxiedSession]
        if config.mode == "tcp":
            make = TcpSessionMaker(frontend, loop)
        elif config.h2c or (config.tls is not None and "h2" in config.tls.alpn):
            # HTTP/2 offered: the ALPN choice or the first bytes tell which session serves.
            make = partial(ProtocolChoice, frontend, config.h2c)
        else:
            make = HttpSessionMaker(frontend)
        if config.accept_proxy and self.tls is None:
            # (On a TLS frontend the acceptor reads the header before the handshake.)
            return partial(ProxyHeaderReader, make, frontend.request_timeout)
        return cast(Callable[[], asyncio.BaseProtocol], make)

    async def start(self) -> None:
        if self.server is not None or self.closed or self.held or not self.wanted:
            # Another start ran first, or a pause (the gate's hold, the end of a cover, a
            # close) came between a resume and this: accepting twice from one socket, or from
            # another worker's for good, must not be.
            return
        self.loop = loop = asyncio.get_running_loop()
        factory = self.session_factory(loop)
        config = self.frontend.config
        # The acceptor gets a duplicate: closing it to pause must not close our socket.
        # (dup() keeps the shared O_NONBLOCK set: self.sock is non-blocking, see __init__.)
        sock = self.sock.dup()
        listen(sock, config)  # as create_server does: a reload's backlog and defer_accept
        if self.tls is not None:
            # TLS on the socket itself (net.tls_transport), not the loop's memory-BIO TLS.
            self.server = TlsAcceptor(sock, self.tls, factory, self.frontend.request_timeout, config.accept_proxy)
        else:
            # Plain HTTP and TCP on the socket too (net.plain_transport): read before any
            # poll, and no address asked for that accept gave; a TCP relay's server side
            # is connected the same way (net.plain_connect).
            self.server = PlainAcceptor(sock, factory)

    def bound(self) -> tuple[str, int]:
        name = self.sock.getsockname()
        if isinstance(name, str):
            return (name, 0)
        return (name[0], name[1])

    def close(self) -> None:
        self.closed = True
        if self.server is not None:
            self.server.close()
            self.server = None
        self.sock.close()
        if self.unlink_on_close and self.address.is_unix and os.path.exists(self.address.path):
            os.unlink(self.address.path)


def unsupported(config: Config, base_dir: str = ".") -> list[tuple[KeyPath, str]]:
    """What this build cannot run, by key path: settings it does not implement yet, and
    certificates that do not load."""
    problems: list[tuple[KeyPath, str]] = []
    if is_template(config.global_.log_format):
        try:
            LogTemplate(config.global_.log_format)
        except LogFormatError as exc:
            problems.append((("global", "log_format"), f'{exc}; or use "text" or "json"'))
    for index, frontend in enumerate(config.frontend):
        if frontend.tls is not None:
            try:
                frontend_context(frontend.tls, base_dir)
            except TicketKeysError as exc:
                problems.append((("frontend", index, "tls", "ticket_keys"), str(exc)))
            except OSError as exc:
                problems.append((("frontend", index, "tls", "cert"), str(exc)))
            for key, what, instead in unsettable(frontend.tls, base_dir):
                message = (
                    f"this build serves TLS with Python's ssl, which cannot set {what}: build balancer with "
                    "its C extensions (pip install without BALANCER_PURE)"
                )
                problems.append((("frontend", index, "tls", key), message + (f", or {instead}" if instead else "")))
    for index, frontend in enumerate(config.frontend):
        if frontend.tls is not None and frontend.mode == "http":
            others = [p for p in frontend.tls.alpn if p not in ("h2", "http/1.1", "http/1.0")]
            if others:
                problems.append(
                    (
                        ("frontend", index, "tls", "alpn"),
                        f"ALPN {', '.join(others)}: an HTTP frontend speaks h2, http/1.1 and http/1.0",
                    )
                )
        if frontend.h2c and frontend.mode != "http":
            problems.append((("frontend", index, "h2c"), 'h2c needs mode = "http"'))
    errorfiles = [(("frontend", i), f.errorfiles) for i, f in enumerate(config.frontend)]
    errorfiles += [(("backend", i), b.errorfiles) for i, b in enumerate(config.backend)]
    for where, files in errorfiles:
        for status, name in files.items():
            try:
                read_error_page(os.path.join(base_dir, name), name)
            except ValueError as exc:
                problems.append(((*where, "errorfiles", status), str(exc)))
    for index, userlist in enumerate(config.userlist):
        for number, user in enumerate(userlist.user):
            if user.password_hash is not None and not hash_supported(user.password_hash):
                problems.append(
                    (
                        ("userlist", index, "user", number, "password_hash"),
                        "password_hash is not a crypt(3) hash this system supports ($1$, $5$, $6$, $2b$/$2y$)",
                    )
                )
    for index, backend in enumerate(config.backend):
        if backend.balance not in REGISTRY:
            problems.append(
                (
                    ("backend", index, "balance"),
                    f"balance {backend.balance!r} is not available in this version "
                    f"(available: {', '.join(sorted(REGISTRY))})",
                )
            )
    return problems


NOTHING_TO_SERVE = (
    "nothing to serve: the file has no [[frontend]], [[l4]], [dsr] or [dns] (add a frontend with name, bind"
    " and default_backend; a backend only serves through a frontend)"
)


def parse_runnable(text: str, file: str) -> Config:
    """parse_config, plus a refusal (with lines) of what this build cannot run yet, and of
    a file that would run and listen on nothing: empty, or only [global] or backends (a
    valid document, which import-haproxy may produce from part of a file, but not a
    balancer). A file holding only tier tables ([[l4]], [dsr], [dns]) is something to serve.
    Raises ConfigError listing every problem."""
    config = parse_config(text, file)
    problems = unsupported(config, os.path.dirname(os.path.abspath(file)))
    if not config.frontend and not config.l4 and config.dsr is None and config.dns is None:
        problems.insert(0, ((), NOTHING_TO_SERVE))
    if problems:
        source = SourceMap.from_text(text)
        raise ConfigError([Problem(file, source.line_of(path), message) for path, message in problems])
    return config


def check_supported(config: Config, base_dir: str = ".") -> None:
    problems = unsupported(config, base_dir)
    if problems:
        raise UnsupportedConfig("; ".join(message for _, message in problems))


class Balancer:
    def __init__(self, config: Config, access_log: AccessLog | None = None, base_dir: str = ".") -> None:
        """`base_dir`: where relative file names of the config (certificates) start from."""
        check_supported(config, base_dir)
        self.config = config
        self.base_dir = base_dir
        self.access_log = access_log or AccessLog(
            config.global_.log, config.global_.log_format, facility_code(config.global_.log_facility)
        )
        self.backends: dict[str, BackendRuntime] = {}
        self.frontends: dict[str, FrontendContext] = {}
        self.backend_contexts: dict[str, BackendContext] = {}
        self.listeners: dict[tuple[Address, str, int], Listener] = {}  # by listener_key and socket number
        self.gate = Gate(config.global_.maxconn)
        # One per worker: every HTTP connection's writes go out together once per loop pass.
        self.outbox = Outbox()
        self._shared: SharedState | None = None
        self._slot = 0
        self._epoch = -1
        self._sync_handle: asyncio.TimerHandle | None = None
        self.heap = HeapTrimmer()
        self._build(config)
        self.use_tables()

    def _build(self, config: Config) -> None:
        """Runtime state and per-connection contexts for `config`."""
        self.backends = {b.name: BackendRuntime(b) for b in config.backend}
        userlists = {
            u.name: Userlist((user.name, user.password, user.password_hash) for user in u.user) for u in config.userlist
        }
        self.backend_contexts = {
            name: BackendContext(runtime.config, runtime, self.outbox, self.base_dir, userlists)
            for name, runtime in self.backends.items()
        }
        self.frontends = {
            f.name: FrontendContext(
                f,
                self.backend_contexts,
                self.access_log,
                self.outbox,
                self.gate,
                userlists,
                self.base_dir,
                config.global_.disable_file,
            )
            for f in config.frontend
        }

    async def start(self, sockets: dict[tuple[Address, str], list[tuple[socket.socket, int]]] | None = None) -> None:
        """Serve every frontend address, on the given listening `sockets` (by listener_key,
        as a master hands them down: each with the worker slot it belongs to, every slot's
        socket to every worker) or on a socket bound here. A socket of another slot is
        served only while that slot has no worker (see `cover_absent_slots`). Raises OSError
        naming a failing address."""
        untrack_transports(asyncio.get_running_loop())  # see net/transport_registry.py
        for frontend in self.config.frontend:
            for address in frontend.bind:
                key = listener_key(address, frontend.name)
                handed = sockets.get(key, []) if sockets else []
                tls = frontend_context(frontend.tls, self.base_dir, frontend.name) if frontend.tls else None
                for number, (sock, owner) in enumerate(handed or [(bind_socket(address, frontend.backlog), -1)]):
                    listener = Listener(address, sock, self.frontends[frontend.name], tls)
                    listener.unlink_on_close = not handed
                    listener.owner = -1 if owner == self._slot or owner < 0 else owner
                    self.listeners[(*key, number)] = listener
                    self.gate.register(frontend.name, frontend.maxconn, listener.hold, listener.release)
                    if listener.wanted:
                        await listener.start()
                log.info("frontend %s listening on %s (%s)", frontend.name, listener.bound(), frontend.mode)
        self.cover_absent_slots()

    def cover_absent_slots(self) -> None:
        """Accept from the sockets of the slots whose worker does not serve now (died, or
        not ready yet), and stop once it does: the master says which in the segment."""
        shared = self._shared
        if shared is None:
            return
        for listener in self.listeners.values():
            if listener.owner >= 0:
                listener.cover(not shared.serving(listener.owner))

    def addresses(self, frontend: str) -> list[tuple[str, int]]:
        """The addresses a frontend is bound to (ports resolved when the config said 0)."""
        bound = [lst.bound() for lst in self.listeners.values() if lst.frontend.name == frontend]
        return list(dict.fromkeys(bound))  # an address served by several sockets once

    def use_tables(
        self, tables: dict[str, ClientTable] | None = None, slot: int = 0, journal: StickJournal | None = None
    ) -> None:
        """Use the master's client tables (runtime.client_tables): stick tables and the
        frontends' limits shared by every worker; with [peers], note what this worker
        writes in the stick tables in `journal`. A process without a master (tests,
        one-off runs) passes none, and its limits get a table of their own."""
        tables = tables or {}
        for number, (name, context) in enumerate(self.backend_contexts.items()):
            table = tables.get(f"stick:{name}")
            if table is not None and context.persistence is not None:
                context.persistence.share_stick(table, journal, slot, number)
        for frontend in self.config.frontend:
            if not limited(frontend):
                continue
            table = tables.get(f"limit:{frontend.name}")
            if table is None:
                table = ClientTable.create(LIMIT_TABLE_SIZE, limit_expire(frontend), LIMIT_CELLS, 1)
                slot_here = 0
            else:
                slot_here = slot
            front = self.frontends[frontend.name]
            if front.limits is not None and front.limits.table is not table:
                front.limits.table.close()  # the private one, now that the master's came
            front.limits = ClientLimits(frontend.rate_limit, frontend.conn_limit, table, slot_here)

    def share(self, shared: SharedState, slot: int, interval: float = SYNC_INTERVAL) -> None:
        """Keep this worker in step with the master through `shared`: apply server records
        the master changed, publish this worker's counters in block `slot`."""
        self._shared = shared
        self._slot = slot
        self._epoch = -1
        if shared.layout.slots > 1:
            self._count_node_wide(shared, slot)
        self.sync_shared()
        loop = asyncio.get_running_loop()

        def tick() -> None:
            self.sync_shared()
            self.heap.observe(self.gate.total)
            self._sync_handle = loop.call_later(interval, tick)

        self._sync_handle = loop.call_later(interval, tick)

    def _count_node_wide(self, shared: SharedState, slot: int) -> None:
        """With several workers, what limits and balancing read counts every worker's part
        (runtime.node_count): requests in flight per server, each backend's queue, client
        connections per frontend and in all. This worker writes its part at every change."""
        layout = shared.layout
        for backend in self.backends.values():
            for server in backend.servers:
                index = layout.server_index[(backend.name, server.name)]
                server.node = shared.node_count(layout.active_cells(index), slot)
        for name, context in self.backend_contexts.items():
            context.queued = shared.node_count(layout.queued_cells(layout.backend_index[name]), slot)
        frontends = {
            name: shared.node_count(layout.frontend_connection_cells(layout.frontend_index[name]), slot)
            for name in self.frontends
        }
        self.gate.share(shared.node_count(layout.process_connection_cells(), slot), frontends)

    def sync_shared(self) -> None:
        shared = self._shared
        if shared is None:
            return
        self.cover_absent_slots()
        layout = shared.layout
        epoch = shared.epoch
        if epoch != self._epoch:
            self._epoch = epoch
            for backend in self.backends.values():
                changed = False
                for server in backend.servers:
                    record = shared.read_server(layout.server_index[(backend.name, server.name)])
                    weight = record.weight
                    if record.agent_weight >= 0:
                        weight = weight * record.agent_weight // 100
                    wanted = (record.admin_state, record.health, weight)
                    if (server.admin_state, server.health, server.weight) != wanted:
                        server.admin_state, server.health, server.weight = wanted
                        changed = True
                if changed:
                    backend.changed()
        slot = self._slot
        for backend in self.backends.values():
            for server in backend.servers:
                shared.write_server_counters(
                    slot,
                    layout.server_index[(backend.name, server.name)],
                    (
                        server.active,
                        server.requests,
                        server.bytes_in,
                        server.bytes_out,
                        server.errors,
                        server.connect_failures,
                        int(server.resp_time_sum),
                        server.resp_time_count,
                        *server.resp_buckets,
                    ),
                )
        for frontend in self.frontends.values():
            shared.write_frontend_counters(
                slot,
                layout.frontend_index[frontend.name],
                (
                    frontend.connections,
                    frontend.requests,
                    frontend.denied,
                    frontend.limits.rate_limited if frontend.limits is not None else 0,
                    frontend.limits.conn_limited if frontend.limits is not None else 0,
                    frontend.bytes_in,
                    frontend.bytes_out,
                    frontend.tls_handshakes,
                    frontend.tls_resumed,
                    *frontend.responses,
                ),
            )
        for name, context in self.backend_contexts.items():
            runtime = context.runtime
            shared.write_backend_counters(
                slot,
                layout.backend_index[name],
                (runtime.requests, len(context.waiting), *runtime.responses, *runtime.errors_by_cause),
            )

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let exchanges in flight finish within `grace`, then close the rest."""
        if grace is None:
            grace = self.config.global_.grace
        for listener in self.listeners.values():
            listener.close()
        frontends = list(self.frontends.values())
        for frontend in frontends:
            frontend.stopping = True
            for session in list(frontend.sessions):
                session.stop()
        await _wait_until(lambda: not any(f.sessions for f in frontends), grace)
        for frontend in frontends:
            for session in list(frontend.sessions):
                session.abort()
            for backend in frontend.backends.values():
                backend.close()
        if self._sync_handle is not None:
            self._sync_handle.cancel()
        self.gate.close()
        self.sync_shared()  # the final counts
        self.access_log.flush()


def listener_key(address: Address, frontend: str) -> tuple[Address, str]:
    """Listeners are kept across reloads by address; port 0 means "any", so never shared."""
    return (address, frontend if address.port == 0 and not address.is_unix else "")


async def _wait_until(condition: Callable[[], bool], timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition() and loop.time() < deadline:
        await asyncio.sleep(0.05)
