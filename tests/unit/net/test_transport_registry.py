"""uvloop's transport registry, emptied (net/transport_registry.py): the loop still serves."""

from __future__ import annotations

import asyncio
import gc
import socket
import weakref

import uvloop

from balancer.net.transport_registry import untrack_transports


def _registry(loop: asyncio.AbstractEventLoop) -> weakref.WeakValueDictionary[int, object]:
    """The loop's transport registry: uvloop's, or the `_transports` of asyncio's own loop."""
    if isinstance(loop, uvloop.Loop):
        (found,) = [r for r in gc.get_referents(loop) if isinstance(r, weakref.WeakValueDictionary)]
        return found
    return loop._transports  # type: ignore[attr-defined,no-any-return]


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


async def _echo_round_trips(loop: asyncio.AbstractEventLoop, count: int, recorded: list[int]) -> list[bytes]:
    """Echo `count` pings, one connection each; `recorded`: the registry's size while each
    connection is open (both ends have a transport then)."""
    server = await loop.create_server(_Echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    answers = []
    for n in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping %d" % n)
        answers.append(await asyncio.wait_for(reader.readexactly(len(b"ping %d" % n)), 5))
        recorded.append(len(_registry(loop)))
        writer.close()
        await writer.wait_closed()
    server.close()
    await server.wait_closed()
    return answers


def test_a_uvloop_loop_records_no_transport_and_still_serves() -> None:
    loop = uvloop.new_event_loop()
    try:
        assert untrack_transports(loop)
        assert not untrack_transports(loop)  # once is enough: the second call finds nothing to do
        recorded: list[int] = []
        answers = loop.run_until_complete(_echo_round_trips(loop, 20, recorded))
        assert answers == [b"ping %d" % n for n in range(20)]
        assert recorded == [0] * 20  # two live transports each time, neither recorded

        # add_reader on a socket of our own (as the TLS transport does) still works.
        left, right = socket.socketpair()
        with left, right:
            seen = loop.create_future()
            loop.add_reader(left.fileno(), lambda: seen.done() or seen.set_result(left.recv(10)))
            right.send(b"ready")
            assert loop.run_until_complete(asyncio.wait_for(seen, 5)) == b"ready"
            loop.remove_reader(left.fileno())
    finally:
        loop.close()


def test_a_plain_asyncio_loop_is_left_as_it_is() -> None:
    loop = asyncio.SelectorEventLoop()
    try:
        assert not untrack_transports(loop)
        recorded: list[int] = []
        assert loop.run_until_complete(_echo_round_trips(loop, 3, recorded)) == [b"ping 0", b"ping 1", b"ping 2"]
        assert recorded == [2, 2, 2]  # asyncio's loop keeps its registry
    finally:
        loop.close()
