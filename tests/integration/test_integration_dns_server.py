"""cluster.dns.DnsServer in-process on uvloop, over real sockets on 127.0.0.1: what a reload
keeps (sockets of unchanged addresses, the health of unchanged answers) and what a stop ends.

The answer's check target is a TCP server on the same loop; closing it makes the answer go
down. Every change is polled with a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import pytest
import uvloop
from tests.support import free_port
from tests.support.deaf_probe import DeafProbe

import balancer.cluster.dns as dns_mod
from balancer.cluster.dns import DnsServer
from balancer.config import parse_config


def config(binds: list[str], check_port: int, extra: str = "") -> str:
    check = f'{{ type = "tcp", port = {check_port}, interval = "100ms", rise = 1, fall = 1 }}'
    listed = ", ".join(f'"{bind}"' for bind in binds)
    return f"""\
[dns]
bind = [{listed}]
zone = "example.com"
  [[dns.record]]
  name = "www"
  answers = [ {{ address = "127.0.0.1", check = {check} }}, {{ address = "192.0.2.7" }} ]
{extra}"""


async def ask(port: int, name: str = "www.example.com", tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, "A")
    if tcp:
        return await dns.asyncquery.tcp(query, "127.0.0.1", port=port, timeout=2)
    return await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=2)


def addresses(response: dns.message.Message) -> set[str]:
    return {rdata.to_text() for rrset in response.answer for rdata in rrset}


async def until(predicate: Callable[[], Awaitable[bool]], what: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def run(scenario: Callable[[], Awaitable[None]], blocking_guard: Any) -> None:
    async def main() -> None:
        blocking_guard.watch(asyncio.get_running_loop())
        try:
            await asyncio.wait_for(scenario(), 30)
        finally:
            blocking_guard.unwatch()

    uvloop.run(main())


def test_reload_keeps_sockets_and_health_and_stop_closes(blocking_guard: Any) -> None:
    async def scenario() -> None:
        target = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        check_port = target.sockets[0].getsockname()[1]
        server = DnsServer()
        await server.start(parse_config(config(["127.0.0.1:0"], check_port)))
        (address,) = server.addresses()
        port = int(address.rsplit(":", 1)[1])
        assert port != 0
        assert addresses(await ask(port)) == {"127.0.0.1", "192.0.2.7"}
        assert addresses(await ask(port, tcp=True)) == {"127.0.0.1", "192.0.2.7"}

        target.close()
        await target.wait_closed()

        async def gone() -> bool:
            return addresses(await ask(port)) == {"192.0.2.7"}

        await until(gone, "the checked answer to go down")

        # Same bind, one more record: same sockets, the answer still down at once.
        endpoints = dict(server.endpoints)
        extra = '  [[dns.record]]\n  name = "new"\n  answers = [ { address = "192.0.2.8" } ]\n'
        await server.reload(parse_config(config(["127.0.0.1:0"], check_port, extra)))
        assert server.endpoints == endpoints and server.addresses() == [address]
        assert addresses(await ask(port)) == {"192.0.2.7"}
        assert addresses(await ask(port, "new.example.com")) == {"192.0.2.8"}

        # One more address: the first keeps its sockets, the second answers too.
        second = free_port()
        await server.reload(parse_config(config(["127.0.0.1:0", f"127.0.0.1:{second}"], check_port)))
        assert server.endpoints["127.0.0.1:0"] == endpoints["127.0.0.1:0"]
        assert addresses(await ask(second)) == {"192.0.2.7"}
        assert (await ask(second, "new.example.com")).rcode() == dns.rcode.NXDOMAIN

        # The first address dropped: it stops answering, the second goes on.
        await server.reload(parse_config(config([f"127.0.0.1:{second}"], check_port)))
        assert server.addresses() == [f"127.0.0.1:{second}"]
        try:
            await ask(port, tcp=True)
        except (ConnectionRefusedError, OSError):
            pass
        else:
            raise AssertionError("the dropped address still answers over TCP")

        await server.stop()
        try:
            await ask(second)
        except dns.exception.Timeout:
            pass
        else:
            raise AssertionError("a stopped server still answers over UDP")

    run(scenario, blocking_guard)


def test_a_check_loop_that_missed_its_cancellation_ends_at_reload(
    blocking_guard: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python 3.11's wait_for returns the probe's result when the cancellation arrives as the
    probe completes. A reload that keeps an answer must leave one loop checking it, not the
    old one going on beside the new (each probe twice, the old loop for ever)."""
    probe = DeafProbe()
    monkeypatch.setattr(dns_mod, "tcp_check", probe)

    async def scenario() -> None:
        server = DnsServer()
        text = config(["127.0.0.1:0"], free_port()).replace('"100ms"', '"10ms"')
        await server.start(parse_config(text))
        (old,) = server.tasks
        await asyncio.wait_for(probe.inside.wait(), 5)  # the reload's cancellation meets a probe
        await server.reload(parse_config(text))  # the same answer and check: its health is kept
        (new,) = server.tasks

        async def probed_by_the_new_loop() -> bool:
            return probe.by_task.get(id(new), 0) >= 3

        await until(probed_by_the_new_loop, "the new loop's probes")
        try:
            assert old.done(), "the first table's check loop goes on after the reload"
        finally:
            await server.stop()
            probe.swallowing = False
            old.cancel()
            await asyncio.wait([old, new], timeout=2)

    run(scenario, blocking_guard)
