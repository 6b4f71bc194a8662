"""Opening a connection to a server: TCP or unix, plain or TLS, from a chosen local address.

`source = [...]` on a backend spreads server connections over several local addresses,
in turn, so one balancer can hold more than the ~64k connections one (local address,
server) pair allows. The socket is bound with IP_BIND_ADDRESS_NO_PORT so the kernel picks
the port at connect time, per destination, instead of reserving one per bind.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import TypeVar

from balancer.runtime.state import ServerRuntime

P = TypeVar("P", bound=asyncio.BaseProtocol)

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


class SourceAddresses:
    """The backend's local addresses, handed out in turn."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses
        self._next = 0

    def take(self) -> str | None:
        if not self.addresses:
            return None
        address = self.addresses[self._next % len(self.addresses)]
        self._next += 1
        return address


async def open_server_connection(
    factory: Callable[[], P],
    server: ServerRuntime,
    timeout: float,
    tls: tuple[ssl.SSLContext, str] | None = None,
    source: str | None = None,
) -> P:
    """Connect to `server` within `timeout` (0 = no limit); raises OSError or TimeoutError."""
    loop = asyncio.get_running_loop()
    address = server.address
    if address.is_unix:
        connecting = loop.create_unix_connection(factory, address.path)
        _, protocol = await asyncio.wait_for(connecting, timeout or None)
        return protocol
    ssl_context, server_hostname = tls if tls is not None else (None, None)
    if source is None:
        connecting_tcp = loop.create_connection(
            factory,
            server.host,
            server.port,
            ssl=ssl_context,
            server_hostname=server_hostname,
        )
        _, protocol = await asyncio.wait_for(connecting_tcp, timeout or None)
        return protocol
    return await asyncio.wait_for(_from_source(factory, server, source, ssl_context, server_hostname), timeout or None)


async def _from_source(
    factory: Callable[[], P],
    server: ServerRuntime,
    source: str,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None,
) -> P:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    infos = await loop.getaddrinfo(server.host, server.port, family=family, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"no {family.name} address for {server.host}")
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
        await loop.sock_connect(sock, infos[0][4])
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _, protocol = await loop.create_connection(
            factory,
            sock=sock,
            ssl=ssl_context,
            server_hostname=server_hostname,
        )
    except BaseException:
        sock.close()
        raise
    return protocol
