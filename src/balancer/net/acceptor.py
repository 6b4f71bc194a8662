"""Accepting connections from a listening socket, for transports of our own.

What `loop.create_server` does for the loop's transports, for net.plain_transport and
net.tls_transport: the listening socket is polled, up to ACCEPTS_PER_EVENT connections are
taken per wake-up, and running out of descriptors pauses accepting a while (the queue waits
in the kernel) instead of spinning. Each accepted descriptor goes to `accepted`.

Every wake-up's loop ends on an empty queue, which net.socket_calls `accept` says with
None (socket._accept raises BlockingIOError: an exception made and caught per wake-up).

An acceptor's connections wait to read or write in its Poller (net.poller), which outlives
the acceptor until the last of them is done.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from typing import Any, Final

from balancer.net.poller import Poller
from balancer.net.socket_calls import accept

log = logging.getLogger(__name__)

ACCEPTS_PER_EVENT: Final = 64
ACCEPT_RETRY_DELAY: Final = 1.0  # out of descriptors: accepting pauses this long (as asyncio does)


class Acceptor:
    """Accepts from `sock` (listening, non-blocking; closed by `close`) until closed."""

    def __init__(self, sock: socket.socket) -> None:
        self.loop = asyncio.get_running_loop()
        self.sock = sock
        self.fd = sock.fileno()
        # As ints, once: `socket.accept` converts them to enums per connection.
        self.family = int(sock.family)
        self.type = int(sock.type)
        self.proto = sock.proto
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # Set once here, not on each connection: Linux copies a listening socket's TCP
            # options to the connections it accepts (a system call fewer per connection).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.closed = False
        self.retry: asyncio.TimerHandle | None = None
        self.poller = Poller(self.loop)  # where its connections wait to read or write
        self.loop.add_reader(self.fd, self._accept)

    def accepted(self, fd: int, peer: Any) -> None:
        """Serve the connection on descriptor `fd` (non-blocking, close-on-exec, TCP_NODELAY
        from a TCP listener) from `peer`."""
        raise NotImplementedError

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_EVENT):
            try:
                connection = accept(self.sock)
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors or memory: the queue waits in the kernel a while.
                    log.warning("accepting on %s paused for %gs: %s", self.sock.getsockname(), ACCEPT_RETRY_DELAY, exc)
                    self.loop.remove_reader(self.fd)
                    self.retry = self.loop.call_later(ACCEPT_RETRY_DELAY, self._resume)
                return  # ECONNABORTED and the like: that connection is gone, the next event comes
            if connection is None:
                return  # the queue is empty
            fd, peer = connection
            self.accepted(fd, peer)  # not accepted(*connection): a call by name, ~500 instructions

    def _resume(self) -> None:
        self.retry = None
        if not self.closed:
            self.loop.add_reader(self.fd, self._accept)

    def close(self) -> None:
        """Stop accepting and close the listening socket (connections go on)."""
        if self.closed:
            return
        self.closed = True
        if self.retry is not None:
            self.retry.cancel()
        else:
            self.loop.remove_reader(self.fd)
        self.sock.close()
        self.poller.retire()  # the connections go on: closed once the last is done
