"""`balancer demo`: three small tagged web servers behind a balancer on 127.0.0.1:8080.

Each demo server answers every request with a short page naming itself, and a
`Server-Name` header, so a few reloads of the page (or `curl`) show round robin at work.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import cast

import httptools

from balancer.config import parse_config
from balancer.server import Balancer

DEMO_SERVERS = ("s1", "s2", "s3")


class DemoServer(asyncio.Protocol):
    """A minimal keep-alive HTTP/1.1 server that tags its replies with its name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_message_complete(self) -> None:
        assert self.transport is not None
        body = (
            f"<!doctype html><title>{self.name}</title>"
            f"<h1>Hello from demo server {self.name}</h1>"
            f"<p>You asked for <code>{self.url.decode('latin-1')}</code>. Reload to be balanced.</p>\n"
        ).encode()
        keep_alive = self.parser.should_keep_alive()
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
            + f"Server-Name: {self.name}\r\nContent-Length: {len(body)}\r\n".encode()
            + (b"" if keep_alive else b"Connection: close\r\n")
            + b"\r\n"
        )
        self.transport.write(head + body)
        if not keep_alive:
            self.transport.close()


DEMO_CONFIG = """
[global]
grace = "2s"
log = "stdout"

[[frontend]]
name = "www"
bind = ["127.0.0.1:{port}"]
default_backend = "demo"

[[backend]]
name = "demo"
balance = "roundrobin"
{servers}
"""


async def _demo(port: int) -> int:
    loop = asyncio.get_running_loop()
    servers = []
    lines = []
    for name in DEMO_SERVERS:
        server = await loop.create_server(lambda n=name: DemoServer(n), "127.0.0.1", 0)  # type: ignore[misc]
        servers.append(server)
        server_port = server.sockets[0].getsockname()[1]
        lines.append(f'[[backend.server]]\nname = "{name}"\naddress = "127.0.0.1:{server_port}"\n')
    config = parse_config(DEMO_CONFIG.format(port=port, servers="\n".join(lines)), "<demo>")
    balancer = Balancer(config)
    try:
        await balancer.start()
    except OSError as exc:
        print(f"balancer demo: {exc}", file=sys.stderr)
        return 1
    print(f"balancer demo: http://127.0.0.1:{port}/  (three servers: {', '.join(DEMO_SERVERS)})")
    print(f"  try: curl -si http://127.0.0.1:{port}/ | grep Server-Name   (repeat to see round robin)")
    print("  Ctrl-C stops everything.", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await balancer.stop(grace=2.0)
    for server in servers:
        server.close()
    print("balancer demo: stopped")
    return 0


def run_demo(port: int = 8080) -> int:
    import uvloop

    from balancer.cli import setup_event_log

    setup_event_log()
    return int(uvloop.run(_demo(port)))
