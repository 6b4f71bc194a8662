"""[vrrp]: hold the VIPs on the healthy node of a pair, through keepalived.

Design. keepalived (Debian package) speaks VRRP; balancer decides whether this node may hold
the VIPs. The master's `VrrpKeeper` writes keepalived's configuration into a private runtime
folder (mode 0700, removed on stop) and runs `keepalived --dont-fork` as its child, VRRP
only, with its own pid files, logging to a file in that folder (its tail is logged when it
dies). Two channels, no process spawned per check:

- health, balancer → keepalived: a `track_file` holding a number keepalived adds to the
  priority (weight 1). The keeper rewrites it when the verdict changes, re-asked every
  `track_interval`: 0 = healthy; YIELD (-253: priority 1, still holding the VIPs until a
  peer takes them) = give the VIPs up gracefully; FAULT (-254: keepalived drops the VIPs
  at once and sends a priority-0 advert, the peer takes over within its skew time).
- role, keepalived → balancer: keepalived's `notify_fifo`, lines `INSTANCE "balancer"
  MASTER 150`, read without blocking by the master's event loop.

Giving up gracefully. Going to FAULT at once leaves the VIP nowhere for the peer's skew time
(about 0.1 s): the SYNs sent then are lost and retried by the client a second later. So a
stop or a disable_file first YIELDs: the peer (preempt on) sees a master of lower priority,
waits out its master-down interval (3 adverts) and takes the VIPs; this node drops them on
the peer's first advert, so the VIP is never missing. Once the VIPs left this node (or after
3 adverts + 1 s without a peer taking them), the file says FAULT. Without preempt a peer
never takes the VIPs from a live master, so the keeper goes to FAULT directly. A sick node
(no usable server behind a VIP) goes to FAULT directly: it cannot serve anyway.

keepalived dying is logged and it is restarted with a doubling delay; VIPs it left on the
interface (a SIGKILL leaves them) are removed first, ours only (the configured VIPs on the
configured interface). keepalived gets SIGTERM when the master dies (PR_SET_PDEATHSIG), and
keepalived removes its VIPs on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable
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
from balancer.config.model import Vrrp

log = logging.getLogger("balancer.vrrp")

# (verdict, why): verdict "ok", "yield" (give the VIPs up gracefully) or "fault" (sick).
Health = Callable[[], tuple[str, str]]

INSTANCE = "balancer"  # the vrrp_instance name in keepalived's configuration
TRACK_OK = 0
TRACK_YIELD = -253  # added to the priority: keepalived clamps it to 1
TRACK_FAULT = -254  # below -253: keepalived enters FAULT
EXIT_TIMEOUT = 5.0  # a stop waits this long for keepalived to exit after SIGTERM
STATES = ("INIT", "BACKUP", "MASTER", "FAULT", "STOP")  # STOP: keepalived is not running


def keepalived_path() -> str | None:
    """Where keepalived is (PATH, then /usr/sbin which a non-root PATH may lack), or None."""
    return shutil.which("keepalived") or shutil.which("keepalived", path="/usr/sbin:/sbin")


def missing_keepalived() -> str | None:
    """Why [vrrp] cannot run here, or None."""
    if keepalived_path() is None:
        return "[vrrp] needs keepalived (Debian package keepalived), which is not installed"
    if os.geteuid() != 0:
        return "[vrrp] needs root: keepalived adds the VIPs and sends VRRP adverts (raw sockets)"
    return None


def render_keepalived_config(vrrp: Vrrp, fifo: str, track_file: str) -> str:
    """keepalived's configuration: VRRPv3, one instance holding every VIP, tracking `track_file`."""
    lines = [
        "global_defs {",
        f"    notify_fifo {fifo}",
        "    vrrp_version 3",
        "}",
        "",
        "track_file balancer_health {",
        f"    file {track_file}",
        "    weight 1",
        "}",
        "",
        f"vrrp_instance {INSTANCE} {{",
        "    state BACKUP",  # the adverts decide; nopreempt needs BACKUP
        f"    interface {vrrp.interface}",
        f"    virtual_router_id {vrrp.virtual_router_id}",
        f"    priority {vrrp.priority}",
        f"    advert_int {vrrp.advert_interval:.2f}",
    ]
    if not vrrp.preempt:
        lines.append("    nopreempt")
    if vrrp.unicast_src:
        lines.append(f"    unicast_src_ip {vrrp.unicast_src}")
    if vrrp.unicast_peers:
        lines += ["    unicast_peer {", *(f"        {peer}" for peer in vrrp.unicast_peers), "    }"]
    lines += [
        "    virtual_ipaddress {",
        *(f"        {vip} dev {vrrp.interface}" for vip in vrrp.vips),
        "    }",
        "    track_file {",
        "        balancer_health weight 1",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def parse_fifo_line(line: str) -> tuple[str, int] | None:
    """(state, priority) from a notify_fifo line about our instance, such as
    `INSTANCE "balancer" MASTER 150`; None for other lines."""
    words = line.split()
    if len(words) != 4 or words[0] != "INSTANCE" or words[1].strip('"') != INSTANCE or words[2] not in STATES:
        return None
    try:
        return (words[2], int(words[3]))
    except ValueError:
        return None


def holds_address(address: str) -> bool:
    """Whether `address` is local to this network namespace now (a plain bind succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return False
            raise
    return True


def remove_stale_vips(vrrp: Vrrp) -> list[str]:
    """Remove the configured VIPs still on the configured interface (a keepalived killed by
    SIGKILL leaves them); the VIPs removed. Other addresses are never touched."""
    from pyroute2 import IPRoute  # the tiers extra; imported here so `check` never needs it
    from pyroute2.netlink.exceptions import NetlinkError

    removed: list[str] = []
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=vrrp.interface)
        if not found:
            return removed
        index = found[0]
        present = {
            (str(message.get_attr("IFA_ADDRESS")), int(message["prefixlen"]))
            for message in ipr.get_addr(index=index, family=socket.AF_INET)
        }
        for vip in vrrp.vips:
            interface = ipaddress.ip_interface(vip)
            key = (str(interface.ip), interface.network.prefixlen)
            if key in present:
                with contextlib.suppress(NetlinkError):
                    ipr.addr("del", index=index, address=key[0], prefixlen=key[1])
                    removed.append(vip)
    return removed


class VrrpKeeper:
    """The master's VRRP keeper. Call from the master's event loop only."""

    def __init__(self) -> None:
        self.vrrp: Vrrp | None = None
        self.health: Health = lambda: ("fault", "not started")
        self.folder = ""
        self.stopping = False
        self.state = "INIT"  # keepalived's, from the notify FIFO
        self.priority = 0
        self.since = time.time()
        self.transitions = 0
        self.verdict = "fault"  # what the track file says: ok, yield, fault
        self.why = "starting"
        self.written: int | None = None
        self.yield_started = 0.0  # monotonic time the current yield began; 0 = not yielding
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.restart_now = asyncio.Event()
        self.fifo_fd = -1
        self.fifo_buffer = b""
        self.tasks: list[asyncio.Task[None]] = []
        self.stop_task: asyncio.Task[None] | None = None

    # -- life ------------------------------------------------------------------------------

    async def start(self, vrrp: Vrrp, health: Health) -> None:
        """Start keepalived for `vrrp`. Raises OSError when the runtime folder or the FIFO
        cannot be made."""
        self.vrrp = vrrp
        self.health = health
        self.folder = runtime_folder("vrrp")
        os.mkfifo(self._path("notify.fifo"), 0o600)
        # Read and write: the FIFO never reads as closed while keepalived restarts.
        self.fifo_fd = os.open(self._path("notify.fifo"), os.O_RDWR | os.O_NONBLOCK)
        loop = asyncio.get_running_loop()
        loop.add_reader(self.fifo_fd, self._on_fifo)
        self.refresh()  # the track file exists before keepalived reads it
        self.tasks = [loop.create_task(self._poll()), loop.create_task(self._supervise())]

    def _path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    async def reload(self, vrrp: Vrrp) -> None:
        """Take a new [vrrp]: keepalived re-reads its configuration (SIGHUP), keeping the
        VIPs where they are when the instance is unchanged."""
        if vrrp == self.vrrp:
            return
        self.vrrp = vrrp
        Path(self._path("keepalived.conf")).write_text(self._render())
        process = self.process
        if process is not None and process.returncode is None:
            log.info("vrrp: [vrrp] changed by the reload: keepalived re-reads its configuration")
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGHUP)
        self.refresh()

    async def hand_over(self) -> None:
        """Give the VIPs up before a stop: yield, and return once no VIP is held here (or
        after 3 adverts + 1 s: no peer took them). Callers may overlap."""
        self.stopping = True
        self.refresh()
        assert self.vrrp is not None
        deadline = time.monotonic() + 3 * self.vrrp.advert_interval + 1.0
        while self.held() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            self.refresh()
        self.refresh()
        if self.held():
            log.warning("vrrp: no peer took the VIPs; keepalived drops them as it stops")
        else:
            log.info("vrrp: VIPs handed over (state %s)", self.state)

    async def stop(self) -> None:
        """Stop keepalived (it drops any VIP still held), remove the runtime folder."""
        if self.stop_task is None:
            self.stop_task = asyncio.get_running_loop().create_task(self._stop())
        await asyncio.shield(self.stop_task)

    async def _stop(self) -> None:
        self.stopping = True
        self.refresh()
        poll, supervise = self.tasks
        poll.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poll
        self.restart_now.set()
        await self._end_keepalived()
        await supervise
        if self.fifo_fd >= 0:
            asyncio.get_running_loop().remove_reader(self.fifo_fd)
            with contextlib.suppress(OSError):
                self._read_fifo()  # the last transitions keepalived wrote
            os.close(self.fifo_fd)
            self.fifo_fd = -1
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
        log.info("vrrp: stopped: keepalived ended, VIPs released")

    async def _end_keepalived(self) -> None:
        if await end_process(self.process, "vrrp: keepalived", EXIT_TIMEOUT):
            await self._clean_interface()

    def _render(self) -> str:
        assert self.vrrp is not None
        return render_keepalived_config(self.vrrp, self._path("notify.fifo"), self._path("health"))

    async def _clean_interface(self) -> None:
        assert self.vrrp is not None
        try:  # in a thread: pyroute2 runs an event loop of its own
            removed = await asyncio.to_thread(remove_stale_vips, self.vrrp)
        except Exception as exc:  # netlink refused: say so, keepalived will try anyway
            log.error("vrrp: cannot check %s for VIPs left behind: %s", self.vrrp.interface, exc)
            return
        if removed:
            log.warning(
                "vrrp: removed VIPs left on %s by a keepalived gone: %s", self.vrrp.interface, ", ".join(removed)
            )

    async def _supervise(self) -> None:
        """Run keepalived; when it dies, log why, remove what it left and start it again
        after a delay that grows while it keeps dying quickly. Ends when `stopping` is set
        and keepalived has exited. Not cancelled (see bgp.py)."""
        backoff = Backoff()
        program = keepalived_path() or "keepalived"
        while not self.stopping:
            assert self.vrrp is not None
            conf, output_path = self._path("keepalived.conf"), self._path("keepalived.log")
            started = time.monotonic()
            await self._clean_interface()
            try:
                Path(conf).write_text(self._render())
                with open(output_path, "ab") as output:
                    self.process = await asyncio.create_subprocess_exec(
                        program,
                        "--dont-fork",
                        "--log-console",
                        "--no-syslog",
                        "--vrrp",
                        "--use-file",
                        conf,
                        "--pid",
                        self._path("keepalived.pid"),
                        "--vrrp_pid",
                        self._path("vrrp.pid"),
                        "--checkers_pid",
                        self._path("checkers.pid"),
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=output,
                        stderr=asyncio.subprocess.STDOUT,
                        preexec_fn=die_with_parent,
                    )
            except OSError as exc:
                delay = backoff.failed_start()
                log.error("vrrp: cannot start keepalived: %s; no VIP is held here; trying again in %gs", exc, delay)
                await pause(self.restart_now, delay)
                continue
            if self.stopping:
                await self._end_keepalived()
                return
            log.info(
                "vrrp: keepalived started (pid %d): router %d, priority %d, VIPs %s on %s",
                self.process.pid,
                self.vrrp.virtual_router_id,
                self.vrrp.priority,
                ", ".join(self.vrrp.vips),
                self.vrrp.interface,
            )
            code = await self.process.wait()
            if self.stopping:
                return
            self._set_state("STOP", self.priority, "keepalived exited")
            delay = backoff.died(time.monotonic() - started)
            self.restarts += 1
            log.error("vrrp: keepalived exited (status %s); restarting in %gs%s", code, delay, output_tail(output_path))
            await self._clean_interface()
            await pause(self.restart_now, delay)

    async def _poll(self) -> None:
        assert self.vrrp is not None
        while not self.stopping:
            self.refresh()
            await asyncio.sleep(self.vrrp.track_interval)

    # -- health → track file -----------------------------------------------------------------

    def refresh(self) -> None:
        """Decide the verdict and write it to the track file when it changed."""
        if self.stopping:
            verdict, why = "yield", "stopping"
        else:
            try:
                verdict, why = self.health()
            except Exception:  # a bug there must not keep the VIPs on a node that cannot tell
                log.exception("vrrp: deciding this node's health failed: giving up the VIPs")
                verdict, why = "fault", "error deciding (see the log)"
        if verdict == "yield":
            assert self.vrrp is not None
            now = time.monotonic()
            if not self.yield_started:
                self.yield_started = now
            limit = 3 * self.vrrp.advert_interval + 1.0
            if not self.vrrp.preempt or not self.held() or now - self.yield_started > limit:
                verdict = "fault"  # nothing to hand over any more (or no peer to take it)
        else:
            self.yield_started = 0.0
        value = {"ok": TRACK_OK, "yield": TRACK_YIELD}.get(verdict, TRACK_FAULT)
        if value != self.written:
            try:
                with open(self._path("health"), "w") as track:
                    track.write(f"{value}\n")
            except OSError as exc:
                log.error("vrrp: cannot write the track file: %s", exc)
                return
            if self.written is not None or value != TRACK_OK:
                log.info("vrrp: health %s -> %s (%s)", self.verdict, verdict, why)
            self.written = value
        self.verdict, self.why = verdict, why

    def held(self) -> list[str]:
        """The VIPs local to this node now."""
        assert self.vrrp is not None
        return [address for address in self.vrrp.addresses() if holds_address(address)]

    # -- keepalived → role -------------------------------------------------------------------

    def _on_fifo(self) -> None:
        try:
            self._read_fifo()
        except OSError as exc:
            log.error("vrrp: reading keepalived's notify FIFO: %s", exc)

    def _read_fifo(self) -> None:
        while True:
            try:
                chunk = os.read(self.fifo_fd, 4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.fifo_buffer += chunk
        *lines, self.fifo_buffer = self.fifo_buffer.split(b"\n")
        for line in lines:
            parsed = parse_fifo_line(line.decode("utf-8", "replace").strip())
            if parsed is not None:
                self._set_state(parsed[0], parsed[1], f"health {self.verdict}: {self.why}")

    def _set_state(self, state: str, priority: int, why: str) -> None:
        self.priority = priority
        if state == self.state:
            return
        log.info("vrrp: %s -> %s (router %s, %s)", self.state, state, self._router(), why)
        self.transitions += 1
        self.state = state
        self.since = time.time()

    def _router(self) -> str:
        return str(self.vrrp.virtual_router_id) if self.vrrp is not None else "?"

    # -- observation -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """For `show vrrp`, GET /api/vrrp and the metrics."""
        assert self.vrrp is not None
        process = self.process
        return {
            "state": self.state,
            "priority": self.vrrp.priority,
            "effective_priority": max(1, min(254, self.vrrp.priority + (self.written or 0)))
            if self.written != TRACK_FAULT
            else 0,
            "since": round(time.time() - self.since, 1),
            "transitions": self.transitions,
            "health": self.verdict,
            "why": self.why,
            "vips": list(self.vrrp.vips),
            "held": self.held(),
            "interface": self.vrrp.interface,
            "virtual_router_id": self.vrrp.virtual_router_id,
            "keepalived": {
                "pid": process.pid if process is not None and process.returncode is None else None,
                "restarts": self.restarts,
            },
        }
