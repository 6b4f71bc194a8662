"""An `[[l4]]` table's check loops end when the master stops, even the loop whose probe
missed its cancellation: Python 3.11's wait_for returns the probe's result when the
cancellation arrives as the probe completes. Before, `L4Health.stop` then waited for that
loop for ever, the tables stayed in the kernel and the stopped master never exited."""

from __future__ import annotations

import asyncio

import pytest
from tests.support.deaf_probe import DeafProbe

import balancer.cluster.l4_health as l4_health_mod
from balancer.cluster.l4 import L4Node
from balancer.cluster.l4_health import L4Health
from balancer.server import parse_runnable

L4_FILE = """\
[[l4]]
name = "www"
vip = "10.100.0.1"
ports = [80]
seed = 1
check = { type = "tcp", interval = "10ms", timeout = "500ms" }
[[l4.node]]
name = "l7a"
address = "10.0.3.21"
[[l4.node]]
name = "l7b"
address = "10.0.3.22"
"""


def test_a_check_loop_that_missed_its_cancellation_ends_at_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    probe = DeafProbe()
    monkeypatch.setattr(l4_health_mod, "tcp_check", probe)
    config = parse_runnable(L4_FILE, "l4.toml")
    # Not started: nothing here touches the kernel (every node is up and stays up).
    health = L4Health(L4Node(config.l4), lambda *event: None)

    async def main() -> None:
        health.start()
        tasks = list(health.tasks)
        await asyncio.wait_for(probe.inside.wait(), 5)  # stop's cancellation meets a probe
        stop = asyncio.ensure_future(health.stop())
        try:
            # wait(), not wait_for(): a timed-out wait_for would wait for stop's own cancellation.
            await asyncio.wait([stop], timeout=2)
            assert stop.done(), "stop() waits for a check loop that goes on"
        finally:  # a failure must not leave loops running
            probe.swallowing = False
            for task in tasks:
                task.cancel()
            await asyncio.wait([stop, *tasks], timeout=2)
        # Ended, not merely cancelled: no loop probes again (stop gathered them).
        assert all(task.done() for task in tasks), "a check loop went on probing after stop()"

    asyncio.run(main())
