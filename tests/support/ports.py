"""Free TCP ports on 127.0.0.1 for configs that must name a port before a process binds it."""

from __future__ import annotations

import socket

__all__ = ["closed_port", "free_port"]


def free_port() -> int:
    """A port that was free a moment ago (bind 127.0.0.1:0, read the port, close).

    There is a small race between this call and the process that binds the port; tests
    accept it, as every test suite that starts real processes does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port() -> int:
    """A port nothing listens on: connecting to it is refused (for 'dead server' configs)."""
    return free_port()
