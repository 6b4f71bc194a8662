"""mode = "tcp": the proxy relays bytes both ways, honours half-close and applies backpressure."""

from __future__ import annotations

import asyncio
import hashlib
import random

from tests.integration.aclient import open_with_buffers, until_stalled, wait_until
from tests.integration.configs import frontend_port, make_config
from tests.integration.peers import RawServer

MB = 1024 * 1024
SMALL_BUFFER = 64 * 1024


def _tcp_config(servers) -> str:
    return make_config(servers, mode="tcp", frontend={"forwardfor": False})


def test_tcp_relay_round_trips(run_balancer, echo_server):
    async def scenario(balancer):
        reader, writer = await open_with_buffers(frontend_port(balancer))
        try:
            for i in range(20):
                message = f"message {i}\n".encode()
                writer.write(message)
                assert await asyncio.wait_for(reader.readexactly(len(message)), 5) == message
        finally:
            writer.close()

    run_balancer(_tcp_config([echo_server]), scenario)
    assert echo_server.connections == 1


def test_tcp_half_close_is_relayed_and_the_other_way_stays_open(run_balancer, echo_server):
    async def scenario(balancer):
        reader, writer = await open_with_buffers(frontend_port(balancer))
        try:
            writer.write(b"last words")
            writer.write_eof()  # our FIN must reach the server ...
            # ... while the server's answer, sent after it saw the FIN, must still reach us.
            return await asyncio.wait_for(reader.read(-1), 5)
        finally:
            writer.close()

    received = run_balancer(_tcp_config([echo_server]), scenario)
    assert received == b"last words" + b"bye\n"
    assert echo_server.eofs == 1


def test_tcp_20_megabytes_through_a_slow_reader_arrive_intact(run_balancer, echo_server):
    payload = random.Random(20).randbytes(20 * MB)
    digest = hashlib.sha256(payload).hexdigest()

    async def scenario(balancer):
        reader, writer = await open_with_buffers(frontend_port(balancer))

        async def send():
            for start in range(0, len(payload), 256 * 1024):
                writer.write(payload[start : start + 256 * 1024])
                await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        received = hashlib.sha256()
        total = 0
        reads = 0
        try:
            while chunk := await asyncio.wait_for(reader.read(64 * 1024), 10):
                if total < len(payload):
                    received.update(chunk[: len(payload) - total])
                total += len(chunk)
                reads += 1
                if reads % 8 == 0 and total < 4 * MB:
                    await asyncio.sleep(0.01)  # a slow reader at first: the relay must hold back
            await asyncio.wait_for(sender, 10)
        finally:
            sender.cancel()
            writer.close()
        return total, received.hexdigest()

    total, received = run_balancer(_tcp_config([echo_server]), scenario, timeout=60)
    assert total == len(payload) + len(b"bye\n")
    assert received == digest


def test_tcp_backpressure_client_to_slow_server(run_balancer):
    """The server stops reading: the proxy must stop reading from the client instead of
    buffering what the client sends. Without backpressure the client could push all 64 MB
    into the proxy's memory; with it the client stalls once the sockets' buffers are full
    (about 6 MB on loopback). Then the server reads again and every byte arrives."""
    limit = 64 * MB
    block = b"c" * MB
    reading = asyncio.Event()
    received = 0

    async def sink(reader, writer, index):
        nonlocal received
        await reading.wait()
        while chunk := await reader.read(MB):
            received += len(chunk)

    server = RawServer(sink, rcvbuf=SMALL_BUFFER)

    async def scenario(balancer):
        async with server.serving():
            _reader, writer = await open_with_buffers(frontend_port(balancer), sndbuf=SMALL_BUFFER)
            sent = 0

            async def pump():
                nonlocal sent
                while sent < limit:
                    writer.write(block)
                    sent += len(block)
                    await writer.drain()
                writer.write_eof()

            task = asyncio.create_task(pump())
            try:
                stalled_at = await until_stalled(lambda: sent)
                reading.set()  # the server reads again: the client must get going again
                await asyncio.wait_for(task, 20)
                await until_stalled(lambda: received, stall=0.3, deadline=20)
                return stalled_at, sent, received
            finally:
                task.cancel()
                writer.close()

    stalled_at, sent, got = run_balancer(_tcp_config([("sink", server.address)]), scenario, timeout=60)
    assert stalled_at < 40 * MB, f"client stalled only after {stalled_at / MB:.0f} MB: nothing held it back"
    assert sent == limit
    assert got == sent


def test_tcp_backpressure_server_to_slow_client(run_balancer):
    """The same the other way: a client that does not read must make the proxy stop reading
    from the server."""
    limit = 64 * MB
    block = b"s" * MB
    sent = 0

    async def source(reader, writer, index):
        nonlocal sent
        while sent < limit:
            writer.write(block)
            sent += len(block)
            await writer.drain()
        writer.write_eof()

    server = RawServer(source, sndbuf=SMALL_BUFFER)

    async def scenario(balancer):
        async with server.serving():
            reader, writer = await open_with_buffers(frontend_port(balancer), rcvbuf=SMALL_BUFFER)
            try:
                writer.write(b"start\n")  # whether the relay connects at once or on the first byte
                stalled_at = await until_stalled(lambda: sent)
                total = 0
                while chunk := await asyncio.wait_for(reader.read(MB), 10):
                    total += len(chunk)
                return stalled_at, total
            finally:
                writer.close()

    stalled_at, total = run_balancer(_tcp_config([("source", server.address)]), scenario, timeout=60)
    assert stalled_at < 40 * MB, f"server could write {stalled_at / MB:.0f} MB: nothing held it back"
    assert total == sent == limit


def test_the_only_server_refusing_is_retried_after_a_turn_around(run_balancer):
    """As for HTTP: with no other server, a refused connect is retried on the same one after
    min(timeouts.connect, 1 s), so a server back within that time gets the connection."""

    async def echo(reader, writer):
        writer.write(await reader.readexactly(5))
        await writer.drain()
        writer.close()

    server = RawServer(lambda r, w, i: echo(r, w))
    server._sock.close()  # refused until it listens again on the same port
    config = make_config(
        [("only", server.address)],
        mode="tcp",
        frontend={"forwardfor": False},
        backend={"retries": 2, "timeouts": {"connect": "300ms"}},
    )

    async def scenario(balancer):
        only = balancer.backends["web"].by_name["only"]
        reader, writer = await open_with_buffers(frontend_port(balancer))
        writer.write(b"hello")
        await wait_until(lambda: only.connect_failures >= 1, message="the first connect was not refused")
        restarted = await asyncio.start_server(echo, "127.0.0.1", server.port)
        try:
            return await asyncio.wait_for(reader.readexactly(5), 5)
        finally:
            writer.close()
            restarted.close()

    assert run_balancer(config, scenario) == b"hello"


def test_tcp_backend_rule_rejects_sources_before_connecting(run_balancer, echo_server):
    """Issue #13: `tcp-request content reject` in a backend (database and Vault backends)."""
    deny_loopback = make_config(
        [echo_server],
        mode="tcp",
        frontend={"forwardfor": False},
        backend={"rule": [{"if": {"src": ["127.0.0.0/8"]}, "action": "deny"}]},
    )
    allow_loopback = deny_loopback.replace('"127.0.0.0/8"', '"10.0.0.0/8"')

    async def scenario(balancer):
        reader, writer = await open_with_buffers(frontend_port(balancer))
        try:
            writer.write(b"hello\n")
            writer.write_eof()
            return await asyncio.wait_for(reader.read(-1), 5)
        finally:
            writer.close()

    assert run_balancer(deny_loopback, scenario) == b""
    assert echo_server.connections == 0
    assert run_balancer(allow_loopback, scenario) == b"hello\nbye\n"
    assert echo_server.connections == 1
