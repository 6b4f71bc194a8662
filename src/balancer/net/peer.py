"""The client's address as logs, rules and X-Forwarded-For should see it."""

from __future__ import annotations

import asyncio
from typing import cast

from balancer.net.plain_transport import PlainTransport
from balancer.proto.proxy import build_v1, build_v2


def client_address(transport: asyncio.BaseTransport) -> tuple[str, int]:
    """(ip, port) of the peer; ("unix", 0) on a unix socket.

    A dual-stack listener (":8080") reports IPv4 clients as "::ffff:a.b.c.d"; they are
    IPv4 clients, and `src` rules written with IPv4 networks must match them.
    """
    if isinstance(transport, PlainTransport):
        # Ours, compiled: its attribute read directly (get_extra_info by name: ~500
        # instructions of every connection).
        peer = cast(PlainTransport, transport).peer
    else:
        peer = transport.get_extra_info("peername")
    if not isinstance(peer, tuple):
        return ("unix", 0)
    # Already a str and an int from accept: converted only if not (compiled, str() and
    # int() are generic calls, ~300 instructions of every connection).
    host, port = peer[0], peer[1]
    ip = host if isinstance(host, str) else str(host)
    if ip.startswith("::ffff:") and "." in ip:
        ip = ip[7:]
    return (ip, port if isinstance(port, int) else int(port))


def local_address(transport: asyncio.BaseTransport) -> str:
    """ "ip:port" the client connected to (for the 5-tuple hash key)."""
    name = transport.get_extra_info("sockname")
    if isinstance(name, tuple):
        return f"{name[0]}:{name[1]}"
    return str(name or "")


def proxy_header(version: str, client: tuple[str, int], transport: asyncio.BaseTransport | None) -> bytes:
    """The PROXY header (`version` "v1" or "v2") naming `client` and the address it reached."""
    dest_ip, dest_port = "", 0
    name = transport.get_extra_info("sockname") if transport is not None else None
    if isinstance(name, tuple):
        dest_ip, dest_port = str(name[0]), int(name[1])
        if dest_ip.startswith("::ffff:") and "." in dest_ip:
            dest_ip = dest_ip[7:]
    build = build_v1 if version == "v1" else build_v2
    return build(client[0], client[1], dest_ip, dest_port)
