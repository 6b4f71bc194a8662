"""TCP mode: server maxconn holds excess connections in the backend queue, timeouts.queue ends the wait."""

from __future__ import annotations

import asyncio
import time

from tests.integration.aclient import wait_until
from tests.integration.configs import frontend_port, make_config


async def _exchange(port: int, payload: bytes, hold: float) -> tuple[bytes, float]:
    """Connect, send, read the echo, keep the connection `hold` seconds, close."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        data = await asyncio.wait_for(reader.read(len(payload)), 5)
        elapsed = time.monotonic() - started
        await asyncio.sleep(hold)
        return data, elapsed
    except (ConnectionError, TimeoutError):
        return b"", time.monotonic() - started
    finally:
        writer.close()


def test_excess_tcp_connections_wait_for_a_slot(run_balancer, echo_server):
    server = {"name": "echo", "address": echo_server.address, "maxconn": 1}
    config = make_config([server], mode="tcp", backend={"timeouts": {"queue": "5s"}})

    async def scenario(balancer):
        port = frontend_port(balancer)
        results = await asyncio.gather(*(_exchange(port, b"hello %d" % i, 0.4) for i in range(3)))
        server = balancer.backends["web"].servers[0]
        await wait_until(lambda: server.active == 0, timeout=5)  # the proxy sees the last close
        return results, server.active

    results, active_after = run_balancer(config, scenario)
    assert [data for data, _ in results] == [b"hello %d" % i for i in range(3)]
    waits = sorted(elapsed for _, elapsed in results)
    assert waits[0] < 0.3 and waits[1] >= 0.35 and waits[2] >= 0.75, f"one at a time: {waits}"
    assert active_after == 0


def test_tcp_queue_timeout_closes_the_waiting_connection(run_balancer, echo_server):
    server = {"name": "echo", "address": echo_server.address, "maxconn": 1}
    config = make_config([server], mode="tcp", backend={"timeouts": {"queue": "200ms"}})

    async def scenario(balancer):
        port = frontend_port(balancer)
        first = asyncio.ensure_future(_exchange(port, b"first", 1.0))
        server = balancer.backends["web"].servers[0]
        await wait_until(lambda: server.active == 1, timeout=5)  # the first connection holds the only slot
        second = await _exchange(port, b"second", 0)
        return await first, second

    first, second = run_balancer(config, scenario)
    assert first[0] == b"first"
    assert second[0] == b"", "the queued connection is closed when timeouts.queue passes"
    assert 0.15 <= second[1] < 1.0
