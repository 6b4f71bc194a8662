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
    preamble: bytes = b"",
) -> P:
    """Connect to `server` within `timeout` (0 = no limit); raises OSError or TimeoutError,
    without a traceback: it would hold the frames of the connect, whose futures hold the
    error, a cycle per failed connect left to the cyclic collector (callers use the error's
    kind and message only).

    `preamble` (a PROXY header) is sent in clear first, before any TLS handshake.
    """
    loop = asyncio.get_running_loop()
    address = server.address
    ssl_context, server_hostname = tls if tls is not None else (None, None)
    try:
        if address.is_unix:
            connecting = loop.create_unix_connection(
                factory, address.path, ssl=ssl_context, server_hostname=server_hostname
            )
            _, protocol = await asyncio.wait_for(connecting, timeout or None)
        elif source is None and not preamble:
            connecting_tcp = loop.create_connection(
                factory, server.host, server.port, ssl=ssl_context, server_hostname=server_hostname
            )
            _, protocol = await asyncio.wait_for(connecting_tcp, timeout or None)
            return protocol
        else:
            return await asyncio.wait_for(
                _by_hand(factory, server, source, ssl_context, server_hostname, preamble), timeout or None
            )
    except (OSError, TimeoutError) as exc:
        raise exc.with_traceback(None) from None
    if preamble:
        transport = getattr(protocol, "transport", None)
        if transport is not None:
            transport.write(preamble)
    return protocol


async def _by_hand(
    factory: Callable[[], P],
    server: ServerRuntime,
    source: str | None,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None,
    preamble: bytes,
) -> P:
    """Connect a socket ourselves: to bind a source address first, or to send a preamble
    in clear before handing the socket to (TLS) transport code."""
    loop = asyncio.get_running_loop()
    family = 0
    if source is not None:
        family = socket.AF_INET6 if ":" in source else socket.AF_INET
    infos = await loop.getaddrinfo(server.host, server.port, family=family, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"no address for {server.host}")
    family, _, _, _, target = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if source is not None:
            if family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
        await loop.sock_connect(sock, target)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if preamble:
            await loop.sock_sendall(sock, preamble)
        _, protocol = await loop.create_connection(factory, sock=sock, ssl=ssl_context, server_hostname=server_hostname)
    except BaseException:
        sock.close()
        raise
    return protocol
