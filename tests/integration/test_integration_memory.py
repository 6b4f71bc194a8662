"""A closed connection is freed as it closes, not left to the cyclic garbage collector.

With a new connection per request a worker closes thousands a second; each one left in a
reference cycle waits for a collection that walks every young object. Breaking the cycles
(session and parser, session and its deadline's callback, session and the request it
parses) took balancer/HAProxy per core with `Connection: close` from 0.46x to 0.53x.
Over TLS a connection left so also keeps OpenSSL's object and buffers (~20 KiB): a worker
taking handshakes grew by hundreds of MiB before the collector came (the TLS transport kept
its session after connection_lost).
"""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl
import struct

import pytest
from tests.integration.aclient import Client, open_with_buffers, wait_until
from tests.integration.configs import frontend_port, make_config
from tests.integration.h2client import H2Client
from tests.support.collector import cyclic_collector_off
from tests.support.ports import closed_port
from tests.support.tls import make_certificate

from balancer.net.h2_session import H2Session
from balancer.net.h2_stream import H2Stream
from balancer.net.http_session import HttpSession
from balancer.net.tcp_session import TcpSession
from balancer.net.tls_transport import TlsTransport
from balancer.net.upstream import UpstreamConnection

CONNECTIONS = 40


def _young(kind: type) -> int:
    """Instances of `kind` among the objects made since the last collection. With the
    collector off they all stay in the youngest generation, so this walks only what the
    scenario made: a walk of the whole test process, late in a run, takes ~0.1 s in the
    loop and trips the blocking-loop guard."""
    return sum(1 for obj in gc.get_objects(generation=0) if isinstance(obj, kind))


async def all_freed(balancer, kinds: tuple[type, ...], what: str, left: int = 0) -> None:
    """Once every client connection has closed, at most `left` instances of each of `kinds`
    made with the collector off are left: the others were freed by reference counting as
    their connection ended (none would be while the collector is off)."""
    frontend = balancer.frontends["www"]
    await wait_until(lambda: not frontend.sessions, message="client connections still open")
    for kind in kinds:
        await wait_until(
            lambda kind=kind: _young(kind) <= left,
            timeout=2,
            interval=0.05,
            message=f"{what} were left to the cyclic collector ({kind.__name__})",
        )


def test_closed_connections_are_freed_without_the_cyclic_collector(run_balancer, backends):
    """Client and server connections alike: no pooling, so every server connection closes too."""
    (s1,) = backends("s1")

    async def scenario(balancer):
        port = frontend_port(balancer)
        for i in range(3):  # warm: the first connections build the pools
            async with await Client.connect(port) as client:
                assert (await client.get(f"/warm/{i}")).status == 200
        with cyclic_collector_off():  # what is alive now is not counted by _young()
            for i in range(CONNECTIONS):
                async with await Client.connect(port) as client:
                    response = await client.get(f"/n/{i}", headers=[("Connection", "close")])
                    assert response.status == 200, response
            await all_freed(balancer, (HttpSession, UpstreamConnection), "closed connections", left=1)

    run_balancer(make_config([s1], backend={"pool": {"max_idle_per_server": 0}}), scenario)


def test_closed_tcp_connections_are_freed_without_the_cyclic_collector(run_balancer, echo_server):
    async def scenario(balancer):
        port = frontend_port(balancer)
        with cyclic_collector_off():
            for i in range(CONNECTIONS):
                reader, writer = await open_with_buffers(port)
                message = f"message {i}\n".encode()
                writer.write(message)
                assert await asyncio.wait_for(reader.readexactly(len(message)), 5) == message
                writer.close()
                await writer.wait_closed()
            await all_freed(balancer, (TcpSession,), "closed TCP connections", left=1)

    run_balancer(make_config([echo_server], mode="tcp", frontend={"forwardfor": False}), scenario)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_certificate(tmp_path_factory.mktemp("cert"), "lb.example").pem)


def test_closed_tls_connections_are_freed_without_the_cyclic_collector(run_balancer, backends, certificate):
    """Requests with `Connection: close`, keep-alive connections the client closes,
    handshakes with no request, and handshakes the client resets once the session has
    started (as `openssl s_time -new` ends them)."""
    (s1,) = backends("s1")
    client_tls = ssl.create_default_context()
    client_tls.check_hostname = False
    client_tls.verify_mode = ssl.CERT_NONE

    async def scenario(balancer):
        port = frontend_port(balancer)
        for i in range(3):
            async with await Client.connect(port, tls=client_tls) as client:
                assert (await client.get(f"/warm/{i}")).status == 200
        with cyclic_collector_off():
            for i in range(CONNECTIONS):
                async with await Client.connect(port, tls=client_tls) as client:
                    if i % 3 == 0:
                        response = await client.get(f"/n/{i}", headers=[("Connection", "close")])
                        assert response.status == 200, response
                    elif i % 3 == 1:
                        assert (await client.get(f"/a/{i}")).status == 200
                        assert (await client.get(f"/b/{i}")).status == 200
            frontend = balancer.frontends["www"]
            for _ in range(CONNECTIONS // 2):
                _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls)
                await wait_until(lambda: len(frontend.sessions) == 1, message="the session did not start")
                writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                await wait_until(lambda: not frontend.sessions, message="the reset session did not end")
            await all_freed(balancer, (HttpSession, TlsTransport), "closed TLS connections")

    run_balancer(make_config([s1], frontend={"tls": {"cert": [certificate]}}), scenario)


def test_closed_h2_connections_are_freed_without_the_cyclic_collector(run_balancer, backends):
    """Connections of several streams each, the client closing them (h2c: the streams'
    objects are those of HTTP/2 over TLS)."""
    (s1,) = backends("s1")

    async def scenario(balancer):
        port = frontend_port(balancer)
        async with await H2Client.connect(port) as client:
            assert (await client.request("/warm")).status == 200
        with cyclic_collector_off():
            for i in range(CONNECTIONS // 4):
                async with await H2Client.connect(port) as client:
                    for n in range(3):
                        assert (await client.request(f"/n/{i}/{n}")).status == 200
            await all_freed(balancer, (H2Session, H2Stream, HttpSession), "closed HTTP/2 connections")

    run_balancer(make_config([s1], frontend={"h2c": True}), scenario)


def test_error_pages_and_failed_connects_are_freed_without_the_cyclic_collector(run_balancer):
    """A server that refuses every connection: each request's failed connect (an exception
    whose traceback holds the connect's frames and futures, a server connection made for
    nothing) and its 503 (over HTTP/2, a response the stream parses from the session's own
    HTTP/1.1 page) are freed as the request ends."""
    dead = ("dead", f"127.0.0.1:{closed_port()}")

    async def scenario(balancer):
        port = frontend_port(balancer)
        async with await Client.connect(port) as client:
            assert (await client.get("/warm")).status == 503
        async with await H2Client.connect(port) as h2:
            assert (await h2.request("/warm")).status == 503
        with cyclic_collector_off():
            for i in range(CONNECTIONS // 4):
                async with await Client.connect(port) as client:
                    assert (await client.get(f"/n/{i}")).status == 503
                async with await H2Client.connect(port) as h2:
                    for n in range(3):
                        assert (await h2.request(f"/n/{i}/{n}")).status == 503
            kinds = (H2Stream, UpstreamConnection, ConnectionRefusedError, HttpSession)
            await all_freed(balancer, kinds, "failed requests")

    run_balancer(make_config([dead], frontend={"h2c": True}, backend={"retries": 0}), scenario)
