"""A listening socket on 127.0.0.1 for an acceptor under test (net.acceptor's kinds)."""

from __future__ import annotations

import socket


def listening_socket() -> socket.socket:
    """Bound to a port the kernel picks (it stays bound: no race for it), listening,
    non-blocking, as a worker's listening sockets are."""
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(128)
    listening.setblocking(False)
    return listening
