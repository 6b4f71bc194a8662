"""WebSocket through `balancer run` with the `websockets` client: upgrade, echo, tunnel timeout."""

from __future__ import annotations

import asyncio
import time

import pytest
import websockets
from tests.support.config import server_blocks
from websockets.asyncio.client import connect

pytestmark = pytest.mark.e2e


def start(site, tagged, tunnel: str):
    (s1,) = tagged("s1")
    site.start(
        site.global_toml()
        + f"""
[[frontend]]
name = "www"
bind = ["127.0.0.1:{site.port}"]
default_backend = "web"
timeouts = {{ client = "5s", http_request = "5s", http_keep_alive = "5s", tunnel = "{tunnel}" }}

[[backend]]
name = "web"
timeouts = {{ connect = "2s", server = "5s", queue = "2s" }}
"""
        + server_blocks([s1])
    )
    return s1


def ws_connect(site):
    return connect(f"ws://127.0.0.1:{site.port}/ws", proxy=None, ping_interval=None, open_timeout=5)


def test_websocket_upgrade_and_echo_through_the_proxy(site, tagged):
    s1 = start(site, tagged, tunnel="30s")

    async def scenario() -> None:
        async with ws_connect(site) as ws:
            assert ws.response.status_code == 101
            assert ws.response.headers["Server-Name"] == "s1"
            messages: list[str | bytes] = ["hello", "second message", b"\x00\x01binary\xff", "x" * 200_000]
            for message in messages:
                await ws.send(message)
                assert await asyncio.wait_for(ws.recv(), 5) == message
            # several in flight at once come back in order
            for i in range(20):
                await ws.send(f"burst-{i}")
            assert [await asyncio.wait_for(ws.recv(), 5) for _ in range(20)] == [f"burst-{i}" for i in range(20)]

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert s1.requests[-1].path == "/ws"
    assert (s1.requests[-1].header("Upgrade") or "").lower() == "websocket"


def test_tunnel_timeout_closes_an_idle_websocket(site, tagged):
    start(site, tagged, tunnel="1s")

    async def scenario() -> float:
        async with ws_connect(site) as ws:
            # traffic more often than the tunnel timeout keeps the tunnel open past it
            for i in range(6):
                if i:
                    await asyncio.sleep(0.3)
                await ws.send(f"tick-{i}")
                assert await asyncio.wait_for(ws.recv(), 5) == f"tick-{i}"
            idle_since = time.monotonic()  # the last traffic
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 8)
            return time.monotonic() - idle_since

    idle = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert 0.7 < idle < 5, idle
