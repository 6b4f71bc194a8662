"""Listening sockets on 127.0.0.1 for tests: one for an acceptor under test (net.acceptor's
kinds), and one whose connects never complete."""

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


class UnansweredListener:
    """A listening socket on 127.0.0.1 whose connects never complete: its accept queue
    (backlog 0) is held full by one connection nobody accepts, so the kernel drops
    further SYNs and a connect stays under way until its caller gives up."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(0)
        self.port = self._sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._filler.connect(self._sock.getsockname())

    def close(self) -> None:
        self._filler.close()
        self._sock.close()
