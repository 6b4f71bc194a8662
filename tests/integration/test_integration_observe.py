"""Passive observation: consecutive failures eject a server from a worker for a cooldown."""

from __future__ import annotations

import asyncio

from tests.integration.aclient import get
from tests.integration.configs import frontend_port, make_config
from tests.support.ports import closed_port


def test_failing_server_is_ejected_then_readmitted_after_cooldown(run_balancer, backends):
    (s2,) = backends("s2")
    dead = ("s1", f"127.0.0.1:{closed_port()}")
    config = make_config(
        [dead, s2],
        backend={"observe": {"errors": 2, "cooldown": "600ms", "max_ejected": "50%"}, "retries": 2},
    )

    async def scenario(balancer):
        port = frontend_port(balancer)
        s1 = balancer.backends["web"].by_name["s1"]
        statuses = [(await get(port, "/")).status for _ in range(10)]
        failures_after_ejection = s1.connect_failures
        ejected = s1.ejected
        more = [(await get(port, "/")).status for _ in range(10)]
        untouched = s1.connect_failures == failures_after_ejection
        await asyncio.sleep(0.8)  # the cooldown passes
        readmitted = not s1.ejected
        return statuses + more, ejected, untouched, readmitted, s1.connect_failures

    statuses, ejected, untouched, readmitted, failures = run_balancer(config, scenario)
    assert statuses == [200] * 20  # redispatch hid every failure from clients
    assert ejected, "two consecutive failures eject the server"
    assert untouched, "an ejected server gets no connection attempts"
    assert failures == 2
    assert readmitted, "the server comes back after its cooldown"


def test_max_ejected_keeps_a_share_of_the_backend(run_balancer):
    dead = [(f"s{i}", f"127.0.0.1:{closed_port()}") for i in range(1, 3)]
    config = make_config(
        dead, backend={"observe": {"errors": 1, "cooldown": "30s", "max_ejected": "50%"}, "retries": 0}
    )

    async def scenario(balancer):
        port = frontend_port(balancer)
        statuses = [(await get(port, "/")).status for _ in range(6)]
        return statuses, sorted(s.ejected for s in balancer.backends["web"].servers)

    statuses, ejected = run_balancer(config, scenario)
    assert statuses == [503] * 6
    assert ejected == [False, True], "at most half of the backend is ejected"
