"""An echoing protocol for the transport tests (net.plain_transport, net.tls_transport)."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any


class Echo(asyncio.Protocol):
    """Echoes what it reads; stops reading while its own writes are paused (as a session
    stops reading a client whose responses back up)."""

    made: list[Echo] = []

    def __init__(self, fail_on: bytes = b"") -> None:
        self.fail_on = fail_on
        self.transport: Any = None
        self.lost: list[Exception | None] = []
        self.paused_writes = 0
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        Echo.made.append(self)

    def data_received(self, data: bytes) -> None:
        if self.fail_on and self.fail_on in data:
            raise RuntimeError("a bug in one session")
        self.transport.write(data)

    def pause_writing(self) -> None:
        self.paused_writes += 1
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def eof_received(self) -> bool:
        self.eof = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


class AnswerThenClose(Echo):
    """Answers its first read with ANSWER and closes, reading nothing more (a session after
    the last request of a connection)."""

    ANSWER = bytes(range(256)) * 4096 * 4  # 4 MiB: more than a small receive buffer takes

    def data_received(self, data: bytes) -> None:
        self.transport.pause_reading()
        self.transport.write(self.ANSWER)
        self.transport.close()


async def more_after_the_last_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """What a client of AnswerThenClose reads to its end of stream when it sends more bytes
    while the answer comes: those bytes are never read by the server, which closes on them."""
    writer.write(b"the request")
    first = await asyncio.wait_for(reader.readexactly(65536), 10)
    writer.write(b"and more after the last request")
    await writer.drain()
    return first + await asyncio.wait_for(reader.read(), 10)  # a reset raises here


Opened = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def echo_and_end_three_ways(
    connect: Callable[[], Awaitable[Opened]], client_end: Callable[[Opened], Awaitable[None]], count: int = 12
) -> None:
    """`count` connections to an Echo server, each echoing once, then ended in turn by the
    client (`client_end`), by a client reset, and by the server."""
    for n in range(count):
        reader, writer = opened = await connect()
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
        if n % 3 == 0:
            await client_end(opened)
        elif n % 3 == 1:
            writer.transport.abort()  # a reset: the server's read fails
        else:
            Echo.made[-1].transport.close()  # the server closes first
            assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def freed_once_lost(timeout: float = 10.0) -> list[Echo]:
    """Waits until every protocol in Echo.made was told connection_lost, then forgets
    them; returns those still alive (held by something besides Echo.made)."""
    deadline = time.monotonic() + timeout
    while not all(protocol.lost for protocol in Echo.made):
        assert time.monotonic() < deadline, "connection_lost never came"
        await asyncio.sleep(0.01)
    refs = [weakref.ref(protocol) for protocol in Echo.made]
    Echo.made = []
    return [protocol for protocol in (ref() for ref in refs) if protocol is not None]
