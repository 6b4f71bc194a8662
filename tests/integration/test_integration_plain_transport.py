"""net.plain_transport on uvloop with real clients over 127.0.0.1: megabytes both ways with
flow control, a request that came whole answered and closed without the connection ever
being polled, reading paused and resumed with bytes waiting, a half-close answered before
the close, a BufferedProtocol handing over to a plain one mid-stream (what the PROXY header
reader does), a protocol's exception that ends its connection only, and a closed acceptor
that leaves no descriptor. (Through `balancer run`: every plain HTTP and TCP test.)"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop
from tests.support.collector import cyclic_collector_off
from tests.support.descriptors import open_sockets, open_sockets_and_epolls
from tests.support.echo_protocol import (
    AnswerThenClose,
    Echo,
    Opened,
    echo_and_end_three_ways,
    freed_once_lost,
    more_after_the_last_request,
)
from tests.support.listening import listening_socket

from balancer.net.linger import LINGER_SECONDS
from balancer.net.outbox import Outbox
from balancer.net.plain_transport import PlainAcceptor


def serve(scenario: Callable[[int], Awaitable[None]], make: Callable[[], asyncio.BaseProtocol] = Echo) -> None:
    async def main() -> None:
        listening = listening_socket()
        acceptor = PlainAcceptor(listening, make)
        try:
            await asyncio.wait_for(scenario(listening.getsockname()[1]), 30)
        finally:
            acceptor.close()

    Echo.made = []
    uvloop.run(main())


async def lost(protocol: Echo) -> list[Exception | None]:
    deadline = time.monotonic() + 5
    while not protocol.lost:
        assert time.monotonic() < deadline, "connection_lost never came"
        await asyncio.sleep(0.01)
    return protocol.lost


def test_megabytes_both_ways_with_flow_control_from_many_clients_then_clean_closes() -> None:
    payload = bytes(range(256)) * 4096 * 8  # 8 MiB each: more than the kernel's buffers hold

    async def one(port: int) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock)

        async def send() -> None:
            for offset in range(0, len(payload), 65536):
                writer.write(payload[offset : offset + 65536])
                await writer.drain()

        sending = asyncio.create_task(send())
        await asyncio.sleep(0.3)  # the client does not read for a while: the server must back off
        got = await reader.readexactly(len(payload))
        await sending
        assert got == payload
        writer.write_eof()
        assert await reader.read() == b""  # the server closes on our end of stream
        writer.close()

    async def scenario(port: int) -> None:
        await asyncio.gather(*(one(port) for _ in range(4)))
        assert len(Echo.made) == 4
        for echo in Echo.made:
            assert echo.paused_writes >= 1
            assert echo.eof
            assert await lost(echo) == [None]

    serve(scenario)


def test_a_whole_request_is_answered_and_closed_without_a_poll() -> None:
    """What a `Connection: close` request costs: read at accept, answered, closed; the
    protocol pauses reading as a session does once the last request is read. The
    connection has TCP_NODELAY, which it has from the listening socket."""

    class Answer(Echo):
        def data_received(self, data: bytes) -> None:
            self.transport.pause_reading()
            asyncio.get_running_loop().call_soon(self.answer, data)

        def answer(self, data: bytes) -> None:
            self.registered = self.transport.reading
            with socket.socket(fileno=os.dup(self.transport.fd)) as borrowed:
                self.nodelay = borrowed.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            self.transport.write(b"answer to " + data)
            self.transport.close()

    async def scenario(port: int) -> None:
        for n in range(20):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"request %d" % n)
            sock.setblocking(False)
            reader, writer = await asyncio.open_connection(sock=sock)
            assert await asyncio.wait_for(reader.read(), 5) == b"answer to request %d" % n
            writer.close()
            answer = Echo.made[-1]
            assert await lost(answer) == [None]
            assert answer.registered is False  # type: ignore[attr-defined]
            assert answer.nodelay  # type: ignore[attr-defined]  # small answers go out unheld
            assert answer.transport.get_extra_info("peername") == sock.getsockname()
            assert answer.transport.get_extra_info("sockname") == ("127.0.0.1", port)

    serve(scenario, make=Answer)


async def small_buffered_connection(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # the answer cannot all go at once
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return await asyncio.open_connection(sock=sock)


def test_bytes_never_read_do_not_turn_the_close_into_a_reset() -> None:
    """A client that sends more after its last request gets the whole answer and an end of
    stream, not a reset that destroys the answer's unread part (net.linger)."""

    async def scenario(port: int) -> None:
        for _ in range(5):
            reader, writer = await small_buffered_connection(port)
            assert await more_after_the_last_request(reader, writer) == AnswerThenClose.ANSWER
            writer.close()
            assert await lost(Echo.made[-1]) == [None]

    serve(scenario, make=AnswerThenClose)


def segments_received(writer: asyncio.StreamWriter) -> int:
    """TCP segments the client's socket has received (struct tcp_info's tcpi_segs_in, at
    byte 140 since Linux 4.2)."""
    info = writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 144)
    return int(struct.unpack_from("I", info, 140)[0])


def test_an_answer_and_its_close_held_in_the_outbox_leave_in_one_segment() -> None:
    """A last write and the close held back to back in the outbox (a `Connection: close`
    answer) go by write_and_close: the client gets the answer and its end of stream in one
    segment, one segment fewer than after a write and a close made one after the other,
    the connections otherwise alike."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"

    class WriteThenClose(Echo):
        def data_received(self, data: bytes) -> None:
            self.transport.pause_reading()
            self.transport.write(answer)
            self.transport.close()

    class HeldAnswer(Echo):
        outbox: Outbox

        def data_received(self, data: bytes) -> None:
            self.transport.pause_reading()
            self.outbox.write(self.transport, answer)
            self.outbox.close(self.transport)

    def segments(make: type[Echo]) -> list[int]:
        counts: list[int] = []

        async def scenario(port: int) -> None:
            HeldAnswer.outbox = Outbox()
            for _ in range(10):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                assert await asyncio.wait_for(reader.read(), 5) == answer
                counts.append(segments_received(writer))
                writer.close()
                assert await lost(Echo.made[-1]) == [None]

        serve(scenario, make=make)
        return counts

    apart, together = segments(WriteThenClose), segments(HeldAnswer)
    assert [n - 1 for n in apart] == together, (apart, together)


def test_a_client_that_keeps_its_end_open_is_closed_after_the_lingering_time() -> None:
    async def scenario(port: int) -> None:
        before = open_sockets()
        reader, writer = await small_buffered_connection(port)
        assert await more_after_the_last_request(reader, writer) == AnswerThenClose.ANSWER
        assert await lost(Echo.made[-1]) == [None]  # the session is over, the socket drains
        ended = time.monotonic()
        assert open_sockets() == before + 2  # the client's and the lingering one
        while open_sockets() > before + 1:
            assert time.monotonic() - ended < LINGER_SECONDS + 3, "the lingering socket was never closed"
            await asyncio.sleep(0.05)
        assert time.monotonic() - ended > LINGER_SECONDS - 1
        writer.close()

    serve(scenario, make=AnswerThenClose)


def test_bytes_that_come_while_reading_is_paused_wait_for_the_resume() -> None:
    class Stopping(Echo):
        def data_received(self, data: bytes) -> None:
            self.transport.write(data)
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(0.05, self.transport.resume_reading)

    async def scenario(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        messages = [b"message %d;" % n for n in range(20)]
        for message in messages:
            writer.write(message)
            await writer.drain()
            await asyncio.sleep(0.005)  # several arrive while the reader is paused
        wanted = b"".join(messages)
        got = await asyncio.wait_for(reader.readexactly(len(wanted)), 10)
        assert got == wanted
        writer.close()

    serve(scenario, make=Stopping)


def test_a_half_closed_client_gets_its_answer_then_the_end_of_stream() -> None:
    class HalfClose(Echo):
        def __init__(self) -> None:
            super().__init__()
            self.got = b""

        def data_received(self, data: bytes) -> None:
            self.got += data

        def eof_received(self) -> bool:
            self.transport.write(b"got " + self.got)
            self.transport.write_eof()
            return True  # the transport stays open for the close below

    async def scenario(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"all of it")
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b"got all of it"
        (half,) = Echo.made
        assert half.lost == []  # half-closed both ways, not closed
        half.transport.close()
        assert await lost(half) == [None]
        writer.close()

    serve(scenario, make=HalfClose)


def test_a_buffered_protocol_hands_the_connection_to_a_plain_one_mid_stream() -> None:
    class Header(asyncio.BufferedProtocol):
        """Reads up to a newline into its own buffer, then gives the rest to an Echo."""

        def __init__(self) -> None:
            self.buffer = bytearray(8)
            self.got = b""
            self.transport: Any = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def get_buffer(self, sizehint: int) -> bytearray:
            return self.buffer

        def buffer_updated(self, nbytes: int) -> None:
            self.got += bytes(self.buffer[:nbytes])
            if b"\n" in self.got:
                head, _, rest = self.got.partition(b"\n")
                echo = Echo()
                self.transport.set_protocol(echo)
                echo.connection_made(self.transport)
                self.transport.write(b"[" + head + b"]")
                if rest:
                    echo.data_received(rest)

        def connection_lost(self, exc: Exception | None) -> None:
            pass

    async def scenario(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"a header longer than the buffer\nfirst")
        assert await asyncio.wait_for(reader.readexactly(38), 5) == b"[a header longer than the buffer]first"
        writer.write(b" and more")
        assert await asyncio.wait_for(reader.readexactly(9), 5) == b" and more"
        writer.close()
        (echo,) = Echo.made
        assert await lost(echo) == [None]

    serve(scenario, make=Header)


def test_closed_connections_are_freed_at_once_not_by_the_cyclic_collector() -> None:
    """A protocol holds its transport; the transport lets go of it as it tells
    connection_lost, so a closed connection is freed then, not at a full collection."""

    async def scenario(port: int) -> None:
        async def half_close(opened: Opened) -> None:
            opened[1].write_eof()  # the server's end of stream, then its close
            assert await asyncio.wait_for(opened[0].read(), 5) == b""

        await echo_and_end_three_ways(lambda: asyncio.open_connection("127.0.0.1", port), half_close)
        assert await freed_once_lost() == []

    with cyclic_collector_off():
        serve(scenario)


def test_a_protocol_error_ends_its_connection_only() -> None:
    async def scenario(port: int) -> None:
        broken_reader, broken = await asyncio.open_connection("127.0.0.1", port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        broken.write(b"boom")
        assert await asyncio.wait_for(broken_reader.read(), 5) == b""
        writer.write(b"still here")
        assert await asyncio.wait_for(reader.readexactly(10), 5) == b"still here"
        third_reader, third = await asyncio.open_connection("127.0.0.1", port)
        third.write(b"and new ones")
        assert await asyncio.wait_for(third_reader.readexactly(12), 5) == b"and new ones"
        for w in (broken, writer, third):
            w.close()

    serve(scenario, make=lambda: Echo(fail_on=b"boom"))


def test_a_connection_outlives_its_closed_acceptor_and_leaves_no_descriptor() -> None:
    async def main() -> None:
        before = open_sockets_and_epolls()
        listening = listening_socket()
        port = listening.getsockname()[1]
        acceptor = PlainAcceptor(listening, Echo)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"first")
        assert await asyncio.wait_for(reader.readexactly(5), 10) == b"first"
        acceptor.close()
        writer.write(b"still here")
        assert await asyncio.wait_for(reader.readexactly(10), 10) == b"still here"
        try:
            await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            pass
        else:
            raise AssertionError("a closed acceptor still accepts")
        writer.close()
        await writer.wait_closed()
        assert await lost(Echo.made[0]) == [None]
        assert open_sockets_and_epolls() == before

    Echo.made = []
    uvloop.run(main())
