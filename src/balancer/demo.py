"""`balancer demo`: three small tagged web servers behind a balancer on 127.0.0.1:8080.

Each demo server answers every request with a short page naming itself, and a
`Server-Name` header, so a few reloads of the page (or `curl`) show round robin at work.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from pathlib import Path
from typing import cast

import httptools

from balancer.server import parse_runnable
from balancer.supervisor import Master

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
workers = 2
grace = "2s"
log = "stdout"

[admin]
socket = "{admin_socket}"

[stats]
bind = "127.0.0.1:{stats_port}"
uri = "/stats"
auth = {{ user = "admin", password = "{password}" }}
refresh = "2s"

[[frontend]]
name = "www"
bind = ["127.0.0.1:{port}"]
default_backend = "demo"

[[backend]]
name = "demo"
balance = "roundrobin"
check = {{ type = "http", path = "/", interval = "2s" }}
{servers}
"""


async def _demo(port: int, stats_port: int, folder: Path) -> int:
    """The demo servers run here; the balancer is the real one: a master and its workers,
    started from a config file written to `folder`."""
    loop = asyncio.get_running_loop()
    servers = []
    lines = []
    for name in DEMO_SERVERS:
        server = await loop.create_server(lambda n=name: DemoServer(n), "127.0.0.1", 0)  # type: ignore[misc]
        servers.append(server)
        server_port = server.sockets[0].getsockname()[1]
        lines.append(f'[[backend.server]]\nname = "{name}"\naddress = "127.0.0.1:{server_port}"\n')
    password = secrets.token_urlsafe(9)
    text = DEMO_CONFIG.format(
        port=port,
        stats_port=stats_port,
        password=password,
        admin_socket=folder / "admin.sock",
        servers="\n".join(lines),
    )
    path = folder / "demo.toml"
    path.write_text(text)
    master = Master(path, text, parse_runnable(text, str(path)))
    running = loop.create_task(master.run())
    while not master.started and not running.done():
        await asyncio.sleep(0.05)
    if master.started:
        print(f"balancer demo: http://127.0.0.1:{port}/  (three servers: {', '.join(DEMO_SERVERS)})")
        print(f"  stats page:  http://127.0.0.1:{stats_port}/stats  user admin, password {password}")
        print(f"  try: curl -si http://127.0.0.1:{port}/ | grep Server-Name   (repeat to see round robin)")
        print(f"       balancer ctl --socket {folder / 'admin.sock'} show servers")
        print(f"  config: {path}")
        print("  Ctrl-C stops everything.", flush=True)
    code = await running
    for server in servers:
        server.close()
    print("balancer demo: stopped")
    return code


def run_demo(port: int = 8080, stats_port: int = 8404) -> int:
    import uvloop

    from balancer.stats.eventlog import setup_event_log

    setup_event_log()
    with tempfile.TemporaryDirectory(prefix="balancer-demo-") as folder:
        return int(uvloop.run(_demo(port, stats_port, Path(folder))))
