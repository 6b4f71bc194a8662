"""Fixtures of the integration tier: the balancer in-process, tagged backends in threads.

A scenario is a coroutine that receives the started `Balancer` and talks to it over real
sockets on 127.0.0.1. It runs on the balancer's own event loop (uvloop, as in production;
set BALANCER_TEST_LOOP=asyncio for the stock loop, whose debug mode also names the
culprit of a blocking protocol callback), so scenarios use asyncio streams or
`loop.run_in_executor` for anything blocking. TaggedBackend servers run in their own threads;
start them before the loop (their start() blocks) and read their counters from the loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from tests.support.backends import TaggedBackend, TcpEchoServer

T = TypeVar("T")
Scenario = Callable[[Any], Awaitable[T]]

SCENARIO_TIMEOUT = 30.0


def _run(main: Coroutine[Any, Any, T]) -> T:
    if os.environ.get("BALANCER_TEST_LOOP", "uvloop") == "asyncio":
        return asyncio.run(main, debug=True)
    import uvloop

    return uvloop.run(main, debug=True)


def frontend_port(balancer: Any, frontend: str = "www") -> int:
    """The port the frontend bound (configs bind 127.0.0.1:0)."""
    return int(balancer.addresses(frontend)[0][1])


@pytest.fixture
def run_balancer(blocking_guard: Any) -> Callable[..., Any]:
    """`run_balancer(config_text, scenario, timeout=30)`: start a Balancer on a fresh loop,
    run `await scenario(balancer)`, stop the balancer, and fail the test if the loop was
    blocked meanwhile. Returns what the scenario returned."""

    def run(config_text: str, scenario: Scenario[T], *, timeout: float = SCENARIO_TIMEOUT) -> T:
        from balancer.config import parse_config
        from balancer.server import Balancer

        config = parse_config(config_text)

        async def main() -> T:
            blocking_guard.watch(asyncio.get_running_loop())
            balancer = Balancer(config)
            await balancer.start()
            try:
                return await asyncio.wait_for(scenario(balancer), timeout)
            finally:
                try:
                    await asyncio.wait_for(balancer.stop(grace=0), 10)
                finally:
                    blocking_guard.unwatch()

        result = _run(main())
        blocking_guard.check()
        return result

    return run


@pytest.fixture
def backends() -> Iterator[Callable[..., list[TaggedBackend]]]:
    """`backends("s1", "s2")` starts TaggedBackends (stopped at teardown) and returns them."""
    started: list[TaggedBackend] = []

    def start(*names: str) -> list[TaggedBackend]:
        servers = [TaggedBackend(name).start() for name in names]
        started.extend(servers)
        return servers

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def echo_server() -> Iterator[TcpEchoServer]:
    with TcpEchoServer("echo", farewell=b"bye\n") as server:
        yield server
