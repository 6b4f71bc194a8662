"""Misbehaving peers that TaggedBackend does not play: raw asyncio servers on the test's loop.

Each one does one thing a real server sometimes does (answer with a 1xx first, drop a
reused connection, reset mid-response, read slowly). They run on the balancer's event loop,
so they must never block either; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class RawServer:
    """An asyncio TCP server on 127.0.0.1:0; `handler(reader, writer, index)` per connection
    (index counts connections from 0)."""

    def __init__(self, handler: Handler, *, rcvbuf: int = 0, sndbuf: int = 0) -> None:
        self.handler = handler
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        # Bound and listening at once (outside any loop), so a config can name the address
        # before the balancer starts; connections wait in the backlog until start().
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Buffer sizes set on the listener are inherited by accepted sockets and switch off
        # the kernel's autotuning, so a test knows how much the kernel can hold.
        if rcvbuf:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(100)
        self.port = int(self._sock.getsockname()[1])
        self.address = f"127.0.0.1:{self.port}"

    async def start(self) -> RawServer:
        self._server = await asyncio.start_server(self._on_connection, sock=self._sock)
        return self

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[RawServer]:
        """Serve on the running loop for the duration of the block."""
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.connections
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(reader, writer, index)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass  # stop() ends handlers still waiting; that is not an error worth a log line
        finally:
            self._tasks.discard(task)
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        else:
            self._sock.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)


async def read_head(reader: asyncio.StreamReader) -> bytes:
    """One request head (requests to these peers carry no body)."""
    return await reader.readuntil(b"\r\n\r\n")


def ok_response(body: bytes = b"ok\n", extra: str = "") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra.encode(), body)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def head_field(head: bytes, name: str) -> str | None:
    """The value of header `name` in a raw request head, or None."""
    prefix = name.lower().encode() + b":"
    for line in head.split(b"\r\n")[1:]:
        if line.lower().startswith(prefix):
            return line[len(prefix) :].strip().decode("latin-1")
    return None
