"""The blocking-call guard itself: it must catch what it exists to catch."""

from __future__ import annotations

import asyncio
import time

import pytest
from tests.conftest import HEARTBEAT_LAG
from tests.integration.configs import make_config

# Comfortably past both limits, whatever BALANCER_TEST_SLOW_CALLBACK says.
BLOCK = HEARTBEAT_LAG * 2 + 0.05


def test_guard_fails_a_scenario_that_blocks_the_loop(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        time.sleep(BLOCK)  # a blocking call on the event loop, the mistake the guard exists for

    with pytest.raises(pytest.fail.Exception, match="blocking call in the event loop"):
        run_balancer(make_config([s1]), scenario)


def test_guard_sees_a_blocking_protocol_callback(run_balancer, backends):
    """uvloop runs protocol callbacks straight from libuv, outside asyncio's slow-callback
    timing; the heartbeat must still notice (this is where the proxy's hot path lives)."""
    (s1,) = backends("s1")

    class Blocking(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            time.sleep(BLOCK)

    async def scenario(balancer):
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Blocking, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(BLOCK + 0.2)
        writer.close()
        server.close()

    with pytest.raises(pytest.fail.Exception, match="blocking call in the event loop"):
        run_balancer(make_config([s1]), scenario)
