"""net.plain_connect on uvloop: a server connection made on the descriptor itself becomes a
PlainTransport that relays both ways; a refused connect is told once; an abandoned connect
and a closed connection leave no descriptor behind; a stream that fills its reads is read
in larger reads, drained in one turn."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import cast

import uvloop
from tests.integration.aclient import wait_until
from tests.support.descriptors import open_sockets_and_epolls
from tests.support.echo_protocol import Echo
from tests.support.listening import UnansweredListener, listening_socket

from balancer.net.plain_connect import PlainConnect
from balancer.net.plain_transport import RELAY_READ_SIZE, PlainAcceptor
from balancer.net.poller import Poller


class Collect(asyncio.Protocol):
    """Keeps what the server sends and how the connection went."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.received = bytearray()
        self.reads: list[int] = []
        self.lost: list[Exception | None] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received += data
        self.reads.append(len(data))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


def test_a_connected_server_echoes_a_megabyte_and_its_descriptors_close() -> None:
    async def main() -> None:
        before = open_sockets_and_epolls()
        loop = asyncio.get_running_loop()
        listening = listening_socket()
        server = PlainAcceptor(listening, Echo)  # the server: an echo on our own transport
        poller = Poller(loop)
        protocol = Collect()
        failures: list[OSError] = []
        host, port = listening.getsockname()
        PlainConnect(loop, poller, host, port, protocol, failures.append)
        await wait_until(lambda: protocol.transport is not None, message="connected")
        transport = cast(asyncio.Transport, protocol.transport)
        assert transport.get_extra_info("peername") == (host, port)
        payload = bytes(range(256)) * 4096  # 1 MiB, more than one read
        transport.write(payload)
        await wait_until(lambda: len(protocol.received) == len(payload), message="the megabyte echoed")
        assert bytes(protocol.received) == payload and failures == []
        transport.close()
        await wait_until(lambda: protocol.lost == [None], message="the connection lost")
        server.close()
        poller.retire()
        assert poller.closed and poller.connections == 0
        await wait_until(lambda: open_sockets_and_epolls() == before, message="every descriptor closed")

    Echo.made = []
    uvloop.run(main())


def test_a_refused_connect_is_told_once_and_leaves_nothing_open() -> None:
    async def main() -> None:
        before = open_sockets_and_epolls()
        loop = asyncio.get_running_loop()
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connects are refused
        host, port = closed.getsockname()
        poller = Poller(loop)
        failures: list[OSError] = []
        protocol = Collect()
        try:
            PlainConnect(loop, poller, host, port, protocol, failures.append)
        except ConnectionRefusedError as exc:  # refused within the connect call itself
            failures.append(exc)
        await wait_until(lambda: len(failures) >= 1, message="the refusal told")
        # Nothing waits in the poller any more, so nothing more can be told.
        assert poller.connections == 0 and (poller.writing is None or poller.writing.callbacks == {})
        assert [type(exc) for exc in failures] == [ConnectionRefusedError]
        assert protocol.transport is None and protocol.lost == []
        closed.close()
        poller.retire()
        assert poller.closed
        await wait_until(lambda: open_sockets_and_epolls() == before, message="every descriptor closed")

    uvloop.run(main())


def test_an_abandoned_connect_closes_its_socket_and_tells_nothing() -> None:
    async def main() -> None:
        before = open_sockets_and_epolls()
        loop = asyncio.get_running_loop()
        unanswered = UnansweredListener()
        poller = Poller(loop)
        failures: list[OSError] = []
        protocol = Collect()
        connecting = PlainConnect(loop, poller, "127.0.0.1", unanswered.port, protocol, failures.append)
        assert connecting.fd >= 0 and poller.connections == 1  # under way, waiting to be writable
        poller.retire()
        assert not poller.closed  # kept open for the connect under way
        connecting.abandon()
        assert poller.closed and connecting.fd == -1
        writing = poller.writing
        assert writing is not None and writing.callbacks == {}  # nothing left to call back
        assert failures == [] and protocol.transport is None
        unanswered.close()
        await wait_until(lambda: open_sockets_and_epolls() == before, message="every descriptor closed")

    uvloop.run(main())


def test_a_stream_that_fills_its_reads_is_read_in_relay_sized_reads() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        listening = listening_socket()
        poller = Poller(loop)
        protocol = Collect()
        host, port = listening.getsockname()
        PlainConnect(loop, poller, host, port, protocol, lambda exc: None)
        accepted: list[socket.socket] = []

        def accept_one() -> bool:
            with contextlib.suppress(BlockingIOError):
                accepted.append(listening.accept()[0])
            return bool(accepted)

        await wait_until(accept_one, message="accepted")
        peer = accepted[0]
        await wait_until(lambda: protocol.transport is not None, message="connected")
        protocol.transport.pause_reading()  # type: ignore[union-attr]
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        peer.setblocking(False)
        sent = 0
        try:
            while sent < 8 << 20:  # bounded: at most 8 MiB waits in the buffers
                sent += peer.send(b"x" * (1 << 20))
        except BlockingIOError:
            pass
        protocol.transport.resume_reading()  # type: ignore[union-attr]
        await wait_until(lambda: len(protocol.received) == sent, message="everything read")
        assert max(protocol.reads) == RELAY_READ_SIZE
        peer.close()
        await wait_until(lambda: protocol.lost == [None], message="the end of stream")
        listening.close()
        poller.retire()

    uvloop.run(main())
