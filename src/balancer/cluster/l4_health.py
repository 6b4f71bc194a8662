"""Health of the L7 nodes of an L4 node: `[[l4]].check` probes each node's own address with
the existing checks (balancer.checks: the probes and the rise/fall state machine), and a
node is usable while its check says up and no operator took it out (`admin_down`).

Every change of the usable set of a table goes to the kernel as a slot delta
(L4Node.set_usable), one at a time (a lock: the slots a delta starts from must be the
current ones), in a thread so that the probes keep their rhythm while nft works.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from balancer.checks.health import HealthTracker
from balancer.checks.probes import http_check, tcp_check
from balancer.cluster.l4 import L4Node
from balancer.cluster.nft import NftError
from balancer.config.model import L4Check
from balancer.config.values import Address
from balancer.runtime.state import Health

log = logging.getLogger("balancer.l4")

# What an event handler receives: (table name, node name, "up" | "down", why).
EventSink = Callable[[str, str, str, str], None]


class L4Health:
    def __init__(self, node: L4Node, events: EventSink, rng: random.Random | None = None) -> None:
        self.node = node
        self.events = events
        self.rng = rng or random.Random()
        self.healthy: list[set[str]] = [{n.name for n in table.node} for table in node.tables]
        self.admin_down: list[set[str]] = [set() for _ in node.tables]
        # The last check result per node ("" before the first one), for `ctl show l4`.
        self.detail: list[dict[str, str]] = [{} for _ in node.tables]
        self.lock = asyncio.Lock()
        self.tasks: list[asyncio.Task[None]] = []
        # Set by stop(): a loop ends at its next turn even when it missed its cancellation
        # (Python 3.11's wait_for drops one that arrives as the awaited probe completes,
        # and stop() would wait for that loop for ever: a master that never exits).
        self.stopping = False

    def start(self) -> None:
        """One check loop per node of every table that has a `check`."""
        for t, table in enumerate(self.node.tables):
            if table.check is None:
                continue
            for member in table.node:
                address = Address(host=member.address, port=table.check_port())
                coroutine = self._check_loop(t, member.name, address, table.check)
                self.tasks.append(asyncio.get_running_loop().create_task(coroutine))

    async def stop(self) -> None:
        """End the check loops, after the kernel update under way, if any."""
        self.stopping = True
        for task in self.tasks:
            task.cancel()
        # A loop that ended on an error must not make the stop raise: the tables would stay.
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        async with self.lock:  # an operator's update (set_admin) under way
            pass

    async def set_admin(self, table_index: int, name: str, down: bool) -> int:
        """An operator takes a node out (`down`) or puts it back. Returns slots changed."""
        if down:
            self.admin_down[table_index].add(name)
        else:
            self.admin_down[table_index].discard(name)
        return await self._apply(table_index)

    async def _apply(self, table_index: int) -> int:
        async with self.lock:
            usable = self.healthy[table_index] - self.admin_down[table_index]
            update = asyncio.ensure_future(asyncio.to_thread(self.node.set_usable, table_index, usable))
            try:
                return await asyncio.shield(update)
            except asyncio.CancelledError:
                # stop(): a cancel does not stop the thread. The update ends before the
                # lock is released (stop waits for it), so the removal of the tables
                # never runs beside an nft transaction that targets them.
                with contextlib.suppress(Exception):
                    await update
                raise

    async def _check_loop(self, table_index: int, name: str, address: Address, check: L4Check) -> None:
        # A reload may carry the node's health over (L4Service): the tracker starts from it.
        initial: Health = "up" if name in self.healthy[table_index] else "down"
        tracker = HealthTracker(check.rise, check.fall, check.interval, check.fastinterval, check.downinterval, initial)
        table_name = self.node.tables[table_index].name
        first = True
        while not self.stopping:
            interval = tracker.next_interval()
            await asyncio.sleep(interval * (self.rng.random() if first else self.rng.uniform(0.9, 1.1)))
            first = False
            if check.type == "http":
                ok, detail = await http_check(address, check, check.timeout)
            else:
                ok, detail = await tcp_check(address, check.timeout)
            if self.stopping:
                return
            self.detail[table_index][name] = detail or ("ok" if ok else "failed")
            transition = tracker.record(ok, detail)
            if transition is not None:
                if transition.new == "up":
                    self.healthy[table_index].add(name)
                else:
                    self.healthy[table_index].discard(name)
            elif self.node.usable[table_index] == self.healthy[table_index] - self.admin_down[table_index]:
                continue  # nothing new, and the kernel has what health says
            try:
                await self._apply(table_index)
            except NftError as exc:
                # The loop must outlive a refused update (it would end silently, and the
                # node's health with it): the update is tried again after the next probe.
                log.error(
                    "l4 %s/%s: the kernel refused the table update: %s; retried after the next check",
                    table_name,
                    name,
                    exc,
                )
                continue
            if transition is not None:
                self.events(table_name, name, transition.new, transition.reason)
