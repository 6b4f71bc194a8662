"""Connection upgrades: a WebSocket through the proxy, and the tunnel timeout that ends it."""

from __future__ import annotations

import asyncio
import time

from tests.integration.aclient import Client
from tests.integration.configs import frontend_port, make_config
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


def _ws_url(balancer) -> str:
    return f"ws://127.0.0.1:{frontend_port(balancer)}/ws"


def test_websocket_echo_through_the_proxy(run_balancer, backends):
    (s1,) = backends("s1")
    binary = bytes(range(256)) * 256  # 64 KiB, several TCP segments

    async def scenario(balancer):
        async with connect(_ws_url(balancer), open_timeout=5, close_timeout=2, ping_interval=None) as ws:
            tagged = ws.response.headers.get("Server-Name")
            echoes = []
            for message in ("hello", "wörld", binary, b"\x00\xff"):
                await ws.send(message)
                echoes.append(await asyncio.wait_for(ws.recv(), 5))
        return tagged, echoes

    tagged, echoes = run_balancer(make_config([s1]), scenario)
    assert tagged == "s1"
    assert echoes == ["hello", "wörld", binary, b"\x00\xff"]
    (request,) = s1.requests
    assert request.header("Upgrade") == "websocket"  # the upgrade itself is forwarded
    assert "upgrade" in (request.header("Connection") or "").lower()


def test_tunnel_timeout_closes_an_idle_websocket(run_balancer, backends):
    (s1,) = backends("s1")
    config = make_config([s1], frontend={"timeouts": {"tunnel": "300ms", "client": "30s"}})

    async def scenario(balancer):
        async with connect(_ws_url(balancer), open_timeout=5, close_timeout=1, ping_interval=None) as ws:
            # Traffic keeps the tunnel alive well past the timeout ...
            for i in range(8):
                if i:
                    await asyncio.sleep(0.1)
                await ws.send(f"tick {i}")
                assert await asyncio.wait_for(ws.recv(), 5) == f"tick {i}"
            idle_since = time.monotonic()
            # ... silence ends it.
            try:
                message = await asyncio.wait_for(ws.recv(), 5)
            except ConnectionClosed:
                return time.monotonic() - idle_since
            raise AssertionError(f"unexpected message {message!r}")

    idle = run_balancer(config, scenario)
    assert 0.25 <= idle < 3, f"the idle tunnel was closed after {idle:.2f}s, timeout 300ms"


def test_upgrade_declined_by_the_server_is_an_ordinary_response(run_balancer, backends):
    """The server answers an Upgrade request with a plain 200. The client gets that answer
    intact; the proxy may keep the connection or close it, but must say which."""
    (s1,) = backends("s1")
    upgrade = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ]

    async def scenario(balancer):
        port = frontend_port(balancer)
        async with await Client.connect(port) as client:
            declined = await client.get("/not-a-websocket", upgrade)
            if "close" in declined.connection_tokens():
                await client.read_until_closed(timeout=3)
                client = await Client.connect(port)
            after = await client.get("/after")
            client.close()
        return declined, after

    declined, after = run_balancer(make_config([s1]), scenario)
    assert (declined.status, declined.body) == (200, b"s1\n")
    assert declined.header("Upgrade") is None
    assert (after.status, after.body) == (200, b"s1\n")
    assert [r.target for r in s1.requests] == ["/not-a-websocket", "/after"]
