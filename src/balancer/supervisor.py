"""The master process: owns the listening sockets, runs generations of worker processes.

Theory of operation. The master binds every address of the config once and keeps those
sockets for its whole life. Workers are fresh interpreters (`balancer worker`) that inherit
the sockets and the validated config text, and all accept from the same kernel queues, so
a connection waiting in a queue belongs to no worker and is never lost when one exits.

A reload (SIGHUP) validates the file first; a bad file is refused with FILE:LINE and
nothing changes. A good one starts a new generation of workers; only when every new
worker reports ready are the old ones told to stop (SIGTERM: stop accepting, finish what
is in flight within `global.grace`, exit). The master kills any old worker still alive
after grace. A worker of the current generation that dies is restarted in its slot.
SIGTERM/SIGINT stop everything gracefully; a second one stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from balancer import native
from balancer.admin.api import AdminServer
from balancer.admin.statspage import start_stats_page
from balancer.checks.monitor import HealthMonitor
from balancer.cluster.bgp import BgpSpeaker, missing_exabgp
from balancer.cluster.dsr import DsrService
from balancer.cluster.l4 import L4Error
from balancer.cluster.l4_service import L4Service
from balancer.cluster.peer_store import NodeStickStore
from balancer.cluster.peers import PeersService
from balancer.cluster.vrrp import VrrpKeeper, missing_keepalived
from balancer.config import ConfigError, read_config_text
from balancer.config.model import Config
from balancer.config.values import Address
from balancer.limits import raise_nofile_limit
from balancer.net import session_cache, ticket_keys
from balancer.net.ticket_keys import TicketKeys, first_keys, next_keys, pipe_to_worker
from balancer.runtime.client_table import ClientTable
from balancer.runtime.client_tables import TableKeeper
from balancer.runtime.master_state import MasterState
from balancer.runtime.shared import (
    BACKEND_COUNTERS,
    BUCKET_NAMES,
    FRONTEND_COUNTERS,
    SERVER_COUNTERS,
    SharedState,
)
from balancer.runtime.state import ERROR_CAUSES, STATUS_CLASSES, AdminState
from balancer.runtime.stick_journal import StickJournal
from balancer.sdnotify import notify
from balancer.server import bind_socket, listen, listener_key, parse_runnable
from balancer.stats.syslog import configure_event_syslog

if TYPE_CHECKING:
    from balancer.cluster.dns import DnsServer

log = logging.getLogger("balancer.master")

# TLS key-exchange groups for workers (see the file); an operator's OPENSSL_CONF wins.
OPENSSL_CONF = str(Path(__file__).parent / "net" / "openssl.cnf")
READY_TIMEOUT = 30.0  # how long a new worker may take to start serving
RESTART_DELAY = 0.5  # between restarts of a worker that keeps dying
KERNEL_TIERS_NEED_ROOT = (
    "[[l4]] and [dsr] program the kernel (nftables, routes, addresses, tunnels): run balancer as root"
)


@dataclass
class Worker:
    generation: int
    slot: int
    process: asyncio.subprocess.Process
    ready: asyncio.Future[None]
    stopping: bool = False


@dataclass
class Generation:
    number: int
    config: Config
    text: str
    workers: list[Worker] = field(default_factory=list)
    shared: SharedState | None = None
    starting: bool = False
    tables: dict[str, ClientTable] = field(default_factory=dict)  # runtime.client_tables
    journal: StickJournal | None = None  # with [peers] and a stick table: runtime.stick_journal
    # The TLS session ticket keys its workers share (net.ticket_keys).
    ticket_keys: TicketKeys = field(default_factory=first_keys)


TASKS_END_TIMEOUT = 5.0  # what a stopped master waits for its last tasks to end


def worker_count(config: Config) -> int:
    """Workers serve frontends: a file with none (an L4 node) runs the master alone."""
    if not config.frontend:
        return 0
    return config.global_.workers or os.cpu_count() or 1


class Master:
    def __init__(self, path: Path, text: str, config: Config) -> None:
        self.path = path
        # Listening sockets by listener_key: one per worker slot for a TCP address (see bind).
        self.sockets: dict[tuple[Address, str], list[socket.socket]] = {}
        self.current = Generation(1, config, text)
        self.state = MasterState(config)
        self.monitor = HealthMonitor(self.state)
        self.tables = TableKeeper()
        self.tls_sessions = session_cache.MasterCache()
        self.admin: AdminServer | None = None
        self.old: list[Generation] = []
        self.stopping = False
        self.stop_signals = 0
        self.done = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.reloading = False
        self.started = False
        self.reload_pending = False
        self.reload_queued = False  # a SIGHUP came during a reload: reload again after it
        self.stop_pending = False
        self.bgp: BgpSpeaker | None = None
        self.l4 = L4Service()  # the [[l4]] tables, run here: the master is long-lived
        self.dsr = DsrService()  # [dsr]: the VIPs on lo, before the frontends bind them
        self.dns: DnsServer | None = None
        self.peers: PeersService | None = None
        self.peer_store = NodeStickStore(self.tables.stick_tables, self._journals, lambda: self.current.config)
        self.vrrp: VrrpKeeper | None = None

    # -- sockets ---------------------------------------------------------------------------

    def bind(self, config: Config) -> None:
        """Bind the addresses `config` needs that are not bound yet. Raises OSError. A
        [vrrp] VIP is bound with IP_FREEBIND: the peer may hold it now.

        A TCP address gets one SO_REUSEPORT socket per worker slot, so the kernel spreads
        new connections evenly over the workers by their addresses and ports (on one shared
        socket, the worker that happens to be awake takes most of them: 4 to 1 with two
        workers and a few busy clients). Socket number i belongs to slot i modulo the number
        of workers; every worker holds them all and serves another slot's while that slot
        has no worker serving (dead, restarting), so its queue is never left unread.
        Sockets are never closed while their address stays in the file: a reload to fewer
        workers hands the extra ones to the remaining workers, since closing one would reset
        the connections waiting in its queue. A unix socket is one socket shared by all."""
        vips = set(config.vrrp.addresses()) if config.vrrp is not None else set()
        wanted = max(worker_count(config), 1)
        for frontend in config.frontend:
            for address in frontend.bind:
                key = listener_key(address, frontend.name)
                bound = self.sockets.setdefault(key, [])
                freebind = not address.is_unix and address.host in vips
                count = 1 if address.is_unix else wanted
                try:
                    while len(bound) < count:
                        where = address
                        if bound and not address.port:  # port 0: the others join the first one's port
                            where = replace(address, port=bound[0].getsockname()[1])
                        tcp = not address.is_unix
                        bound.append(bind_socket(where, frontend.backlog, freebind, reuseport=tcp, joining=bool(bound)))
                finally:
                    if not bound:
                        del self.sockets[key]
                for sock in bound:
                    listen(sock, frontend)  # set anew: a reload may change either

    def close_unused(self, config: Config) -> None:
        wanted = {listener_key(a, f.name) for f in config.frontend for a in f.bind}
        for key in list(self.sockets):
            if key not in wanted:
                for sock in self.sockets.pop(key):
                    sock.close()

    def slot_sockets(self, config: Config) -> list[tuple[tuple[Address, str], socket.socket, int]]:
        """The listening sockets a worker of a generation running `config` gets: every
        socket of every address it serves, each with the slot it belongs to (its number
        modulo the workers; -1 for a unix socket, which every worker serves). A worker
        serves its own, and another slot's only while that slot has no worker serving
        (server.Balancer.cover_absent_slots)."""
        keys = {listener_key(a, f.name) for f in config.frontend for a in f.bind}
        workers = max(worker_count(config), 1)
        return [
            (key, sock, -1 if key[0].is_unix else number % workers)  # -1: a unix socket, everyone's
            for key, bound in self.sockets.items()
            if key in keys
            for number, sock in enumerate(bound)
        ]

    # -- workers ---------------------------------------------------------------------------

    async def spawn(self, generation: Generation, slot: int) -> Worker:
        loop = asyncio.get_running_loop()
        handed = self.slot_sockets(generation.config)
        fds = [
            {"fd": sock.fileno(), "address": str(key[0]), "frontend": key[1], "slot": owner}
            for key, sock, owner in handed
        ]
        ready_read, ready_write = os.pipe()
        assert generation.shared is not None
        state_fd = generation.shared.fd
        env = dict(os.environ)
        env["BALANCER_STATE_FD"] = str(state_fd)
        env["BALANCER_SLOTS"] = str(generation.shared.layout.slots)
        env["BALANCER_FDS"] = json.dumps(fds)
        env["BALANCER_TABLES"] = json.dumps({name: table.fd for name, table in generation.tables.items()})
        journal_fds = [generation.journal.fd] if generation.journal is not None else []
        env["BALANCER_STICK_JOURNAL"] = str(journal_fds[0]) if journal_fds else ""
        env["BALANCER_READY_FD"] = str(ready_write)
        env["BALANCER_MASTER_PID"] = str(os.getpid())
        if "OPENSSL_CONF" not in os.environ:
            env["OPENSSL_CONF"] = OPENSSL_CONF
        keys_fd = pipe_to_worker(generation.ticket_keys)
        env[ticket_keys.ENV_FD] = str(keys_fd)
        sessions_fd = self.tls_sessions.for_config(generation.config.global_.tls_session_cache)
        if sessions_fd is not None:
            env[session_cache.ENV_FD] = str(sessions_fd)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "balancer",
                "worker",
                "--name",
                str(self.path),
                "--generation",
                str(generation.number),
                "--slot",
                str(slot),
                stdin=asyncio.subprocess.PIPE,
                pass_fds=[sock.fileno() for _, sock, _ in handed]
                + [ready_write, state_fd, keys_fd]
                + ([sessions_fd] if sessions_fd is not None else [])
                + [table.fd for table in generation.tables.values()]
                + journal_fds,
                env=env,
            )
        finally:
            os.close(keys_fd)
        os.close(ready_write)
        assert process.stdin is not None
        process.stdin.write(generation.text.encode())
        process.stdin.close()
        ready: asyncio.Future[None] = loop.create_future()

        def on_ready() -> None:
            try:
                data = os.read(ready_read, 64)
            except OSError:
                data = b""
            loop.remove_reader(ready_read)
            os.close(ready_read)
            if not ready.done():
                if data.startswith(b"ready"):
                    if generation.shared is not None:
                        generation.shared.set_serving(slot, True)  # the others stop covering it
                    ready.set_result(None)
                else:
                    ready.set_exception(RuntimeError("worker exited before it was ready"))

        loop.add_reader(ready_read, on_ready)
        worker = Worker(generation.number, slot, process, ready)
        log.info("worker started: pid=%d generation=%d slot=%d", process.pid, generation.number, slot)
        self._watch(generation, worker)
        return worker

    def _watch(self, generation: Generation, worker: Worker) -> None:
        task = asyncio.get_running_loop().create_task(self._wait_worker(generation, worker))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _wait_worker(self, generation: Generation, worker: Worker) -> None:
        status = await worker.process.wait()
        description = f"signal {-status}" if status < 0 else f"exit {status}"
        log.info("worker exited: pid=%d generation=%d status=%s", worker.process.pid, worker.generation, description)
        if worker in generation.workers:
            generation.workers.remove(worker)
        if not generation.workers and generation is not self.current and not generation.starting:
            self._retire(generation)
        if self.stopping:
            if not self.current.workers and not self.old:
                self.done.set()
            return
        if (generation is not self.current and not generation.starting) or worker.stopping:
            return
        log.warning("worker in slot %d died (%s): restarting it", worker.slot, description)
        if generation.shared is not None:
            self.state.retire_slot(generation.shared, worker.slot)
        self.tables.retire_slot(generation.tables, worker.slot)
        await asyncio.sleep(RESTART_DELAY)
        if not self.stopping and (generation is self.current or generation.starting):
            generation.workers.append(await self.spawn(generation, worker.slot))

    async def start_generation(self, generation: Generation) -> bool:
        """Start every worker of `generation` and wait until all serve. A worker that dies
        while starting is started again (twice at most); False if a slot never comes up."""
        loop = asyncio.get_running_loop()
        slots = worker_count(generation.config)
        generation.shared = self.state.adopt(generation.config, slots)
        generation.tables = self.tables.adopt(generation.config, slots)
        if generation.config.peers is not None and any(b.stick is not None for b in generation.config.backend):
            generation.journal = StickJournal.create(max(slots, 1))
        generation.starting = True
        try:
            for slot in range(slots):
                generation.workers.append(await self.spawn(generation, slot))
            deadline = loop.time() + READY_TIMEOUT
            for slot in range(slots):
                for attempt in range(3):
                    worker = await self._slot_worker(generation, slot, deadline)
                    try:
                        await asyncio.wait_for(asyncio.shield(worker.ready), max(0.0, deadline - loop.time()))
                        break
                    except RuntimeError:
                        log.warning("worker in slot %d exited while starting (attempt %d)", slot, attempt + 1)
                else:
                    log.error("generation %d failed to start: slot %d keeps exiting", generation.number, slot)
                    return False
        except TimeoutError:
            log.error("generation %d failed to start: workers not ready in %gs", generation.number, READY_TIMEOUT)
            return False
        finally:
            generation.starting = False
        return True

    async def _slot_worker(self, generation: Generation, slot: int, deadline: float) -> Worker:
        """The live (or restarting) worker of `slot`; waits for a restart to appear."""
        loop = asyncio.get_running_loop()
        while True:
            for worker in reversed(generation.workers):
                if worker.slot == slot and not (worker.ready.done() and worker.ready.exception()):
                    return worker
            if loop.time() > deadline:
                raise TimeoutError
            await asyncio.sleep(0.05)

    def _retire(self, generation: Generation) -> None:
        """`generation` has no worker left: free what it used."""
        if generation in self.old:
            self.old.remove(generation)
        if generation.shared is not None:
            self.state.retire(generation.shared)
        self.tables.release(generation.tables)
        if generation.journal is not None:
            if self.peers is not None:
                self.peers_store_changes()  # what its workers wrote last is still sent
            generation.journal.close()
            generation.journal = None

    def stop_generation(self, generation: Generation, grace: float) -> None:
        """Tell every worker of `generation` to finish gracefully; kill them after grace."""
        if not generation.workers and generation is not self.current:
            # Nothing to wait for (no worker left, or none ever: an L4 node's file): it is
            # gone now, or a stop would wait for it forever.
            self._retire(generation)
        for worker in generation.workers:
            worker.stopping = True
            _signal(worker, signal.SIGTERM)
        task = asyncio.get_running_loop().create_task(self._kill_after(generation, grace + 2.0))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _kill_after(self, generation: Generation, delay: float) -> None:
        await asyncio.sleep(delay)
        for worker in list(generation.workers):
            if worker.process.returncode is None:
                log.warning("worker pid=%d outlived its grace: killing it", worker.process.pid)
                _signal(worker, signal.SIGKILL)

    # -- signals ---------------------------------------------------------------------------

    async def reload(self) -> dict[str, Any]:
        """Reload the file (the admin API's POST /api/reload); the result says whether it
        took and why not. A request during a reload is refused, not queued: the caller is
        waiting for an answer about the file as it is now."""
        if self.stopping:
            return {"reloaded": False, "problems": ["balancer is stopping"]}
        if self.reloading:
            log.info("reload requested over the API during a reload: refused (a reload is already in progress)")
            return {"reloaded": False, "problems": ["a reload is already in progress"]}
        self.reloading = True
        return await self._run_reload()

    def _start_reload(self) -> None:
        """Start a reload from a signal: claimed at once, so a SIGHUP that arrives before
        the task runs sees it in progress and is queued rather than lost."""
        self.reloading = True
        self._spawn_task(self._run_reload())

    async def _run_reload(self) -> dict[str, Any]:
        """The reload claimed by the caller (`self.reloading` is already True)."""
        notify("RELOADING=1")
        try:
            problems = await self._reload()
        finally:
            self.reloading = False
            notify("READY=1")
        for problem in problems:
            log.error("reload refused: %s", problem)
        if problems:
            result: dict[str, Any] = {"reloaded": False, "problems": problems, "generation": self.current.number}
        else:
            log.info("reload complete: generation %d", self.current.number)
            result = {"reloaded": True, "generation": self.current.number}
        if self.reload_queued and not self.stopping:
            self.reload_queued = False
            log.info("reloading again for the SIGHUP received during the last reload")
            self._start_reload()
        return result

    async def _reload(self) -> list[str]:
        """Problems that refused the reload; none when the new generation serves."""
        try:
            text = read_config_text(self.path)
            config = parse_runnable(text, str(self.path))
        except ConfigError as exc:
            return [str(problem) for problem in exc.problems]
        missing = missing_exabgp() if config.bgp is not None and self.bgp is None else None
        missing = missing or (missing_keepalived() if config.vrrp is not None and self.vrrp is None else None)
        if missing:
            return [missing]
        tier_problems = await self._reload_kernel_tiers(config)
        if tier_problems:
            return tier_problems
        try:
            self.bind(config)
        except OSError as exc:
            await self._reload_kernel_tiers(self.current.config)
            return [str(exc)]
        previous = self.current
        generation = Generation(previous.number + 1, config, text, ticket_keys=next_keys(previous.ticket_keys))
        if not await self.start_generation(generation):
            self.stop_generation(generation, 0.0)
            await self._reload_kernel_tiers(self.current.config)
            return [f"the new workers did not start; generation {previous.number} keeps serving"]
        self.current = generation
        configure_event_syslog(config)
        self.old.append(previous)
        self.stop_generation(previous, previous.config.global_.grace)
        self.close_unused(config)
        self.monitor.stop()
        self.monitor.start(config)
        await self._reload_bgp(config)
        await self._reload_vrrp(config)
        try:
            await self._reload_dns(config)
        except OSError as exc:
            log.error("%s; the previous [dns] table keeps serving", exc)
        try:
            await self._reload_peers(config)
        except OSError as exc:
            log.error("%s; stick tables are not shared with the other nodes", exc)
        return []

    async def _reload_kernel_tiers(self, config: Config) -> list[str]:
        """Run `config`'s [[l4]] tables and [dsr] (before the frontends bind: they may bind
        the [dsr] VIPs). Problems that refused it; then both run as before: a [dsr] refused
        takes [[l4]] back to the running file's tables. A reload refused at a later step
        calls this again with the running file, so that the kernel never runs tables of a
        file the running generation does not describe."""
        problems = await self.l4.reload(config.l4)
        if problems:
            return problems
        problems = await self.dsr.reload(config.dsr)
        if problems:
            await self.l4.reload(self.current.config.l4)
        return problems

    # -- control plane (admin API) ---------------------------------------------------------

    def servers(self) -> list[dict[str, Any]]:
        totals = self.state.server_totals()
        rows = []
        for backend in self.state.config.backend:
            for server in backend.server:
                key = (backend.name, server.name)
                record = self.state.records[key]
                counts = totals.get(key) or dict.fromkeys(SERVER_COUNTERS, 0)
                rows.append(
                    {
                        "backend": backend.name,
                        "server": server.name,
                        "address": str(server.address),
                        "state": record.admin_state,
                        "health": record.health,
                        "weight": record.weight,
                        "effective_weight": record.effective().weight,
                        "usable": record.usable,
                        "agent": record.agent_state
                        if record.agent_weight < 0
                        else f"{record.agent_state} {record.agent_weight}%",
                        "last_check": record.last_check,
                        "since": round(time.time() - record.changed_at, 1),
                        "active": counts["active"],
                        "queued": 0,
                        "requests": counts["requests"],
                        "bytes_in": counts["bytes_in"],
                        "bytes_out": counts["bytes_out"],
                        "errors": counts["errors"],
                        "connect_failures": counts["connect_failures"],
                        "resp_time_ms": round(counts["resp_ms"] / counts["resp_n"], 3) if counts["resp_n"] else 0.0,
                    }
                )
        return rows

    def response_histograms(self) -> dict[str, tuple[list[int], int]]:
        """Per backend: response-time bucket counts (see runtime.shared) and the sum in ms."""
        histograms: dict[str, tuple[list[int], int]] = {}
        for (backend, _), counts in self.state.server_totals().items():
            if not any(b.name == backend for b in self.state.config.backend):
                continue
            buckets, total = histograms.get(backend, ([0] * len(BUCKET_NAMES), 0))
            histograms[backend] = (
                [a + counts[name] for a, name in zip(buckets, BUCKET_NAMES, strict=True)],
                total + counts["resp_ms"],
            )
        return histograms

    def frontend_rows(self) -> list[dict[str, Any]]:
        """Per frontend: FRONTEND_COUNTERS, responses by status class under "responses"."""
        totals = self.state.frontend_totals()
        rows = []
        for frontend in self.state.config.frontend:
            counts = totals.get(frontend.name) or dict.fromkeys(FRONTEND_COUNTERS, 0)
            row: dict[str, Any] = {"frontend": frontend.name, "mode": frontend.mode}
            row.update((k, v) for k, v in counts.items() if k not in STATUS_CLASSES)
            row["responses"] = {k: counts[k] for k in STATUS_CLASSES}
            rows.append(row)
        return rows

    def backend_rows(self, servers: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Per backend: its servers' sums, BACKEND_COUNTERS, responses by status class and
        errors by cause (runtime.state) under "responses" and "errors"."""
        servers = self.servers() if servers is None else servers
        totals = self.state.backend_totals()
        rows = []
        for backend in self.state.config.backend:
            members = [row for row in servers if row["backend"] == backend.name]
            counts = totals.get(backend.name) or dict.fromkeys(BACKEND_COUNTERS, 0)
            rows.append(
                {
                    "backend": backend.name,
                    "mode": backend.mode,
                    "balance": backend.balance,
                    "servers": len(members),
                    "usable": self.state.usable_in(backend.name)[0],
                    **{k: sum(r[k] for r in members) for k in ("active", "bytes_in", "bytes_out", "errors")},
                    # HTTP: requests routed to the backend; TCP: connections sent to its servers.
                    "requests": counts["requests"] if backend.mode == "http" else sum(r["requests"] for r in members),
                    "queued": counts["queued"],
                    "responses": {k: counts[k] for k in STATUS_CLASSES},
                    "errors_by_cause": {k: counts[k] for k in ERROR_CAUSES},
                }
            )
        return rows

    def stats(self) -> dict[str, Any]:
        servers = self.servers()
        return {
            "generation": self.current.number,
            "workers": len(self.current.workers),
            "frontends": self.frontend_rows(),
            "backends": self.backend_rows(servers),
            "servers": servers,
            **({"bgp": self.bgp_status()} if self.current.config.bgp is not None else {}),
            "l4": self.l4.rows(),
            **({"dns": self.dns_status()} if self.current.config.dns is not None else {}),
            **({"vrrp": self.vrrp_status()} if self.current.config.vrrp is not None else {}),
        }

    def set_server(self, backend: str, server: str, state: str | None, weight: int | None) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if state is not None:
            changes["admin_state"] = cast(AdminState, state)
        if weight is not None:
            changes["weight"] = weight
        record = self.state.update((backend, server), by_operator=True, **changes)
        log.info(
            "server %s/%s: state %s, weight %d (set by the operator)",
            backend,
            server,
            record.admin_state,
            record.weight,
        )
        return next(row for row in self.servers() if row["backend"] == backend and row["server"] == server)

    def l4_rows(self) -> list[dict[str, Any]]:
        return self.l4.rows()

    def l4_update_seconds(self) -> float:
        return self.l4.last_update_seconds

    def set_l4(self, table: str, node: str, state: str) -> Awaitable[dict[str, Any]]:
        return self.l4.set_state(table, node, state)

    def reload_now(self) -> Awaitable[dict[str, Any]]:
        return self.reload()

    def metrics(self) -> bytes:
        from balancer.admin.metrics import render  # prometheus_client: loaded at the first scrape

        return render(self)

    def healthy(self) -> tuple[bool, str]:
        if self.stopping:
            return (False, "stopping")
        disable_file = self.current.config.global_.disable_file
        if disable_file and os.path.exists(disable_file):
            return (False, f"disabled by {disable_file}")
        return (True, "serving")

    async def start_admin(self, config: Config) -> None:
        """The runtime API on admin.socket and admin.bind, if configured."""
        if not config.admin.socket and config.admin.bind is None:
            return
        self.admin = AdminServer(self)
        if config.admin.socket:
            await self.admin.listen_unix(config.admin.socket)
            log.info("admin API on unix:%s", config.admin.socket)
        bind = config.admin.bind
        if bind is not None:
            if bind.is_unix:
                await self.admin.listen_unix(bind.path)
            else:
                await self.admin.listen_tcp(bind.host, bind.port)
            log.info("admin API on %s", bind)

    def on_reload_signal(self) -> None:
        """SIGHUP: reload now, or once what is under way is done. Every SIGHUP gets one
        event-log line saying which, so an operator can account for each one sent; those
        that arrive while one is already waiting are merged into it (one more reload reads
        the file as it is by then)."""
        if self.stopping:
            log.info("SIGHUP ignored: balancer is stopping")
            return
        if not self.started:
            if self.reload_pending:
                log.info("SIGHUP merged with the reload already waiting for the first workers")
            else:
                log.info("SIGHUP while the first workers start: the reload runs once they serve")
            self.reload_pending = True
            return
        if self.reloading:
            if self.reload_queued:
                log.info("SIGHUP during a reload: merged with the reload already queued after it")
            else:
                log.info("SIGHUP during a reload: another reload of %s runs after it", self.path)
            self.reload_queued = True
            return
        log.info("SIGHUP: reloading %s", self.path)
        self._start_reload()

    def on_stop_signal(self) -> None:
        if not self.started and not self.stop_pending:
            # Let the first workers come up: they take the connections already waiting in
            # the accept queues, then stop gracefully like any others.
            self.stop_pending = True
            return
        self.stop_signals += 1
        if self.stop_signals > 1:
            log.warning("second stop signal: stopping at once")
            for generation in [self.current, *self.old]:
                for worker in generation.workers:
                    _signal(worker, signal.SIGKILL)
            self.done.set()
            return
        self.stopping = True
        notify("STOPPING=1")
        if self.bgp is not None or self.vrrp is not None:
            # Routers stop sending new connections, and the peer holds the VIPs, before
            # the listeners close.
            if self.bgp is not None:
                log.info("stopping: withdrawing BGP announcements first")
            if self.vrrp is not None:
                log.info("stopping: handing the VIPs over to the VRRP peer first")
            self._spawn_task(self._withdraw_then_drain())
            return
        self._drain()

    async def _withdraw_then_drain(self) -> None:
        """Routers and the VRRP peer take the traffic first; the drain runs whatever the
        withdrawal ends with (a stop that raised would leave the master running, deaf to
        the signal)."""
        steps: list[Coroutine[Any, Any, None]] = []
        if self.bgp is not None:
            steps.append(self.bgp.stop())
        if self.vrrp is not None:
            steps.append(self.vrrp.hand_over())
        try:
            for result in await asyncio.gather(*steps, return_exceptions=True):
                if isinstance(result, BaseException):  # a bug there must not keep balancer running
                    log.error("stopping: withdrawing or handing over failed: %r", result)
        finally:
            self._drain()

    def _drain(self) -> None:
        grace = self.current.config.global_.grace
        log.info("stopping: workers finish requests in flight (grace %gs)", grace)
        for generation in [self.current, *self.old]:
            self.stop_generation(generation, grace)
        if not self.current.workers and not self.old:
            self.done.set()

    def forward(self, signum: int) -> None:
        for generation in [self.current, *self.old]:
            for worker in generation.workers:
                _signal(worker, signum)

    async def run(self) -> int:
        """Serve until stopped; whatever the tiers set in the kernel is removed on every
        way out (a stop, a second stop signal, a failed start)."""
        try:
            return await self._run()
        finally:
            try:
                if self.vrrp is not None:  # keepalived drops the VIPs as it stops
                    await self.vrrp.stop()
                await self.l4.stop()
            finally:
                await self.dsr.stop()

    async def _run(self) -> int:
        loop = asyncio.get_running_loop()
        # Signals are ours from the start: a SIGHUP while the first workers start is
        # remembered, not fatal.
        loop.add_signal_handler(signal.SIGTERM, self.on_stop_signal)
        loop.add_signal_handler(signal.SIGINT, self.on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, self.on_reload_signal)
        loop.add_signal_handler(signal.SIGUSR1, lambda: self.forward(signal.SIGUSR1))
        config = self.current.config
        configure_event_syslog(config)
        try:
            await self.l4.start(config.l4)
            await self.dsr.start(config.dsr)
        except L4Error as exc:  # and DsrError
            log.error("%s", exc)
            return 1
        try:
            self.bind(config)
        except OSError as exc:
            log.error("%s", exc)
            return 1
        problem = missing_exabgp() if config.bgp is not None else None
        problem = problem or (missing_keepalived() if config.vrrp is not None else None)
        if problem:
            log.error("%s", problem)
            return 1
        raise_nofile_limit(config)
        try:
            await self.start_admin(config)
        except OSError as exc:
            log.error("admin API: %s", exc)
            return 1
        try:
            stats_page = await start_stats_page(self, lambda: self.current.config.stats)
        except OSError as exc:
            log.error("stats page: %s", exc)
            return 1
        if not await self.start_generation(self.current):
            self.stopping = True
            self.stop_generation(self.current, 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.done.wait(), 5.0)
            return 1
        self.started = True
        self.monitor.start(config)
        await self._reload_bgp(config)
        await self._reload_vrrp(config)
        try:
            await self._reload_dns(config)
            await self._reload_peers(config)
        except OSError as exc:
            log.error("%s", exc)
            self.stopping = True
            self.stop_generation(self.current, 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.done.wait(), 5.0)
            return 1
        notify("READY=1")
        if self.stop_pending:
            self.on_stop_signal()
        if self.reload_pending and not self.stopping:  # a stop signalled meanwhile wins
            self.reload_pending = False
            log.info("reloading for the SIGHUP received while the first workers started")
            self._start_reload()
        log.info("balancer running: %d workers, config %s, %s", len(self.current.workers), self.path, native.describe())
        await self.done.wait()
        if self.bgp is not None:
            await self.bgp.stop()
        if self.vrrp is not None:
            await self.vrrp.stop()
        if self.dns is not None:
            await self.dns.stop()
        if self.peers is not None:
            await self.peers.stop()
        self.monitor.stop()
        if self.admin is not None:
            self.admin.close()
        if stats_page is not None:
            stats_page.close()
        for bound in self.sockets.values():
            for sock in bound:
                sock.close()
        log.info("stopped")
        return 0

    # -- [bgp] ---------------------------------------------------------------------------------

    async def _reload_bgp(self, config: Config) -> None:
        """Start, reconfigure or stop the BGP speaker for `config` (after workers serve)."""
        if config.bgp is None:
            if self.bgp is not None:
                await self.bgp.stop()
                self.bgp = None
            return
        if self.bgp is None:
            speaker = BgpSpeaker()
            try:
                await speaker.start(config, self.can_serve)
            except OSError as exc:  # no runtime folder or socket: serve, but announce nothing
                log.error("bgp: cannot start, nothing is announced: %s", exc)
                return
            self.bgp = speaker
        else:
            await self.bgp.reload(config)

    def can_serve(self, prefix: str) -> tuple[bool, str]:
        """SPEC's announce rule for one prefix, which [bgp] announces by and [vrrp] holds
        VIPs by: not stopping, no disable_file, and a usable L7 node ([[l4]] VIP in the
        prefix) or a usable server in the default backend of a frontend bound in the prefix
        (a wildcard bind serves every prefix; with no bind in the prefix, every frontend
        counts)."""
        config = self.current.config
        if self.stopping:
            return (False, "stopping")
        disable_file = config.global_.disable_file
        if disable_file and os.path.exists(disable_file):
            return (False, f"disabled by {disable_file}")
        network = ipaddress.ip_network(prefix)
        if any(ipaddress.ip_address(table.vip) in network for table in config.l4):
            return self.l4.can_serve(network)
        frontends = [f for f in config.frontend if any(_binds_in(a, network) for a in f.bind)] or config.frontend
        for frontend in frontends:
            if frontend.default_backend is None:
                return (True, f"frontend {frontend.name} answers without a backend")
            usable, total = self.state.usable_in(frontend.default_backend)
            if usable:
                return (True, f"{usable}/{total} servers usable in backend {frontend.default_backend}")
        return (False, "no usable server in " + ", ".join(sorted({str(f.default_backend) for f in frontends})))

    def bgp_status(self) -> dict[str, Any]:
        if self.bgp is None:
            return {"announcements": [], "neighbors": [], "exabgp": None}
        return self.bgp.status()

    # -- [vrrp] --------------------------------------------------------------------------------

    async def _reload_vrrp(self, config: Config) -> None:
        """Start, reconfigure or stop keepalived for `config` (after workers serve)."""
        if config.vrrp is None:
            if self.vrrp is not None:
                await self.vrrp.hand_over()
                await self.vrrp.stop()
                self.vrrp = None
            return
        if self.vrrp is None:
            keeper = VrrpKeeper()
            try:
                await keeper.start(config.vrrp, self.vrrp_health)
            except OSError as exc:  # no runtime folder or FIFO: serve, but never hold the VIPs
                log.error("vrrp: cannot start, no VIP is held here: %s", exc)
                return
            self.vrrp = keeper
        else:
            await self.vrrp.reload(config.vrrp)

    def vrrp_health(self) -> tuple[str, str]:
        """Whether this node may hold the VIPs: "yield" them gracefully while a disable_file
        exists, "fault" when a VIP has no usable server behind it (SPEC's announce rule for
        each VIP /32, as [bgp] decides), else "ok". Stopping is the keeper's own business."""
        config = self.current.config
        assert config.vrrp is not None
        disable_file = config.global_.disable_file
        if disable_file and os.path.exists(disable_file):
            return ("yield", f"disabled by {disable_file}")
        whys = []
        for address in config.vrrp.addresses():
            serve, why = self.can_serve(f"{address}/32")
            if not serve:
                return ("fault", f"{address}: {why}")
            whys.append(why)
        return ("ok", "; ".join(dict.fromkeys(whys)))

    def vrrp_status(self) -> dict[str, Any]:
        if self.vrrp is None:
            return {"state": None, "keepalived": None}
        return self.vrrp.status()

    # -- [dns] ---------------------------------------------------------------------------------

    async def _reload_dns(self, config: Config) -> None:
        """Start, reconfigure or stop the DNS server for `config` (after workers serve).
        Raises OSError when an address cannot be bound."""
        if config.dns is None:
            if self.dns is not None:
                await self.dns.stop()
                self.dns = None
            return
        if self.dns is None:
            from balancer.cluster.dns import DnsServer  # dnspython: loaded by a node with [dns] only

            server = DnsServer()
            await server.start(config)
            self.dns = server
        else:
            await self.dns.reload(config)

    def dns_status(self) -> dict[str, Any]:
        if self.dns is None:
            return {"zone": None, "bind": [], "records": [], "queries": {}, "truncated": 0}
        return self.dns.status()

    # -- [peers] -------------------------------------------------------------------------------

    async def _reload_peers(self, config: Config) -> None:
        """Start, reconfigure or stop stick-table replication for `config`. Raises OSError
        when `bind` cannot be bound (at a start; a reload keeps the running listener)."""
        if config.peers is None:
            if self.peers is not None:
                await self.peers.stop()
                self.peers = None
            return
        if self.peers is None:
            service = PeersService(config.peers, self.peer_store)
            await service.start()
            self.peers = service
        else:
            if config.peers.bind != self.peers.config.bind:
                log.warning("peers: a new bind (%s) takes effect at the next start", config.peers.bind)
            self.peers.reload(config.peers.model_copy(update={"bind": self.peers.config.bind}))

    def _journals(self) -> list[tuple[Config, StickJournal]]:
        """The stick journals of the generations alive now, with the config each runs."""
        generations = [self.current, *self.old]
        return [(g.config, g.journal) for g in generations if g.journal is not None]

    def peers_store_changes(self) -> None:
        """Hand the peers what a generation's journal holds before it is closed."""
        assert self.peers is not None
        self.peers.push_now()

    def peers_status(self) -> dict[str, Any]:
        if self.peers is None:
            return {"bind": None, "received": 0, "nodes": []}
        return self.peers.status()

    def _spawn_task(self, coroutine: object) -> None:
        assert asyncio.iscoroutine(coroutine)
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


def _binds_in(address: Address, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    """Whether a frontend bound to `address` receives traffic for `network`."""
    if address.is_unix:
        return False
    if address.host in ("", "0.0.0.0", "::"):
        return True
    try:
        return ipaddress.ip_address(address.host) in network
    except ValueError:
        return False


def _signal(worker: Worker, signum: int) -> None:
    if worker.process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            worker.process.send_signal(signum)


async def end_other_tasks(timeout: float) -> None:
    """Cancel every other task of the loop until it has ended, for at most `timeout` seconds
    (then name what is left); for the process's top task only, which has no caller to
    cancel. One cancellation is not always enough: Python 3.11's `wait_for` drops a
    cancellation that arrives as the awaited operation completes, and a loop around it (a
    health check, a peers link) goes on; the event loop's own shutdown would then wait for
    it for ever, and a stopped master would never exit."""
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    deadline = loop.time() + timeout
    while True:
        left = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
        if not left:
            return
        if loop.time() >= deadline:
            names = ", ".join(getattr(task.get_coro(), "__qualname__", task.get_name()) for task in left)
            log.warning("stopping: %d task(s) did not end: %s", len(left), names)
            return
        for task in left:
            task.cancel()
        await asyncio.wait(left, timeout=0.05)


def run_master(path: Path) -> int:
    """`balancer run -c FILE`: validate, then serve until stopped. Returns the exit code."""
    try:
        text = read_config_text(path)
        config = parse_runnable(text, str(path))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    if (config.l4 or config.dsr is not None) and os.geteuid() != 0:
        print(f"{path}: {KERNEL_TIERS_NEED_ROOT}", file=sys.stderr)
        return 1
    import uvloop

    async def serve() -> int:
        code = await Master(path, text, config).run()
        await end_other_tasks(TASKS_END_TIMEOUT)  # this is the process's top task
        return code

    return int(uvloop.run(serve()))
