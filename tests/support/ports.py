"""Free TCP ports on 127.0.0.1 for configs that must name a port before a process binds it."""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["closed_port", "free_port", "free_ports"]

# Where picked ports come from when the ephemeral range leaves room below it.
LOWEST = 10000
ATTEMPTS = 200


def _ephemeral_start() -> int:
    """The first port the kernel hands out to connect() and bind(0) (Linux; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port that was free a moment ago, below the kernel's ephemeral range when there is
    room there: a port in that range (what bind(0) gives) may be taken by any outgoing
    connection of the machine before the process that was meant to bind it does (a CI run
    lost a test to that: "Address already in use" on a port picked a moment before). Below
    it, only another explicit bind can take it, and picks are spread at random.
    """
    start = _ephemeral_start()
    if start - LOWEST >= 1000:
        for _ in range(ATTEMPTS):
            port = random.randrange(LOWEST, start)
            if _bindable(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """`count` different ports, each picked as `free_port` picks one."""
    ports: list[int] = []
    for _ in range(ATTEMPTS):
        if len(ports) == count:
            break
        port = free_port()
        if port not in ports:
            ports.append(port)
    assert len(ports) == count, f"found only {len(ports)} of {count} free ports"
    return ports


def closed_port() -> int:
    """A port nothing listens on: connecting to it is refused (for 'dead server' configs)."""
    return free_port()
