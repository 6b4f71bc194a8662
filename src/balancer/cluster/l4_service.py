"""The `[[l4]]` tables of the running file, as the master runs them: the kernel programming
(balancer.cluster.l4) and the health checks of the L7 nodes (balancer.cluster.l4_health),
behind the few calls the master makes: start, reload, stop, rows, set_state.

Theory of operation. `start()` runs before the master reports ready; it refuses (L4Error,
nothing left set) when the kernel or the user's rights refuse. A reload whose `[[l4]]`
tables are equal to the running ones (config models compare by value) touches nothing: no
flow is lost. Any other change reprograms the tables from the new file (removed tables,
nodes, routes and devices go); a table equal to the one at the same place before keeps its
nodes' health, operator states and established flows (read from its flow sets with
`nft -j`, added back with their idle time left). When the new tables are refused, the
running ones are programmed again the same way and the reload is refused. `stop()` is
safe to call on every exit path, any number of times; it is final: a start or reload
after it programs nothing.

start, reload, stop and set_state run one at a time (a lock): a stop signalled while a reload
reprograms the kernel waits for the reprogramming, then removes it. Without the lock the
stop found nothing programmed (the reload had removed the old tables) and the tables the
reload then set stayed in the kernel after balancer exited; and an operator's state set
during a reload was refused ("no table") or applied to the table being removed.

Events (node up/down, table updates) go to the event log under "balancer.l4".
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from balancer.cluster.l4 import L4Error, L4Node
from balancer.cluster.l4_health import L4Health
from balancer.cluster.nft import TABLE, NftError, node_mark, run_nft
from balancer.config.model import L4

log = logging.getLogger("balancer.l4")


@dataclass
class Carried:
    """What a reload keeps of a table it programs again unchanged."""

    healthy: set[str]
    admin_down: set[str]
    detail: dict[str, str]
    flows: str  # an nft script adding the established flows back ("" when none)


def saved_flows(table_index: int, nodes: int, nft: str = "nft") -> str:
    """An nft script that adds back the established flows of table `table_index` (its
    per-node flow sets), each with the idle time it had left. `nft -j` (JSON): the text
    listing of big sets is what crashes here (LAB)."""
    script = []
    for n in range(nodes):
        name = f"flows_{table_index}_{n}"
        try:
            result = subprocess.run(
                [nft, "-j", "list", "set", "ip", TABLE, name], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if result.returncode != 0:
            continue
        elements = []
        for item in json.loads(result.stdout).get("nftables", []):
            for element in item.get("set", {}).get("elem", []):
                entry = element.get("elem", {})
                key = entry.get("val", {}).get("concat")
                if not isinstance(key, list):
                    continue
                left = max(1, int(entry.get("expires", entry.get("timeout", 1))))
                elements.append(" . ".join(str(part) for part in key) + f" timeout {left}s")
        if elements:
            script.append(f"add element ip {TABLE} {name} {{ {', '.join(elements)} }}\n")
    return "".join(script)


# The states an operator may set on an L7 node of an [[l4]] table.
OPERATOR_STATES = ("ready", "maint")


class L4Service:
    def __init__(self) -> None:
        self.tables: tuple[L4, ...] = ()
        self.node: L4Node | None = None
        self.health: L4Health | None = None
        self.changing = asyncio.Lock()  # held by start, reload, stop and set_state
        self.stopped = False
        # While a reload reprograms the kernel: the rows from before it, which `rows()`
        # shows meanwhile (rather than none: a metrics scrape then would see no table).
        self.rows_before_reload: list[dict[str, Any]] | None = None

    async def start(self, tables: Sequence[L4]) -> None:
        """Program `tables` and start their checks. Nothing when there is none, or after
        stop(). Raises L4Error, having undone what it set."""
        async with self.changing:
            if not self.stopped:
                await self._start(tables)

    async def _start(self, tables: Sequence[L4], carried: dict[int, Carried] | None = None) -> None:
        """Program `tables` and start their checks. Nothing when there is none. Raises
        L4Error, having undone what it set. The kernel is programmed in a thread: pyroute2's
        synchronous API runs an event loop of its own, and nft takes a while on big maps.
        `carried`: per table index, the state a reload keeps (see `reload`)."""
        if not tables:
            return
        carried = carried or {}
        node = L4Node(tables)
        for t, kept in carried.items():
            node.usable[t] = kept.healthy - kept.admin_down
        started = time.perf_counter()
        await asyncio.to_thread(node.start)
        self.node = node
        self.tables = tuple(tables)
        self.health = L4Health(node, self._on_health)
        for t, kept in carried.items():
            self.health.healthy[t], self.health.admin_down[t] = set(kept.healthy), set(kept.admin_down)
            self.health.detail[t] = dict(kept.detail)
        flows = "".join(kept.flows for kept in carried.values())
        if flows:
            try:
                await asyncio.to_thread(run_nft, flows, node.nft)
            except NftError as exc:  # the flows then follow the (same) slots: most keep their node
                log.warning("l4: the established flows could not be carried over: %s", exc)
        self.health.start()
        log.info(
            "l4: %d table(s) programmed in %.3fs: %s",
            len(tables),
            time.perf_counter() - started,
            ", ".join(f"{t.name} ({t.vip}, {t.method}, {t.forward}, {len(t.node)} nodes)" for t in tables),
        )

    async def stop(self) -> None:
        """Stop the checks and remove everything the tables set in the kernel, for good
        (after a start or reload under way)."""
        async with self.changing:
            self.stopped = True
            await self._stop()

    async def _stop(self) -> None:
        if self.health is not None:
            await self.health.stop()
            self.health = None
        if self.node is not None:
            node, self.node = self.node, None
            await asyncio.to_thread(node.stop)
            log.info("l4: tables removed from the kernel")
        self.tables = ()

    async def reload(self, tables: Sequence[L4]) -> list[str]:
        """Run `tables` from now on. Problems that refused it ([] when it took); the
        running tables then keep running (programmed again if they had to be removed).
        A table equal to the one running at the same place in the file keeps its nodes'
        health, operator states and established flows (copied from the old flow sets),
        so its flows keep their L7 nodes across the reprogramming."""
        async with self.changing:
            if self.stopped:
                return ["[[l4]]: balancer is stopping"]
            return await self._reload(tables)

    async def _reload(self, tables: Sequence[L4]) -> list[str]:
        if tuple(tables) == self.tables:
            return []
        old = self.tables
        kept: dict[int, Carried] = {}  # every running table's state, by its index
        if self.health is not None and self.node is not None:
            health, nft = self.health, self.node.nft
            for t, table in enumerate(old):
                flows = await asyncio.to_thread(saved_flows, t, len(table.node), nft)
                kept[t] = Carried(set(health.healthy[t]), set(health.admin_down[t]), dict(health.detail[t]), flows)
        carried = {t: kept[t] for t, table in enumerate(tables) if t < len(old) and old[t] == table}
        self.rows_before_reload = self.rows()
        try:
            await self._stop()  # the tables go first: the new ones may reuse their marks and devices
            try:
                await self._start(tables, carried)
            except L4Error as exc:
                log.error("l4: reload refused: %s", exc)
                try:
                    await self._start(old, kept)
                except L4Error as again:
                    log.error("l4: the running tables could not be programmed again: %s", again)
                return [f"[[l4]]: {exc}"]
        finally:
            self.rows_before_reload = None
        log.info("l4: reloaded")
        return []

    def _on_health(self, table: str, node: str, state: str, reason: str) -> None:
        seconds = self.node.last_update_seconds if self.node is not None else 0.0
        log.info("l4 %s/%s is %s (%s); table updated in %.4fs", table, node, state.upper(), reason, seconds)

    def rows(self) -> list[dict[str, Any]]:
        """One row per L7 node of every table: what `ctl show l4` and GET /api/l4 show."""
        if self.rows_before_reload is not None:
            return self.rows_before_reload
        if self.node is None or self.health is None:
            return []
        rows = []
        for t, table in enumerate(self.tables):
            held = Counter(self.node.slots[t])
            for n, member in enumerate(table.node):
                mark = node_mark(t, n)
                if member.name in self.health.admin_down[t]:
                    state = "maint"
                elif member.name in self.health.healthy[t]:
                    state = "up"
                else:
                    state = "down"
                rows.append(
                    {
                        "l4": table.name,
                        "vip": table.vip,
                        "method": table.method,
                        "forward": table.forward,
                        "node": member.name,
                        "address": member.address,
                        "state": state,
                        "check": self.health.detail[t].get(member.name, "no check" if table.check is None else ""),
                        "slots": held[mark],
                        "table_size": table.table_size,
                    }
                )
        return rows

    def can_serve(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[bool, str]:
        """The [[l4]] side of BGP's announce rule: (whether a table whose VIP is in `network`
        has a usable L7 node in the kernel now, why)."""
        if self.node is None:
            return (False, "the [[l4]] tables are not programmed")
        names = []
        for t, table in enumerate(self.tables):
            if ipaddress.ip_address(table.vip) in network:
                usable = self.node.usable[t]
                if usable:
                    return (True, f"{len(usable)}/{len(table.node)} L7 nodes usable in [[l4]] {table.name}")
                names.append(table.name)
        return (False, "no usable L7 node in [[l4]] " + ", ".join(names))

    @property
    def last_update_seconds(self) -> float:
        return self.node.last_update_seconds if self.node is not None else 0.0

    async def set_state(self, table: str, node: str, state: str) -> dict[str, Any]:
        """An operator takes node `node` of table `table` out (`maint`) or puts it back
        (`ready`). Raises KeyError for an unknown table or node, ValueError for another
        state, L4Error when the kernel refuses the update. Returns the node's row, with the
        slots that moved and the time the update took (whole, and the nft transaction).
        Waits for a reload under way, then applies to the tables it left running."""
        if state not in OPERATOR_STATES:
            raise ValueError(f"state must be one of {', '.join(OPERATOR_STATES)}")
        async with self.changing:
            return await self._set_state(table, node, state)

    async def _set_state(self, table: str, node: str, state: str) -> dict[str, Any]:
        names = [t.name for t in self.tables]
        if table not in names or self.health is None:
            raise KeyError(f"no [[l4]] table {table!r}")
        t = names.index(table)
        if node not in {n.name for n in self.tables[t].node}:
            raise KeyError(f"[[l4]] {table!r} has no node {node!r}")
        try:
            changed = await self.health.set_admin(t, node, state == "maint")
        except NftError as exc:
            raise L4Error(str(exc)) from None
        seconds = self.last_update_seconds
        log.info(
            "l4 %s/%s: state %s (set by the operator); %d slots moved in %.4fs", table, node, state, changed, seconds
        )
        row = next(row for row in self.rows() if row["l4"] == table and row["node"] == node)
        assert self.node is not None
        return {
            **row,
            "moved_slots": changed,
            "update_seconds": round(self.node.last_update_seconds, 6),
            "kernel_seconds": round(self.node.last_kernel_seconds, 6),
        }
