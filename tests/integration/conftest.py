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
import logging
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


@pytest.fixture
def run_balancer(blocking_guard: Any) -> Callable[..., Any]:
    """`run_balancer(config_text, scenario, timeout=30)`: start a Balancer on a fresh loop,
    run `await scenario(balancer)`, stop the balancer, and fail the test if the loop was
    blocked meanwhile, an exception escaped to the loop's exception handler (an error no
    connection handled: in production, a worker's loop logging it and carrying on in an
    unknown state), or the balancer logged an error of its own (such as the "internal
    error" it answers with a 500). Returns what the scenario returned."""

    def run(config_text: str, scenario: Scenario[T], *, timeout: float = SCENARIO_TIMEOUT) -> T:
        from balancer.config import parse_config
        from balancer.server import Balancer

        config = parse_config(config_text)

        unhandled: list[str] = []

        class _Errors(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                unhandled.append(f"{record.name}: {record.getMessage()}")

        def on_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            exc = context.get("exception")
            unhandled.append(f"{context.get('message')}: {exc!r}" if exc else str(context.get("message")))
            loop.default_exception_handler(context)

        async def main() -> T:
            loop = asyncio.get_running_loop()
            blocking_guard.watch(loop)
            loop.set_exception_handler(on_exception)
            balancer = Balancer(config)
            await balancer.start()
            try:
                return await asyncio.wait_for(scenario(balancer), timeout)
            finally:
                try:
                    await asyncio.wait_for(balancer.stop(grace=0), 10)
                finally:
                    blocking_guard.unwatch()

        errors = _Errors(logging.ERROR)
        logging.getLogger("balancer").addHandler(errors)
        try:
            result = _run(main())
        except BaseException as exc:
            if unhandled:  # often the cause of what the scenario saw
                exc.add_note("errors nobody handled in the balancer:\n  " + "\n  ".join(unhandled[:10]))
            raise
        finally:
            logging.getLogger("balancer").removeHandler(errors)
        blocking_guard.check()
        if unhandled:
            pytest.fail("errors nobody handled in the balancer:\n  " + "\n  ".join(unhandled[:10]), pytrace=False)
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
