"""A worker process: `balancer worker`, started by the master (supervisor.py), never by people.

It inherits the listening sockets, reads the validated config text from stdin, serves until
SIGTERM, then finishes what is in flight within `global.grace`. Kept apart from the master's
module so a worker imports what serving needs and no more: the master's tier engines
(pyroute2, dnspython, the admin API) cost a new worker 0.4 s at every start and reload.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys

from balancer.config import parse_config
from balancer.config.model import Config
from balancer.config.values import Address, parse_address
from balancer.limits import drop_privileges
from balancer.net import session_cache, ticket_keys
from balancer.runtime.client_table import ClientTable
from balancer.runtime.shared import Layout, SharedState
from balancer.runtime.stick_journal import StickJournal
from balancer.server import listener_key
from balancer.stats.eventlog import setup_event_log
from balancer.stats.syslog import configure_event_syslog


def run_worker(name: str, generation: int, slot: int) -> int:
    """`balancer worker`: serve the inherited sockets with the config text read from stdin,
    until SIGTERM; then stop gracefully."""
    setup_event_log()
    _die_with_parent(int(os.environ.get("BALANCER_MASTER_PID", "0")))
    ticket_keys.receive_from_master()  # before any TLS context is made
    session_cache.receive_from_master()
    config = parse_config(sys.stdin.read(), name)
    configure_event_syslog(config)
    sockets: dict[tuple[Address, str], list[tuple[socket.socket, int]]] = {}
    for entry in json.loads(os.environ.get("BALANCER_FDS", "[]")):
        key = listener_key(parse_address(entry["address"]), entry["frontend"])
        # Made non-blocking as an object by the Listener it becomes (server.Listener: why).
        sockets.setdefault(key, []).append((socket.socket(fileno=entry["fd"]), int(entry["slot"])))
    ready_fd = int(os.environ.get("BALANCER_READY_FD", "-1"))
    state_fd = int(os.environ.get("BALANCER_STATE_FD", "-1"))
    shared = None
    if state_fd >= 0:
        shared = SharedState.attach(Layout(config, int(os.environ.get("BALANCER_SLOTS", "1"))), state_fd)
    tables = {name: ClientTable.attach(fd) for name, fd in json.loads(os.environ.get("BALANCER_TABLES", "{}")).items()}
    journal_fd = os.environ.get("BALANCER_STICK_JOURNAL", "")
    journal = StickJournal.attach(int(journal_fd)) if journal_fd else None
    # The master decides what Ctrl-C and SIGHUP mean for the whole group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    import uvloop

    return int(uvloop.run(_serve_worker(config, name, sockets, ready_fd, shared, slot, tables, journal)))


async def _serve_worker(
    config: Config,
    config_name: str,
    sockets: dict[tuple[Address, str], list[tuple[socket.socket, int]]],
    ready_fd: int,
    shared: SharedState | None,
    slot: int,
    tables: dict[str, ClientTable],
    journal: StickJournal | None,
) -> int:
    from balancer.runtime.collector import settle_after_start
    from balancer.server import Balancer

    loop = asyncio.get_running_loop()
    balancer = Balancer(config, base_dir=os.path.dirname(os.path.abspath(config_name)))
    if shared is not None:
        balancer.share(shared, slot)
    balancer.use_tables(tables, slot, journal)
    # Handlers first: the master may signal a stop the moment this worker says it is ready.
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, balancer.access_log.open)
    await balancer.start(sockets)
    # Workers face the network: they drop root once their sockets are set up. The master
    # keeps its rights, to bind new addresses and read the config file on reloads.
    drop_privileges(config.global_.user, config.global_.group)
    settle_after_start()
    if ready_fd >= 0:
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)
    await stop.wait()
    # Already stopping: a repeated SIGTERM (a reload then a stop) must not cut the grace
    # short, nor kill the process while the loop winds down.
    loop.remove_signal_handler(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    await balancer.stop(config.global_.grace)
    return 0


def _die_with_parent(master_pid: int) -> None:
    """Ask Linux to send SIGTERM when the master dies, so no worker is orphaned."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if master_pid and os.getppid() != master_pid:
        os._exit(0)  # the master is already gone
