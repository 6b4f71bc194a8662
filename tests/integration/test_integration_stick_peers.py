"""cluster.peers.PeersService in-process on uvloop, two or three nodes over real sockets on
127.0.0.1: a full copy when a link comes up, changes pushed as they happen, a node that
restarts gets everything again, a wrong key or an unknown node is refused, garbage ends a
link without harming the service.

The stick store here is a dictionary (the store interface is three methods); the
replication between two whole `balancer run` nodes is in tests/e2e.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import uvloop
from tests.support import free_port

from balancer.cluster import peers
from balancer.config.model import Peers
from balancer.proto import peers as wire


class DictStore:
    """(table, key) -> (server, expiry on the monotonic clock); `put` is a worker's write."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, bytes], tuple[str, float]] = {}
        self.changes: list[wire.StickUpdate] = []

    def put(self, table: str, key: bytes, server: str, lifetime: float = 60.0) -> None:
        self.entries[(table, key)] = (server, time.monotonic() + lifetime)
        self.changes.append(wire.StickUpdate(table, key, server, int(lifetime * 1000)))

    def server(self, table: str, key: bytes) -> str:
        found = self.entries.get((table, key))
        return found[0] if found is not None and found[1] > time.monotonic() else ""

    def snapshot(self) -> Iterable[wire.StickUpdate]:
        now = time.monotonic()
        for (table, key), (server, expiry) in self.entries.items():
            if expiry > now:
                yield wire.StickUpdate(table, key, server, int((expiry - now) * 1000))

    def apply(self, update: wire.StickUpdate) -> None:
        self.entries[(update.table, update.key)] = (update.server, time.monotonic() + update.remaining_ms / 1000)

    def take_changes(self) -> tuple[list[wire.StickUpdate], bool]:
        changes, self.changes = self.changes, []
        return changes, False


def node(me: int, others: list[int], key: str = "k3y", heartbeat: float = 0.2) -> Peers:
    return Peers.model_validate(
        {
            "bind": f"127.0.0.1:{me}",
            "nodes": [f"127.0.0.1:{port}" for port in others],
            "key": key,
            "heartbeat": f"{heartbeat}s",
        }
    )


async def until(predicate: Callable[[], bool], what: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def run(scenario: Callable[[], Awaitable[None]], blocking_guard: Any) -> None:
    async def main() -> None:
        blocking_guard.watch(asyncio.get_running_loop())
        try:
            await asyncio.wait_for(scenario(), 30)
        finally:
            blocking_guard.unwatch()

    uvloop.run(main())


def _up(service: peers.PeersService) -> bool:
    return all(link["state"] == "up" for link in service.status()["nodes"])


def test_full_copy_then_changes_then_a_restarted_node_gets_everything(blocking_guard: Any) -> None:
    async def scenario() -> None:
        a_port, b_port = free_port(), free_port()
        a_store, b_store = DictStore(), DictStore()
        for n in range(500):  # learned before the pair ever met
            a_store.put("web", bytes([10, 0, n // 256, n % 256]), f"s{n % 3}")
        a = peers.PeersService(node(a_port, [b_port]), a_store)
        b = peers.PeersService(node(b_port, [a_port]), b_store)
        await a.start()
        await b.start()
        try:
            await until(lambda: _up(a) and _up(b), "both links up")
            await until(lambda: len(b_store.entries) == 500, "B to hold A's 500 entries")
            assert b_store.server("web", bytes([10, 0, 1, 44])) == "s0"  # n = 300

            # A change on either side reaches the other within a few push intervals.
            started = time.monotonic()
            a_store.put("web", b"\x0a\x09\x09\x09", "s2")
            b_store.put("blog", b"\x0a\x08\x08\x08", "b1")
            await until(lambda: b_store.server("web", b"\x0a\x09\x09\x09") == "s2", "A's change at B")
            await until(lambda: a_store.server("blog", b"\x0a\x08\x08\x08") == "b1", "B's change at A")
            assert time.monotonic() - started < 1.0
            # Applied entries are not sent back: A's store saw no echo of its own change.
            assert a_store.take_changes() == ([], False) and b_store.take_changes() == ([], False)

            # B restarts empty: it gets A's whole table again when the link comes back.
            await b.stop()
            b_store = DictStore()
            b = peers.PeersService(node(b_port, [a_port]), b_store)
            await b.start()
            # A's own 501 and the one it learned from B: B gets its own entry back too.
            await until(lambda: len(b_store.entries) == 502, "the restarted B to get A's 502 entries", timeout=10)
            assert b_store.server("blog", b"\x0a\x08\x08\x08") == "b1"
            status = a.status()
            (link,) = status["nodes"]
            assert link["state"] == "up" and link["sent"] >= 1001 and status["received"] >= 1
        finally:
            await a.stop()
            await b.stop()

    run(scenario, blocking_guard)


def test_entries_expire_alike_on_both_sides(blocking_guard: Any) -> None:
    async def scenario() -> None:
        a_port, b_port = free_port(), free_port()
        a_store, b_store = DictStore(), DictStore()
        a = peers.PeersService(node(a_port, [b_port]), a_store)
        b = peers.PeersService(node(b_port, [a_port]), b_store)
        await a.start()
        await b.start()
        try:
            await until(lambda: _up(a) and _up(b), "both links up")
            a_store.put("web", b"\x0a\x00\x00\x01", "s1", lifetime=0.5)
            await until(lambda: b_store.server("web", b"\x0a\x00\x00\x01") == "s1", "the entry at B")
            expiry_a = a_store.entries[("web", b"\x0a\x00\x00\x01")][1]
            expiry_b = b_store.entries[("web", b"\x0a\x00\x00\x01")][1]
            assert abs(expiry_a - expiry_b) < 0.25  # the time left travelled, not a date
        finally:
            await a.stop()
            await b.stop()

    run(scenario, blocking_guard)


def test_a_wrong_key_and_a_stranger_are_refused_and_say_why(blocking_guard: Any, caplog: Any) -> None:
    async def scenario() -> None:
        a_port, b_port, c_port = free_port(), free_port(), free_port()
        a_store, b_store = DictStore(), DictStore()
        a_store.put("web", b"\x0a\x00\x00\x01", "s1")
        a = peers.PeersService(node(a_port, [b_port], key="one"), a_store)
        b = peers.PeersService(node(b_port, [a_port], key="two"), b_store)
        stranger = peers.PeersService(node(c_port, [b_port], key="two"), DictStore())  # B does not list it
        await a.start()
        await b.start()
        await stranger.start()
        try:
            await until(
                lambda: (
                    "authentication failed" in a.status()["nodes"][0]["error"]
                    and "not one of this node's [peers] nodes" in stranger.status()["nodes"][0]["error"]
                ),
                "both dialers refused, each told why",
            )
            assert a.status()["nodes"][0]["state"] == stranger.status()["nodes"][0]["state"] == "failed"
            assert b_store.entries == {}
        finally:
            for service in (a, b, stranger):
                await service.stop()

    run(scenario, blocking_guard)
    assert "failed authentication (a different key?)" in caplog.text


def test_garbage_and_a_silent_dialer_end_their_link_and_the_service_goes_on(blocking_guard: Any) -> None:
    async def scenario() -> None:
        a_port, b_port = free_port(), free_port()
        b_store = DictStore()
        b = peers.PeersService(node(b_port, [a_port], heartbeat=0.1), b_store)
        await b.start()
        try:
            loop = asyncio.get_running_loop()
            for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00\x00\x00\x05\x01BALP", b""):
                sock = socket.create_connection(("127.0.0.1", b_port), timeout=2)
                sock.setblocking(False)
                if junk:
                    await loop.sock_sendall(sock, junk)
                # closed by B: at once for garbage, after the handshake timeout or silence otherwise
                data = await asyncio.wait_for(loop.sock_recv(sock, 100), 8)
                while data:
                    data = await asyncio.wait_for(loop.sock_recv(sock, 100), 8)
                sock.close()
            # A real node still gets in afterwards.
            a_store = DictStore()
            a_store.put("web", b"\x0a\x00\x00\x07", "s3")
            a = peers.PeersService(node(a_port, [b_port], heartbeat=0.1), a_store)
            await a.start()
            try:
                await until(lambda: b_store.server("web", b"\x0a\x00\x00\x07") == "s3", "the entry at B")
            finally:
                await a.stop()
        finally:
            await b.stop()

    run(scenario, blocking_guard)


class FloodingStore(DictStore):
    """A store whose workers never stop writing: every push has a batch of changes."""

    def take_changes(self) -> tuple[list[wire.StickUpdate], bool]:
        return [wire.StickUpdate("web", n.to_bytes(4, "big"), "s1", 60_000) for n in range(200)], False


def test_a_stop_ends_inbound_links_a_node_keeps_feeding(blocking_guard: Any) -> None:
    """The other node is still sending (updates, heartbeats) when this one stops: the stop
    closes the link and returns at once, not when the other node falls silent (a
    cancellation lost in Python 3.11's wait_for left a stopping master running)."""

    async def scenario() -> None:
        a_port, b_port = free_port(), free_port()
        a = peers.PeersService(node(a_port, [b_port], heartbeat=0.05), FloodingStore())
        b_store = DictStore()
        b = peers.PeersService(node(b_port, [a_port], heartbeat=0.05), b_store)
        await a.start()
        await b.start()
        try:
            await until(lambda: b.received > 2000, "the flood to reach B")
            for _ in range(5):  # stop while reads complete, again and again
                started = time.monotonic()
                await b.stop()
                assert time.monotonic() - started < 1.0
                assert b.inbound == {}
                b = peers.PeersService(node(b_port, [a_port], heartbeat=0.05), b_store)
                await b.start()
                await until(lambda service=b: service.received > 200, "the flood to reach the new B")
        finally:
            await a.stop()
            await b.stop()

    run(scenario, blocking_guard)
