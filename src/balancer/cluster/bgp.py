"""[bgp]: announce this node's VIPs to routers through ExaBGP while the node can serve them.

Design. ExaBGP (the `tiers` extra) speaks BGP; balancer decides what it announces. The
master's `BgpSpeaker` writes ExaBGP's configuration to a private runtime folder (mode 0700,
removed on stop) and runs `python -m exabgp` from balancer's own interpreter as a child.
ExaBGP's process API is the only channel: its `process` section runs
`balancer.cluster.exabgp_api`, a stateless relay that connects back to a unix socket the
speaker listens on in that folder. So the master never reads a FIFO or another program's
files, commands get answers (`exabgp.api.ack`), neighbor state changes arrive as JSON
(`encoder json`, `neighbor-changes`), and either side can restart: on every new
connection the speaker re-announces what it wants, since a fresh ExaBGP holds nothing.

The rule (SPEC): a prefix is announced only while the node can serve it. The master
decides that (`can_serve(prefix)` → (yes, why): usable servers or L7 nodes, disable_file);
the speaker adds "not stopping", re-asks every POLL_INTERVAL and on `refresh()`, and sends
only changes. A stop withdraws every route, waits for ExaBGP's answers, then ends ExaBGP
with SIGTERM, which closes each session with a NOTIFICATION: the router drops whatever
was still announced, so nothing outlives balancer. ExaBGP dying is logged with the tail
of its output and restarted with a doubling delay (balancer.cluster.child); its routes come back
when its relay reconnects. ExaBGP gets SIGTERM if the master dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import pwd
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from balancer.cluster.child import (
    Backoff,
    die_with_parent,
    end_process,
    output_tail,
    pause,
    runtime_folder,
)
from balancer.config.model import Bgp, Config

log = logging.getLogger("balancer.bgp")

# (can the node serve this prefix now, why) — asked for each announced prefix.
CanServe = Callable[[str], tuple[bool, str]]

POLL_INTERVAL = 0.25  # disable_file and health are re-read this often (SPEC: withdraw within 1 s)
ACK_TIMEOUT = 3.0  # a stop waits this long for ExaBGP to acknowledge the withdrawals
EXIT_TIMEOUT = 5.0  # then this long for ExaBGP to close its sessions and exit


@dataclass
class Neighbor:
    address: str
    peer_as: int
    state: str = "idle"  # idle, connected, established, down
    since: float = 0.0


def render_exabgp_config(bgp: Bgp, socket_path: str) -> str:
    """ExaBGP's configuration: the relay as API process, one block per neighbor."""
    relay = f"{sys.executable} -m balancer.cluster.exabgp_api {socket_path}"
    lines = [
        "process balancer {",
        f"    run {relay};",
        "    encoder json;",
        "}",
    ]
    for neighbor in bgp.neighbor:
        lines += [
            "",
            f"neighbor {neighbor.address} {{",
            f"    router-id {bgp.router_id};",
            f"    local-address {bgp.local_address};",
            f"    local-as {bgp.local_as};",
            f"    peer-as {neighbor.peer_as};",
            f"    hold-time {int(bgp.hold_time)};",
        ]
        if neighbor.passive:
            lines += ["    passive true;", f"    listen {neighbor.port};"]
        elif neighbor.port != 179:
            lines.append(f"    connect {neighbor.port};")
        lines += [
            "    family {",
            "        ipv4 unicast;",
            "    }",
            "    api {",
            "        processes [ balancer ];",
            "        neighbor-changes;",
            "    }",
            "}",
        ]
    return "\n".join(lines) + "\n"


def exabgp_environment(log_file: str) -> dict[str, str]:
    """ExaBGP's settings (exabgp.section.option written exabgp_section_option) plus a PYTHONPATH reaching
    this balancer, so the relay it runs imports the same code."""
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        "PYTHONPATH": package_root + (os.pathsep + path if path else ""),
        "exabgp_daemon_daemonize": "false",
        "exabgp_daemon_user": pwd.getpwuid(os.geteuid()).pw_name,  # the user it runs as, not $USER
        "exabgp_daemon_drop": "false",
        "exabgp_api_ack": "true",
        "exabgp_api_cli": "false",  # no named pipes in /run: the relay is the only channel
        "exabgp_api_respawn": "false",
        "exabgp_api_terminate": "true",  # a relay gone means ExaBGP restarts as a whole
        "exabgp_log_destination": log_file,
        "exabgp_log_level": "INFO",
        "exabgp_log_statistics": "false",  # a line per message sent: the file would only grow
    }


def missing_exabgp() -> str | None:
    """Why [bgp] cannot run here (ExaBGP not importable by this Python), or None."""
    if importlib.util.find_spec("exabgp") is None:
        return f"[bgp] needs ExaBGP, which {sys.executable} cannot import: install the package's tiers extra"
    return None


class BgpSpeaker:
    """The master's BGP speaker. Call from the master's event loop only."""

    def __init__(self) -> None:
        self.bgp: Bgp | None = None
        self.prefixes: list[str] = []
        self.can_serve: CanServe = lambda prefix: (False, "not started")
        self.stopping = False
        self.folder = ""
        self.sent: dict[str, bool] = {}  # what the connected ExaBGP holds: True = announced
        self.why: dict[str, str] = {}
        self.changed_at: dict[str, float] = {}
        self.neighbors: dict[str, Neighbor] = {}
        self.writer: asyncio.StreamWriter | None = None
        self.acks: deque[asyncio.Future[str]] = deque()
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.restart_now = asyncio.Event()  # a reload changed the sessions
        self.server: asyncio.Server | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.stop_task: asyncio.Task[None] | None = None

    # -- life ------------------------------------------------------------------------------

    async def start(self, config: Config, can_serve: CanServe) -> None:
        """Start ExaBGP for `config.bgp` (which must be set). Raises OSError when the
        runtime folder or socket cannot be made."""
        assert config.bgp is not None
        self.can_serve = can_serve
        self._take(config)
        self.folder = runtime_folder("bgp")
        self.server = await asyncio.start_unix_server(self._on_relay, self._socket_path())
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._poll()), loop.create_task(self._supervise())]

    def _socket_path(self) -> str:
        return os.path.join(self.folder, "api.sock")

    def _take(self, config: Config) -> None:
        assert config.bgp is not None
        self.bgp = config.bgp
        self.prefixes = config.bgp_announce()
        known = {neighbor.address: neighbor for neighbor in self.neighbors.values()}
        self.neighbors = {
            n.address: known.get(n.address) or Neighbor(n.address, n.peer_as) for n in config.bgp.neighbor
        }
        for neighbor in config.bgp.neighbor:
            self.neighbors[neighbor.address].peer_as = neighbor.peer_as

    async def reload(self, config: Config) -> None:
        """Take a new [bgp]: prefixes no longer listed are withdrawn, new ones follow the
        rule; changed sessions (neighbors, AS, addresses, timers) restart ExaBGP."""
        assert config.bgp is not None and self.bgp is not None
        sessions_changed = config.bgp.model_copy(update={"announce": []}) != self.bgp.model_copy(
            update={"announce": []}
        )
        self._take(config)
        for prefix in [p for p in self.sent if p not in self.prefixes]:
            if self.sent[prefix]:
                self._send("withdraw", prefix, "no longer in announce")
            del self.sent[prefix]
        if sessions_changed:
            log.info("bgp: sessions changed by the reload: restarting ExaBGP")
            self.restart_now.set()
        self.refresh()

    async def stop(self) -> None:
        """Withdraw every route, wait for ExaBGP's answers, then stop it (its
        NOTIFICATIONs make the routers drop anything left). Callers may overlap (a second
        stop signal): they all wait for the one stop."""
        if self.stop_task is None:
            self.stop_task = asyncio.get_running_loop().create_task(self._stop())
        await asyncio.shield(self.stop_task)

    async def _stop(self) -> None:
        self.stopping = True
        self.refresh()
        pending = list(self.acks)
        if pending:
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), ACK_TIMEOUT)
        poll, supervise = self.tasks
        poll.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poll
        self.restart_now.set()  # wakes the supervisor from a restart delay
        await self._end_exabgp()
        await supervise  # returns once ExaBGP is gone (it ends one spawned meanwhile)
        if self.server is not None:
            self.server.close()
        if self.writer is not None:
            self.writer.close()
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
        log.info("bgp: stopped: every route withdrawn, ExaBGP ended")

    async def _end_exabgp(self) -> None:
        await end_process(self.process, "bgp: ExaBGP", EXIT_TIMEOUT)

    async def _supervise(self) -> None:
        """Run ExaBGP; when it dies, log why and start it again after a delay that grows
        while it keeps dying quickly. Ends when `stopping` is set and ExaBGP has exited
        (stop() ends ExaBGP and sets `restart_now` to wake this from a delay). Not
        cancelled: a cancel while ExaBGP is being spawned could leave it running."""
        assert self.bgp is not None
        backoff = Backoff()
        while not self.stopping:
            conf = os.path.join(self.folder, "exabgp.conf")
            log_file = os.path.join(self.folder, "exabgp.log")
            started = time.monotonic()
            try:
                Path(conf).write_text(render_exabgp_config(self.bgp, self._socket_path()))
                with open(log_file, "ab") as output:
                    self.process = await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "exabgp",
                        conf,
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=output,
                        stderr=asyncio.subprocess.STDOUT,
                        env=exabgp_environment(log_file),
                        preexec_fn=die_with_parent,
                    )
            except OSError as exc:
                delay = backoff.failed_start()
                log.error("bgp: cannot start ExaBGP: %s; nothing is announced; trying again in %gs", exc, delay)
                await pause(self.restart_now, delay)
                continue
            if self.stopping:  # stop() ran while it was being spawned
                await self._end_exabgp()
                return
            log.info("bgp: ExaBGP started (pid %d) for %d neighbor(s)", self.process.pid, len(self.neighbors))
            waiter = asyncio.ensure_future(self.process.wait())
            restart = asyncio.ensure_future(self.restart_now.wait())
            await asyncio.wait([waiter, restart], return_when=asyncio.FIRST_COMPLETED)
            restart.cancel()
            if self.restart_now.is_set() and not self.stopping:  # a reload changed the sessions
                self.restart_now.clear()
                await self._end_exabgp()
                self._lost_exabgp()
                backoff = Backoff()
                continue
            code = await waiter
            self._lost_exabgp()
            if self.stopping:
                return
            delay = backoff.died(time.monotonic() - started)
            self.restarts += 1
            log.error(
                "bgp: ExaBGP exited (status %s); its routes are gone from the routers; restarting in %gs%s",
                code,
                delay,
                output_tail(log_file),
            )
            await pause(self.restart_now, delay)

    def _lost_exabgp(self) -> None:
        """ExaBGP is gone: it holds no route and no session any more."""
        self.sent.clear()
        for neighbor in self.neighbors.values():
            if neighbor.state != "idle":
                self._set_state(neighbor, "idle")
        while self.acks:
            future = self.acks.popleft()
            if not future.done():
                future.set_result("lost")

    async def _poll(self) -> None:
        while not self.stopping:
            self.refresh()
            await asyncio.sleep(POLL_INTERVAL)

    # -- the API connection -----------------------------------------------------------------

    async def _on_relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.writer is not None:
            self.writer.close()
        self.writer = writer
        self.sent.clear()  # a new ExaBGP holds nothing yet
        self.refresh()
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                self._on_message(line.decode("utf-8", "replace").strip())
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
            log.warning("bgp: ExaBGP API connection: %s", exc)
        finally:
            if self.writer is writer:
                self.writer = None
            writer.close()

    def _on_message(self, line: str) -> None:
        if not line:
            return
        if line in ("done", "error"):
            self._on_answer(line)
            return
        try:
            message = json.loads(line)
        except ValueError:
            log.debug("bgp: ExaBGP said %r", line)
            return
        if not isinstance(message, dict):
            return
        if "answer" in message:
            self._on_answer(str(message["answer"]))
            return
        if message.get("type") != "state":
            return
        peer = message.get("neighbor", {}).get("address", {}).get("peer")
        state = message.get("neighbor", {}).get("state")
        neighbor = self.neighbors.get(str(peer))
        if neighbor is not None and isinstance(state, str):
            self._set_state(neighbor, "established" if state == "up" else state)

    def _on_answer(self, answer: str) -> None:
        if answer == "error":
            log.error("bgp: ExaBGP refused a command (see its log in %s)", self.folder)
        if self.acks:
            future = self.acks.popleft()
            if not future.done():
                future.set_result(answer)

    def _set_state(self, neighbor: Neighbor, state: str) -> None:
        if neighbor.state == state:
            return
        log.info("bgp: session with %s (AS %d): %s -> %s", neighbor.address, neighbor.peer_as, neighbor.state, state)
        neighbor.state = state
        neighbor.since = time.time()

    # -- the announce rule ------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-evaluate every prefix; announce or withdraw those whose answer changed."""
        for prefix in self.prefixes:
            if self.stopping:
                serve, why = False, "stopping"
            else:
                try:
                    serve, why = self.can_serve(prefix)
                except Exception:  # a bug there must not keep routes announced
                    log.exception("bgp: deciding whether to announce %s failed: withdrawing", prefix)
                    serve, why = False, "error deciding (see the log)"
            self.why[prefix] = why
            if self.writer is None or serve == self.sent.get(prefix, False):
                continue
            self._send("announce" if serve else "withdraw", prefix, why)

    def _send(self, verb: str, prefix: str, why: str) -> None:
        assert self.writer is not None
        self.writer.write(f"{verb} route {prefix} next-hop self\n".encode())
        self.acks.append(asyncio.get_running_loop().create_future())
        self.sent[prefix] = verb == "announce"
        self.changed_at[prefix] = time.time()
        log.info("bgp: %s %s (%s)", "announcing" if verb == "announce" else "withdrawing", prefix, why)

    # -- observation -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """For `show bgp`, GET /api/bgp and the metrics."""
        now = time.time()
        process = self.process
        return {
            "announcements": [
                {
                    "prefix": prefix,
                    "announced": self.sent.get(prefix, False),
                    "why": self.why.get(prefix, ""),
                    "since": round(now - self.changed_at[prefix], 1) if prefix in self.changed_at else None,
                }
                for prefix in self.prefixes
            ],
            "neighbors": [
                {
                    "address": n.address,
                    "peer_as": n.peer_as,
                    "state": n.state,
                    "since": round(now - n.since, 1) if n.since else None,
                }
                for n in self.neighbors.values()
            ],
            "exabgp": {
                "pid": process.pid if process is not None and process.returncode is None else None,
                "connected": self.writer is not None,
                "restarts": self.restarts,
            },
        }
