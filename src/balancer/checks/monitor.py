"""Active health and agent checks, run once per balancer (in the master).

One task per server and kind of check. Each waits its interval with ±10% jitter (the
first wait is a random share of the interval, so a backend's checks never line up), runs
its probe, feeds the rise/fall tracker and, on a flip, publishes the new health through
the master's state, which every worker applies within a tenth of a second. Every change
is logged in one line that says what changed, why, and what is left usable.

A server that comes back up with `slowstart` set re-enters at a small share of its weight,
ramping to the full weight over the slowstart duration in ten steps.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Coroutine
from typing import Any

from balancer.checks.health import HealthTracker, Transition
from balancer.checks.probes import agent_check, http_check, tcp_check
from balancer.config.model import Backend, Config, Server
from balancer.config.values import Address
from balancer.runtime.master_state import MasterState

log = logging.getLogger("balancer.health")

SLOWSTART_STEPS = 10


class HealthMonitor:
    def __init__(self, state: MasterState, rng: random.Random | None = None) -> None:
        self.state = state
        self.rng = rng or random.Random()
        self.tasks: list[asyncio.Task[None]] = []
        self.trackers: dict[tuple[str, str], HealthTracker] = {}
        self.ramps: dict[tuple[str, str], asyncio.Task[None]] = {}
        # Bumped by stop(): a loop of an earlier start ends at its next turn even when it
        # missed its cancellation (Python 3.11's wait_for drops one that arrives as the
        # awaited probe completes, and the loop would go on checking an old config).
        self.epoch = 0

    def start(self, config: Config) -> None:
        """Check every server of `config` that has a check or an agent. Call stop() first
        when the config changes."""
        loop = asyncio.get_running_loop()
        for backend in config.backend:
            for server in backend.server:
                key = (backend.name, server.name)
                ramp = self.state.records[key].ramp
                if ramp < 1.0:
                    # A ramp cut short by a reload goes on from where it was.
                    if server.slowstart > 0:
                        self._ramp(key, server.slowstart, ramp)
                    else:
                        self.state.update(key, ramp=1.0)
                if backend.check is not None:
                    tracker = HealthTracker(
                        backend.check.rise,
                        backend.check.fall,
                        backend.check.interval,
                        backend.check.fastinterval,
                        backend.check.downinterval,
                        initial=self.state.records[key].health,
                    )
                    self.trackers[key] = tracker
                    self._spawn(loop, self._check_loop(backend, server, tracker))
                if backend.agent is not None:
                    self._spawn(loop, self._agent_loop(backend, server))

    def _spawn(self, loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(loop.create_task(coroutine))

    def _ramp(self, key: tuple[str, str], duration: float, ramp: float) -> None:
        task = asyncio.get_running_loop().create_task(self._slowstart(key, duration, ramp))
        self.tasks.append(task)
        self.ramps[key] = task

    def stop(self) -> None:
        self.epoch += 1
        for task in self.tasks:
            task.cancel()
        self.tasks.clear()
        self.trackers.clear()
        self.ramps.clear()

    async def _sleep(self, interval: float, first: bool) -> None:
        await asyncio.sleep(interval * (self.rng.random() if first else self.rng.uniform(0.9, 1.1)))

    async def _check_loop(self, backend: Backend, server: Server, tracker: HealthTracker) -> None:
        check = backend.check
        assert check is not None
        key = (backend.name, server.name)
        first = True
        epoch = self.epoch
        while epoch == self.epoch:
            await self._sleep(tracker.next_interval(), first)
            first = False
            if check.type == "http":
                ok, detail = await http_check(server.address, check, check.timeout)
            else:
                ok, detail = await tcp_check(server.address, check.timeout)
            if epoch != self.epoch:
                return
            transition = tracker.record(ok, detail)
            self.state.update(key, last_check=detail)
            if transition is not None:
                self._apply(backend, server, transition, f"{check.type} check every {check.interval:g}s")

    def _apply(self, backend: Backend, server: Server, transition: Transition, how: str) -> None:
        key = (backend.name, server.name)
        ramp = 1.0
        previous = self.ramps.pop(key, None)
        if previous is not None:
            previous.cancel()  # a flip in the middle of a ramp starts it over
        if transition.new == "up" and server.slowstart > 0:
            ramp = 1.0 / SLOWSTART_STEPS
            self._ramp(key, server.slowstart, ramp)
        self.state.update(key, health=transition.new, ramp=ramp)
        usable, total = self.state.usable_in(backend.name)
        verb = "failed" if transition.new == "down" else "succeeded"
        log.warning(
            "server %s/%s is %s (was %s): %s; %d consecutive checks %s (%s); %d of %d servers usable in %s",
            backend.name,
            server.name,
            transition.new.upper(),
            transition.old,
            transition.reason,
            transition.checks,
            verb,
            how,
            usable,
            total,
            backend.name,
        )

    async def _slowstart(self, key: tuple[str, str], duration: float, ramp: float = 1.0 / SLOWSTART_STEPS) -> None:
        for step in range(round(ramp * SLOWSTART_STEPS) + 1, SLOWSTART_STEPS + 1):
            await asyncio.sleep(duration / SLOWSTART_STEPS)
            status = self.state.records.get(key)
            if status is None or status.health != "up":
                return
            self.state.update(key, ramp=step / SLOWSTART_STEPS)

    async def _agent_loop(self, backend: Backend, server: Server) -> None:
        agent = backend.agent
        assert agent is not None
        key = (backend.name, server.name)
        host = agent.address or server.address.host
        address = Address(host=host, port=agent.port)
        timeout = min(agent.interval, 2.0)
        first = True
        epoch = self.epoch
        while epoch == self.epoch:
            await self._sleep(agent.interval, first)
            first = False
            reply, detail = await agent_check(address, timeout)
            if epoch != self.epoch:
                return
            if reply is None:
                log.debug("agent of %s/%s: %s", *key, detail)
                continue  # an unreachable agent changes nothing (HAProxy does the same)
            old = self.state.records[key]
            agent_state = "down" if reply.health == "down" else (reply.admin_state or "ready")
            weight = reply.weight_percent if reply.weight_percent is not None else old.agent_weight
            new = self.state.update(key, agent_state=agent_state, agent_weight=weight)
            if (new.agent_state, new.agent_weight) != (old.agent_state, old.agent_weight):
                usable, total = self.state.usable_in(backend.name)
                log.warning(
                    "server %s/%s agent: %s -> %s%s (%s); %d of %d servers usable in %s",
                    backend.name,
                    server.name,
                    old.agent_state,
                    new.agent_state,
                    f" {new.agent_weight}%" if new.agent_weight >= 0 else "",
                    detail,
                    usable,
                    total,
                    backend.name,
                )
