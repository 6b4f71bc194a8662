"""An L4 node (`[[l4]]`): program the kernel to spread a VIP's flows over L7 nodes.

What `L4Node.start()` sets, in the network namespace of the calling process, all of it
removed again by `stop()` (and, after a crash, by the next `start()` before anything else):
- the nftables table `balancer_l4` (balancer.cluster.nft): slot map, per-node flow sets,
  a mark per L7 node;
- per node, a routing table (id = its mark) holding only `VIP/32` into the node: through
  its VXLAN device `bl4-T-N` (a permanent neighbour entry per VIP gives the node's tunnel
  MAC), or via the node's address (`direct`). Tables sending to the same L7 node (address
  and VNI) share the device of the first: the kernel refuses a second VXLAN device with the
  same VNI and port, or a second IPIP device with the same remote. Only the VIP is in it: the VXLAN underlay lookup
  inherits the mark, and a default route there would loop (LAB pitfall 2);
- per node, `ip rule fwmark MARK lookup MARK` at priority RULE_PRIORITY;
- a blackhole route for each VIP in the main table: an unmarked VIP packet (no usable node)
  is dropped instead of going back to the router until its TTL runs out (LAB pitfall 3);
- IPv4 forwarding on (restored on stop to what it was).
Routes carry protocol ROUTE_PROTOCOL, rules priority RULE_PRIORITY, devices the prefix
DEVICE_PREFIX: that is how a start finds what a crashed run left.

Health: `set_usable(table, names)` rebuilds the table's plain (history-free) Maglev table of
the usable nodes, so every L4 node computes the same slots from the same file and health,
and sends the kernel only the slots that changed. The tables one health change away are
computed ahead in a background thread (balancer.cluster.slot_cache), so a change costs a
diff and the nft transaction, not a Maglev build. Established flows keep their node through
the per-node flow sets (a node going down keeps its flows; only new flows move).

The L7 node's side (`[dsr]`): the VIP on lo, ARP for it suppressed, and for vxlan a device
with VNI `vni` and MAC `tunnel_mac(vni)`, which is what the L4 node addresses.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from balancer.cluster.nft import (
    NftError,
    changed_slots,
    delete_table,
    node_mark,
    render_slot_delta_json,
    render_table,
    run_nft,
)
from balancer.cluster.slot_cache import SlotCache
from balancer.config.model import L4
from balancer.config.model import L4Node as L4NodeConfig
from balancer.lb.maglev import build_table

if TYPE_CHECKING:
    from pyroute2 import IPRoute

RULE_PRIORITY = 20040
ROUTE_PROTOCOL = 76  # rtnetlink protocol of every route set here ("L")
DEVICE_PREFIX = "bl4-"
VXLAN_PORT = 4789
NUD_PERMANENT = 0x80
_FORWARDING = Path("/proc/sys/net/ipv4/ip_forward")


class L4Error(RuntimeError):
    """The kernel refused part of the L4 programming; the message says which and why."""


def tunnel_mac(vni: int) -> str:
    """The MAC of the tunnel device of the L7 node with VXLAN id `vni`: 02:00:00 + the VNI
    (locally administered). Both sides derive it, so no address is learned or configured."""
    return f"02:00:00:{(vni >> 16) & 0xFF:02x}:{(vni >> 8) & 0xFF:02x}:{vni & 0xFF:02x}"


def device_name(table_index: int, node_index: int) -> str:
    return f"{DEVICE_PREFIX}{table_index}-{node_index}"


def weighted_sequence(weights: Sequence[int], size: int) -> list[int]:
    """`size` node indexes in smooth weighted round-robin order (roundrobin and random
    index it with nft `numgen`): each node appears in proportion to its weight."""
    current = [0] * len(weights)
    total = sum(weights)
    order: list[int] = []
    for _ in range(size):
        for i, weight in enumerate(weights):
            current[i] += weight
        best = max(range(len(weights)), key=lambda i: current[i])
        current[best] -= total
        order.append(best)
    return order


def compute_slots(table: L4, table_index: int, usable: Iterable[str]) -> list[int]:
    """The mark of each slot of `table` with only the nodes named in `usable` (in file
    order); [] when none is. A pure function of the file and the usable set."""
    wanted = set(usable)
    members = [(n, node) for n, node in enumerate(table.node) if node.name in wanted]
    if not members:
        return []
    weights = [node.weight for _, node in members]
    if table.method in ("maglev", "source"):
        picks = build_table([node.name.encode() for _, node in members], weights, table.table_size)
    else:
        picks = weighted_sequence(weights, table.table_size)
    marks = [node_mark(table_index, n) for n, _ in members]
    return [marks[pick] for pick in picks]


def clear_stale(nft: str = "nft") -> None:
    """Remove whatever a previous run (crashed or not) left: the nft table, the rules at
    RULE_PRIORITY, routes of ROUTE_PROTOCOL in any table, devices named DEVICE_PREFIX*."""
    from pyroute2 import IPRoute  # imported where used: a node without [[l4]] never loads pyroute2
    from pyroute2.netlink.exceptions import NetlinkError

    delete_table(nft)
    with IPRoute() as ipr:
        for rule in ipr.get_rules(family=socket.AF_INET):
            if rule.get_attr("FRA_PRIORITY") == RULE_PRIORITY:
                with contextlib.suppress(NetlinkError):
                    ipr.rule("del", **_rule_spec(rule))
        for route in ipr.route("dump", family=socket.AF_INET):  # every table
            if route["proto"] == ROUTE_PROTOCOL:
                table = route.get_attr("RTA_TABLE") or route["table"]
                dst = f"{route.get_attr('RTA_DST')}/{route['dst_len']}"
                with contextlib.suppress(NetlinkError):
                    ipr.route("del", dst=dst, table=table, proto=ROUTE_PROTOCOL, type=route["type"])
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME")
            if isinstance(name, str) and name.startswith(DEVICE_PREFIX):
                with contextlib.suppress(NetlinkError):
                    ipr.link("del", index=link["index"])


def _rule_spec(rule: object) -> dict[str, object]:
    get = rule.get_attr  # type: ignore[attr-defined]
    return {
        "priority": get("FRA_PRIORITY"),
        "fwmark": get("FRA_FWMARK"),
        "table": get("FRA_TABLE"),
    }


class L4Node:
    """The kernel programming of the `[[l4]]` tables of one file, in this process's netns."""

    def __init__(self, tables: Sequence[L4], nft: str = "nft") -> None:
        self.tables = list(tables)
        self.nft = nft
        # Current slots per table; every node starts usable (the checks take them out).
        self.usable: list[set[str]] = [{node.name for node in table.node} for table in self.tables]
        self.slots: list[list[int]] = []
        self._forwarding_before: str | None = None
        self.last_update_seconds = 0.0
        self.last_kernel_seconds = 0.0
        # The current and the next likely tables (each node added or removed), see slot_cache.
        limit = sum(2 * len(table.node) + 2 for table in self.tables)
        self.cache = SlotCache(self._compute, limit)

    def _compute(self, table_index: int, usable: frozenset[str]) -> list[int]:
        return compute_slots(self.tables[table_index], table_index, usable)

    def _warm(self, table_index: int) -> None:
        names = [node.name for node in self.tables[table_index].node]
        self.cache.warm(table_index, frozenset(self.usable[table_index]), names)

    def start(self) -> None:
        """Clear what a previous run left, then program everything. Raises L4Error (after
        undoing what it had set) when the kernel refuses a part, or when not run as root."""
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        if os.geteuid() != 0:
            raise L4Error("an [[l4]] node programs the kernel (nftables, routes, rules, tunnels): run balancer as root")
        clear_stale(self.nft)
        try:
            self._set_forwarding()
            with IPRoute() as ipr:
                devices: dict[tuple[str, int, str], int] = {}
                for t, table in enumerate(self.tables):
                    for n, node in enumerate(table.node):
                        self._program_node(ipr, t, n, table, node, devices)
                    ipr.route("replace", dst=f"{table.vip}/32", type="blackhole", proto=ROUTE_PROTOCOL)
            self.slots = [self.cache.get(t, frozenset(self.usable[t])) for t in range(len(self.tables))]
            run_nft(render_table(self.tables, self.slots), self.nft)
            for t in range(len(self.tables)):
                self._warm(t)
        except BaseException as exc:
            self.stop()  # leave nothing half set
            if isinstance(exc, (NetlinkError, OSError, NftError)):
                raise L4Error(str(exc)) from None
            raise

    def _program_node(
        self, ipr: IPRoute, t: int, n: int, table: L4, node: L4NodeConfig, devices: dict[tuple[str, int, str], int]
    ) -> None:
        """`devices`: the tunnel devices made so far, by (forward, VNI, address), to share."""
        mark = node_mark(t, n)
        vip = f"{table.vip}/32"
        if table.forward == "direct":
            ipr.route("replace", dst=vip, gateway=node.address, table=mark, proto=ROUTE_PROTOCOL)
        else:
            vni = node.tunnel_vni() if table.forward == "vxlan" else 0
            index = devices.get((table.forward, vni, node.address))
            if index is None:
                index = devices[(table.forward, vni, node.address)] = self._add_device(ipr, t, n, table, node)
            if table.forward == "vxlan":
                ipr.neigh("replace", dst=table.vip, lladdr=tunnel_mac(vni), ifindex=index, state=NUD_PERMANENT)
            ipr.route("replace", dst=vip, oif=index, table=mark, proto=ROUTE_PROTOCOL, scope=253)
        ipr.rule("add", fwmark=mark, table=mark, priority=RULE_PRIORITY)

    @staticmethod
    def _add_device(ipr: IPRoute, t: int, n: int, table: L4, node: L4NodeConfig) -> int:
        """Make the tunnel device `bl4-T-N` into `node`, up; its index."""
        from pyroute2.netlink.exceptions import NetlinkError

        name = device_name(t, n)
        try:
            if table.forward == "vxlan":
                ipr.link(
                    "add",
                    ifname=name,
                    kind="vxlan",
                    vxlan_id=node.tunnel_vni(),
                    vxlan_group=node.address,
                    vxlan_port=VXLAN_PORT,
                )
            else:
                ipr.link("add", ifname=name, kind="ipip", ipip_remote=node.address)
        except NetlinkError as exc:
            if table.forward == "ipip":
                raise L4Error(
                    f'[[l4]] {table.name!r}: forward "ipip": this kernel has no IPIP tunnels ({exc})'
                ) from None
            raise L4Error(f"[[l4]] {table.name!r}: cannot create {table.forward} device {name}: {exc}") from None
        index: int = ipr.link_lookup(ifname=name)[0]
        ipr.link("set", index=index, state="up")
        return index

    def _set_forwarding(self) -> None:
        self._forwarding_before = _FORWARDING.read_text().strip()
        _FORWARDING.write_text("1\n")

    def set_usable(self, table_index: int, usable: Iterable[str]) -> int:
        """Make the named nodes of table `table_index` the ones new flows go to; sends the
        kernel only the slots that change. Returns how many slots changed; the time the
        whole update took is in `last_update_seconds`, the kernel's part (the nft
        transaction) in `last_kernel_seconds`."""
        started = time.perf_counter()
        self.cache.quiet(table_index)
        table = self.tables[table_index]
        names = {node.name for node in table.node}
        wanted = set(usable) & names
        new = self.cache.get(table_index, frozenset(wanted))
        old = self.slots[table_index]
        changed = changed_slots(old, new) if old and new else None
        script = render_slot_delta_json(table_index, old, new, changed)
        sending = time.perf_counter()
        if script:
            run_nft(script, self.nft, json_input=True)
        self.last_kernel_seconds = time.perf_counter() - sending
        self.slots[table_index] = new
        self.usable[table_index] = wanted
        self.last_update_seconds = time.perf_counter() - started
        self._warm(table_index)
        if changed is None:
            return max(len(old), len(new))
        return len(changed)

    def stop(self) -> None:
        """Remove everything start() set, and restore IPv4 forwarding as it was."""
        self.cache.stop()
        clear_stale(self.nft)
        if self._forwarding_before is not None:
            with contextlib.suppress(OSError):
                _FORWARDING.write_text(self._forwarding_before + "\n")
            self._forwarding_before = None
