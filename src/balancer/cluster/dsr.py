"""An L7 node behind an L4 tier (`[dsr]`): receive the VIPs' traffic, answer directly.

What `DsrNode.start()` sets, in the network namespace of the calling process, before the
master binds the frontends (they bind the VIPs), all of it removed by `stop()`:
- each VIP as VIP/32 on `lo`, with the address label LO_LABEL: that is how a start finds
  the addresses a crashed run left (the label is kernel state, shown by `ip addr`);
- ARP suppressed for them: `arp_ignore=1` (answer only for addresses of the asking
  interface) and `arp_announce=2` (never use a VIP as an ARP source), on `all`;
- for `tunnel.type = "vxlan"`: the decapsulation device DEVICE (VNI `tunnel.vni` or the low 16
  bits of `tunnel.local`, UDP 4789, `local` its underlay address, no learning) with the MAC
  the L4 nodes address, `tunnel_mac(vni)`, and a /32 link-local address TUNNEL_ADDRESS:
  reverse-path filtering drops everything arriving on a device without an IPv4 address;
- reverse-path filtering loose (2) on `all` and on the device: a VIP packet arrives on the
  tunnel but the reply leaves by the default route;
- `"direct"`: no device (the L4 node sends the VIP's packets to this node's MAC).
The sysctls are restored to what they were on stop. Their values from before the first start
are kept in STATE_DIR/dsr-NETNS.json (NETNS: the inode of the network namespace, as /run is
shared by every namespace) until a stop restores them, so a start after a crash restores, on
its own stop, what the machine had before the crashed run. A start first removes the
labelled addresses and the device a crashed run left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from balancer.cluster.l4 import VXLAN_PORT, L4Error, tunnel_mac
from balancer.config.model import Dsr

if TYPE_CHECKING:
    from pyroute2 import IPRoute

LO_LABEL = "lo:balancer"
DEVICE = "bdsr0"
TUNNEL_ADDRESS = "169.254.76.1"
_CONF = Path("/proc/sys/net/ipv4/conf")
STATE_DIR = Path("/run/balancer")

log = logging.getLogger("balancer.dsr")


class DsrError(L4Error):
    """The kernel refused part of the `[dsr]` setup; the message says which and why."""


def _sysctls(dsr: Dsr) -> dict[Path, str]:
    """Every sysctl the node sets, with the value it needs."""
    wanted = {_CONF / "all" / "arp_ignore": "1", _CONF / "all" / "arp_announce": "2"}
    if dsr.tunnel.type != "direct":
        wanted[_CONF / "all" / "rp_filter"] = "2"
    return wanted


def clear_stale() -> None:
    """Remove what a previous run (crashed or not) left: labelled addresses on lo, DEVICE."""
    from pyroute2 import IPRoute  # imported where used: a node without [dsr] never loads pyroute2
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        for address in ipr.get_addr(family=socket.AF_INET, label=LO_LABEL):
            with contextlib.suppress(NetlinkError):
                ipr.addr("del", index=address["index"], address=address.get_attr("IFA_LOCAL"), prefixlen=32)
        for index in ipr.link_lookup(ifname=DEVICE):
            with contextlib.suppress(NetlinkError):
                ipr.link("del", index=index)


def _state_file() -> Path:
    return STATE_DIR / f"dsr-{os.stat('/proc/self/ns/net').st_ino}.json"


def _load_saved() -> dict[Path, str]:
    """The sysctl values a crashed run saved before it changed them ({} when none)."""
    try:
        saved = json.loads(_state_file().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(saved, dict):
        return {}
    return {Path(path): str(value) for path, value in saved.items() if str(path).startswith(str(_CONF))}


def _save(values: dict[Path, str]) -> None:
    STATE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    _state_file().write_text(json.dumps({str(path): value for path, value in values.items()}))


class DsrNode:
    def __init__(self, dsr: Dsr) -> None:
        self.dsr = dsr
        self._before: dict[Path, str] = {}

    def start(self) -> None:
        """Clear a previous run's leftovers, then set everything. Raises DsrError (after
        undoing what it had set) when the kernel refuses a part, or when not run as root."""
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        if os.geteuid() != 0:
            raise DsrError("[dsr] programs the kernel (addresses, ARP, tunnels): run balancer as root")
        try:
            clear_stale()
            wanted = _sysctls(self.dsr)
            self._before = _load_saved()  # the values before a crashed run, if one crashed
            for path in wanted:
                self._before.setdefault(path, path.read_text().strip())
            _save(self._before)
            for path, value in wanted.items():
                self._set(path, value)
            with IPRoute() as ipr:
                lo = ipr.link_lookup(ifname="lo")[0]
                for vip in self.dsr.vips:
                    ipr.addr("add", index=lo, address=vip, prefixlen=32, label=LO_LABEL)
                if self.dsr.tunnel.type != "direct":
                    self._add_tunnel(ipr)
        except BaseException as exc:
            self.stop()
            if isinstance(exc, (NetlinkError, OSError)):
                raise DsrError(f"[dsr]: {exc}") from None
            raise

    def _add_tunnel(self, ipr: IPRoute) -> None:
        from pyroute2.netlink.exceptions import NetlinkError

        tunnel = self.dsr.tunnel
        vni = tunnel.tunnel_vni()
        try:
            if tunnel.type == "vxlan":
                ipr.link(
                    "add",
                    ifname=DEVICE,
                    kind="vxlan",
                    vxlan_id=vni,
                    vxlan_local=tunnel.local,
                    vxlan_port=VXLAN_PORT,
                    vxlan_learning=0,
                    address=tunnel_mac(vni),
                )
            else:
                ipr.link("add", ifname=DEVICE, kind="ipip", ipip_local=tunnel.local)
        except NetlinkError as exc:
            if tunnel.type == "ipip":
                raise DsrError(f'[dsr] tunnel type "ipip": this kernel has no IPIP tunnels ({exc})') from None
            raise DsrError(f"[dsr]: cannot create the {tunnel.type} device {DEVICE}: {exc}") from None
        index = ipr.link_lookup(ifname=DEVICE)[0]
        ipr.addr("add", index=index, address=TUNNEL_ADDRESS, prefixlen=32)
        self._set(_CONF / DEVICE / "rp_filter", "2")
        ipr.link("set", index=index, state="up")

    @staticmethod
    def _set(path: Path, value: str) -> None:
        path.write_text(value + "\n")

    def stop(self) -> None:
        """Remove the addresses and the device; restore the sysctls as they were."""
        clear_stale()
        for path, value in self._before.items():
            with contextlib.suppress(OSError):
                path.write_text(value + "\n")
        if self._before:
            with contextlib.suppress(OSError):
                _state_file().unlink()
        self._before.clear()


class DsrService:
    """`[dsr]` as the master runs it: start before the frontends bind, reload (an unchanged
    table is left alone; a changed one is undone and set again), stop on every way out.
    One at a time (a lock), and stop is final: a stop signalled during a reload waits for
    it and then undoes what it set, rather than finding nothing set and leaving the
    reload's VIPs and device behind (as balancer.cluster.l4_service)."""

    def __init__(self) -> None:
        self.dsr: Dsr | None = None
        self.node: DsrNode | None = None
        self.changing = asyncio.Lock()  # held by start, reload and stop
        self.stopped = False

    async def start(self, dsr: Dsr | None) -> None:
        """Raises DsrError, having undone what it set. Nothing after stop()."""
        async with self.changing:
            if not self.stopped:
                await self._start(dsr)

    async def _start(self, dsr: Dsr | None) -> None:
        """In a thread: pyroute2's synchronous API runs an event loop of its own."""
        if dsr is None:
            return
        node = DsrNode(dsr)
        await asyncio.to_thread(node.start)
        self.node, self.dsr = node, dsr
        log.info("dsr: VIPs %s on lo, tunnel %s", ", ".join(dsr.vips), dsr.tunnel.type)

    async def stop(self) -> None:
        """Undo what start or reload set, for good."""
        async with self.changing:
            self.stopped = True
            await self._stop()

    async def _stop(self) -> None:
        if self.node is not None:
            node, self.node, self.dsr = self.node, None, None
            await asyncio.to_thread(node.stop)
            log.info("dsr: VIPs and tunnel removed")

    async def reload(self, dsr: Dsr | None) -> list[str]:
        """Problems that refused it ([] when it took); the running setup then stays."""
        async with self.changing:
            if self.stopped:
                return ["[dsr]: balancer is stopping"]
            return await self._reload(dsr)

    async def _reload(self, dsr: Dsr | None) -> list[str]:
        if dsr == self.dsr:
            return []
        old = self.dsr
        await self._stop()
        try:
            await self._start(dsr)
        except DsrError as exc:
            log.error("dsr: reload refused: %s", exc)
            with contextlib.suppress(DsrError):
                await self._start(old)
            return [str(exc)]
        return []
