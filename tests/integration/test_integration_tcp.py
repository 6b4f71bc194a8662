"""mode = "tcp": the proxy relays bytes both ways, honours half-close and applies backpressure."""

from __future__ import annotations

import asyncio
import hashlib
import random
import resource
import socket
import ssl
import time

import pytest
from tests.integration.aclient import open_with_buffers, until_stalled, wait_until
from tests.integration.configs import frontend_port, make_config
from tests.integration.peers import RawServer
from tests.support.listening import UnansweredListener
from tests.support.tls import make_certificate

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


def test_a_server_named_by_host_name_is_relayed_too(run_balancer, echo_server):
    """A server at a name (not a numeric address) is connected through the resolver and the
    loop's transports, not net.plain_connect: it relays the same."""
    port = echo_server.address.rsplit(":", 1)[1]

    async def scenario(balancer):
        reader, writer = await open_with_buffers(frontend_port(balancer))
        try:
            writer.write(b"by name\n")
            return await asyncio.wait_for(reader.readexactly(8), 5)
        finally:
            writer.close()

    assert run_balancer(_tcp_config([("named", f"localhost:{port}")]), scenario) == b"by name\n"
    assert echo_server.connections == 1


def test_a_tls_terminating_tcp_frontend_relays_the_clear_bytes(run_balancer, echo_server, tmp_path):
    """TLS ends at the frontend; the server side (net.plain_connect) waits in the same
    acceptor's Poller as the TLS client connection."""
    certificate = make_certificate(tmp_path, "lb.example").pem
    client_tls = ssl.create_default_context()
    client_tls.check_hostname = False
    client_tls.verify_mode = ssl.CERT_NONE
    config = make_config([echo_server], mode="tcp", frontend={"forwardfor": False, "tls": {"cert": [str(certificate)]}})

    async def scenario(balancer):
        reader, writer = await asyncio.open_connection("127.0.0.1", frontend_port(balancer), ssl=client_tls)
        try:
            writer.write(b"in clear behind TLS\n")
            return await asyncio.wait_for(reader.readexactly(20), 5)
        finally:
            writer.close()

    assert run_balancer(config, scenario) == b"in clear behind TLS\n"
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


def test_a_connect_that_never_completes_times_out_and_goes_to_another_server(run_balancer, echo_server):
    """timeouts.connect bounds each attempt (the session's own deadline, no task), and the
    retry goes to the other server: both clients are served, one after ~300 ms."""
    silent = UnansweredListener()
    config = make_config(
        [("silent", silent.address), echo_server],
        mode="tcp",
        frontend={"forwardfor": False},
        backend={"retries": 1, "timeouts": {"connect": "300ms"}},
    )

    async def scenario(balancer):
        answers = []
        for _ in range(2):  # round robin: one of the two picks the silent server first
            reader, writer = await open_with_buffers(frontend_port(balancer))
            try:
                writer.write(b"ping\n")
                answers.append(await asyncio.wait_for(reader.readexactly(5), 5))
            finally:
                writer.close()
        return answers, balancer.backends["web"].by_name["silent"].connect_failures

    try:
        answers, failures = run_balancer(config, scenario)
    finally:
        silent.close()
    assert answers == [b"ping\n", b"ping\n"]
    assert failures == 1


def test_the_only_server_never_completing_the_connect_closes_the_client_after_the_retries(run_balancer):
    silent = UnansweredListener()
    config = make_config(
        [("silent", silent.address)],
        mode="tcp",
        frontend={"forwardfor": False},
        backend={"retries": 1, "timeouts": {"connect": "200ms"}},
    )

    async def scenario(balancer):
        loop = asyncio.get_running_loop()
        reader, writer = await open_with_buffers(frontend_port(balancer))
        started = loop.time()
        try:
            writer.write(b"hello")
            received = await asyncio.wait_for(reader.read(-1), 10)
        finally:
            writer.close()
        return received, loop.time() - started, balancer.backends["web"].by_name["silent"].connect_failures

    try:
        received, elapsed, failures = run_balancer(config, scenario)
    finally:
        silent.close()
    # Two attempts of 200 ms and a turn-around of 200 ms between them, not timeouts.client (30 s).
    assert received == b""
    assert failures == 2
    assert 0.5 < elapsed < 5


def test_a_dead_server_refusing_a_long_queue_closes_every_client_and_frees_its_slot(run_balancer):
    """maxconn = 1, 1,200 clients queued behind the one connected, then the server dies. Each
    freed slot goes to the next queued client, whose connect is refused at once (from the
    connect call: the listener is gone); that failure frees the slot again. Every client is
    closed (after its retries, or at timeouts.queue once the server is taken out), none is
    left queued, the slot count is back to 0, and nothing escapes to the loop: the failures,
    told within the hand-over, once nested a stack frame deeper per queued client, until
    Python's recursion limit left sessions queued and a slot taken for good."""
    queued = 1200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * queued + 256  # both ends of each client connection live in this process
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"the open-files hard limit {hard} is below the {want} this test holds")
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    config = make_config(
        [{"name": "only", "address": "127.0.0.1:%d" % listener.getsockname()[1], "maxconn": 1}],
        mode="tcp",
        frontend={"forwardfor": False},
        backend={"retries": 1, "timeouts": {"connect": "100ms", "queue": "3s"}},
    )

    def open_clients(port: int) -> list[socket.socket]:  # blocking, in a thread: off the loop
        return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(queued)]

    def ends_of(clients: list[socket.socket]) -> list[bytes | str]:
        deadline = time.monotonic() + 20
        ends: list[bytes | str] = []
        for client in clients:
            client.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                ends.append(client.recv(1))  # b"": closed; the server never sent a byte
            except ConnectionResetError:
                ends.append("reset")
            except TimeoutError:
                ends.append("still open")
            finally:
                client.close()
        return ends

    async def scenario(balancer):
        held: list[asyncio.StreamWriter] = []
        server = await asyncio.start_server(lambda _r, w: held.append(w), sock=listener)
        port = frontend_port(balancer)
        first = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port), 5)
        await wait_until(lambda: len(held) == 1, message="the first client's connection to the server")
        clients = [first, *await asyncio.to_thread(open_clients, port)]
        waiting = balancer.backend_contexts["web"].waiting
        await wait_until(lambda: len(waiting) == queued, message="every other client queued", timeout=20)
        server.close()  # refused from here on
        for writer in held:
            writer.transport.abort()
        ends = await asyncio.to_thread(ends_of, clients)
        only = balancer.backends["web"].by_name["only"]
        return ends, len(waiting), only.active, only.connect_failures

    ends, still_queued, active, failures = run_balancer(config, scenario, timeout=90)
    assert set(ends) <= {b"", "reset"}, f"clients left open: {ends.count('still open')}"
    assert still_queued == 0 and active == 0
    assert failures >= queued


def test_what_a_client_sends_while_queued_for_a_slot_arrives_intact(run_balancer, echo_server):
    """Bytes sent before the server is connected are held (up to PENDING_LIMIT, then the
    client's reading pauses) and all go on, in order, once it is."""
    payload = random.Random(7).randbytes(2 * MB)
    config = make_config(
        [{"name": "only", "address": echo_server.address, "maxconn": 1}],
        mode="tcp",
        frontend={"forwardfor": False},
        backend={"timeouts": {"queue": "20s"}},
    )

    async def scenario(balancer):
        port = frontend_port(balancer)
        first_reader, first = await open_with_buffers(port)
        first.write(b"hold\n")
        assert await asyncio.wait_for(first_reader.readexactly(5), 5) == b"hold\n"  # it holds the slot
        reader, writer = await open_with_buffers(port, sndbuf=SMALL_BUFFER, rcvbuf=SMALL_BUFFER)
        sent = 0

        async def send():
            nonlocal sent
            for start in range(0, len(payload), 64 * 1024):
                writer.write(payload[start : start + 64 * 1024])
                await writer.drain()
                sent = start + 64 * 1024

        sending = asyncio.ensure_future(send())
        held = await until_stalled(lambda: sent, stall=0.3, deadline=10)
        first.close()  # the slot frees: the queued connection gets the server
        try:
            echoed = await asyncio.wait_for(reader.readexactly(len(payload)), 20)
            await asyncio.wait_for(sending, 5)
        finally:
            writer.close()
        return held, echoed

    held, echoed = run_balancer(config, scenario, timeout=60)
    assert held < len(payload), "nothing held the queued client back"
    assert echoed == payload


def test_a_server_that_half_closes_first_still_gets_what_the_client_sends_then_its_end(run_balancer):
    """The other order of the half-close test: the server ends its side first; the client's
    last bytes and its end still reach the server (the relay closes instead of shutting
    down first, once both ends are seen)."""
    got: list[bytes] = []

    async def handler(reader, writer, index):
        writer.write(b"hi")
        writer.write_eof()
        got.append(await asyncio.wait_for(reader.read(-1), 5))  # up to the client's end
        writer.close()

    server = RawServer(handler)

    async def scenario(balancer):
        async with server.serving():
            reader, writer = await open_with_buffers(frontend_port(balancer))
            try:
                assert await asyncio.wait_for(reader.read(-1), 5) == b"hi"  # its end came too
                writer.write(b"late")
                writer.write_eof()
                await wait_until(lambda: got, message="the server never saw the client's end")
            finally:
                writer.close()

    run_balancer(_tcp_config([("only", server.address)]), scenario)
    assert got == [b"late"]
