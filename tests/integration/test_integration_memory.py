"""A closed connection is freed as it closes, not left to the cyclic garbage collector.

With a new connection per request a worker closes thousands a second; each one left in a
reference cycle waits for a collection that walks every young object. Breaking the cycles
(session and parser, session and its deadline's callback, session and the request it
parses) took balancer/HAProxy per core with `Connection: close` from 0.46x to 0.53x.
"""

from __future__ import annotations

import asyncio
import gc

from tests.integration.aclient import Client, open_with_buffers, wait_until
from tests.integration.configs import frontend_port, make_config

from balancer.net.http_session import HttpSession
from balancer.net.tcp_session import TcpSession
from balancer.net.upstream import UpstreamConnection

CONNECTIONS = 40


def _young(kind: type) -> int:
    """Instances of `kind` among the objects made since the last collection. With the
    collector off they all stay in the youngest generation, so this walks only what the
    scenario made: a walk of the whole test process, late in a run, takes ~0.1 s in the
    loop and trips the blocking-loop guard."""
    return sum(1 for obj in gc.get_objects(generation=0) if isinstance(obj, kind))


def test_closed_connections_are_freed_without_the_cyclic_collector(run_balancer, backends):
    """Client and server connections alike: no pooling, so every server connection closes too."""
    (s1,) = backends("s1")

    async def scenario(balancer):
        port = frontend_port(balancer)
        for i in range(3):  # warm: the first connections build the pools
            async with await Client.connect(port) as client:
                assert (await client.get(f"/warm/{i}")).status == 200
        gc.collect()  # what is alive now leaves generation 0: _young() counts only new objects
        gc.disable()
        try:
            for i in range(CONNECTIONS):
                async with await Client.connect(port) as client:
                    response = await client.get(f"/n/{i}", headers=[("Connection", "close")])
                    assert response.status == 200, response
            frontend = balancer.frontends["www"]
            await wait_until(lambda: not frontend.sessions, message="client connections still open")
            # Freed by reference counting as each closes, or never while the collector is off.
            await wait_until(
                lambda: _young(HttpSession) <= 1,
                timeout=2,
                interval=0.05,
                message="closed client connections were left to the cyclic collector",
            )
            await wait_until(
                lambda: _young(UpstreamConnection) <= 1,
                timeout=2,
                interval=0.05,
                message="closed server connections were left to the cyclic collector",
            )
        finally:
            gc.enable()

    run_balancer(make_config([s1], backend={"pool": {"max_idle_per_server": 0}}), scenario)


def test_closed_tcp_connections_are_freed_without_the_cyclic_collector(run_balancer, echo_server):
    async def scenario(balancer):
        port = frontend_port(balancer)
        gc.collect()
        gc.disable()
        try:
            for i in range(CONNECTIONS):
                reader, writer = await open_with_buffers(port)
                message = f"message {i}\n".encode()
                writer.write(message)
                assert await asyncio.wait_for(reader.readexactly(len(message)), 5) == message
                writer.close()
                await writer.wait_closed()
            frontend = balancer.frontends["www"]
            await wait_until(lambda: not frontend.sessions, message="client connections still open")
            await wait_until(
                lambda: _young(TcpSession) <= 1,
                timeout=2,
                interval=0.05,
                message="closed TCP connections were left to the cyclic collector",
            )
        finally:
            gc.enable()

    run_balancer(make_config([echo_server], mode="tcp", frontend={"forwardfor": False}), scenario)
