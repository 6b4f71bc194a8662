"""net.poller on uvloop: connections that wait for their first bytes are watched in its
epoll set and served when the bytes come; a callback is called again while its bytes stay
unread (level-triggered), never after its descriptor is removed, and one callback's
exception ends no other's turn; a descriptor that waits for room to write is called once
the peer reads; retired sets are closed with the last connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import pytest
import uvloop
from tests.integration.aclient import wait_until
from tests.support.descriptors import open_sockets_and_epolls
from tests.support.echo_protocol import Echo
from tests.support.listening import listening_socket

from balancer.net.plain_transport import PlainAcceptor
from balancer.net.poller import Poller


def test_connections_accepted_before_their_requests_wait_in_the_set_and_are_served() -> None:
    async def main() -> None:
        before = open_sockets_and_epolls()
        listening = listening_socket()
        acceptor = PlainAcceptor(listening, Echo)
        poller = acceptor.poller
        clients = [await asyncio.open_connection(*listening.getsockname()) for _ in range(40)]
        # Every connection is accepted, found nothing to read, and waits in the set.
        await wait_until(lambda: len(poller.reading.callbacks) == 40, message="40 connections waiting")
        assert poller.connections == 40
        for n, (_, writer) in enumerate(clients):
            writer.write(b"request %d" % n)
        for n, (reader, _) in enumerate(clients):
            assert await asyncio.wait_for(reader.readexactly(len(b"request %d" % n)), 5) == b"request %d" % n
        acceptor.close()  # the set outlives its acceptor while connections remain
        assert not poller.closed
        for _, writer in clients:
            writer.close()
        await wait_until(lambda: poller.connections == 0, message="every connection ended")
        assert poller.reading.callbacks == {} and poller.closed
        await wait_until(lambda: open_sockets_and_epolls() == before, message="every descriptor closed")

    Echo.made = []
    uvloop.run(main())


def test_level_triggered_removed_never_called_and_a_failing_callback_alone(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        poller = Poller(loop)
        pairs = [socket.socketpair() for _ in range(3)]
        calls = {0: 0, 1: 0, 2: 0}

        def unread() -> None:  # leaves its byte unread: called again and again
            calls[0] += 1

        def failing() -> None:
            calls[1] += 1
            pairs[1][0].recv(1)
            raise RuntimeError("a bug in one connection")

        def removed() -> None:
            calls[2] += 1

        for (ours, _), callback in zip(pairs, (unread, failing, removed), strict=True):
            ours.setblocking(False)
            poller.attach()
            poller.add_reader(ours.fileno(), callback)
        poller.remove_reader(pairs[2][0].fileno())
        for _, theirs in pairs:
            theirs.send(b"x")
        await wait_until(lambda: calls[0] >= 3, message="the unread byte's callback called three times")
        assert calls[1] == 1 and calls[2] == 0
        assert "serving a ready connection failed" in caplog.text
        for ours, theirs in pairs:
            poller.remove_reader(ours.fileno())
            poller.detach()
            ours.close()
            theirs.close()
        poller.retire()
        assert poller.closed

    with caplog.at_level(logging.ERROR):
        uvloop.run(main())


def test_a_writer_waits_for_room_and_its_set_closes_with_the_poller() -> None:
    async def main() -> None:
        before = open_sockets_and_epolls()
        loop = asyncio.get_running_loop()
        poller = Poller(loop)
        assert poller.writing is None  # made when first wanted
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        sent = 0
        with pytest.raises(BlockingIOError):
            for _ in range(10_000):  # bounded: a socketpair's buffer is a few hundred KiB
                sent += ours.send(b"x" * 65536)
        writable = asyncio.Event()
        calls = 0

        def room() -> None:
            nonlocal calls
            calls += 1
            poller.remove_writer(ours.fileno())
            writable.set()

        poller.attach()
        poller.add_writer(ours.fileno(), room)
        for _ in range(3):  # loop passes, each polling the sets: a full buffer calls nothing
            await asyncio.sleep(0)
        assert calls == 0
        theirs.setblocking(False)
        received = 0

        def read_all() -> bool:  # the peer reads all: room to write again
            nonlocal received
            with contextlib.suppress(BlockingIOError):
                received += len(theirs.recv(1 << 20))
            return received >= sent

        await wait_until(read_all, interval=0.001, message="the peer read everything")
        await asyncio.wait_for(writable.wait(), 5)
        assert calls == 1
        writing = poller.writing
        assert writing is not None and writing.callbacks == {}
        poller.detach()
        poller.retire()
        assert poller.closed and writing.closed
        ours.close()
        theirs.close()
        await wait_until(lambda: open_sockets_and_epolls() == before, message="every descriptor closed")

    uvloop.run(main())
