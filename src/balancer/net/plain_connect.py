"""A plain TCP connection to a server on the descriptor itself, as client connections are.

The loop's `create_connection` makes a socket object, resolves the address, registers the
descriptor with epoll to learn the connect's end (libuv: four system calls in, two out),
then gives a TCPTransport that asks for both addresses (getsockname, getpeername) and
registers the descriptor again to read: ~30k instructions and a dozen system calls beyond
socket, connect and the reads and writes. The L4 relay pays that once per client
connection. Here a server at a numeric address is connected with one C call (socket,
TCP_NODELAY, connect, and connect again: to a server on this host the handshake is over by
then), waits for the connect in the poller's writable set only if it is still under way
(one epoll_ctl in, one out, SO_ERROR), and becomes a net.plain_transport.PlainTransport.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable

from balancer.net.plain_transport import PlainTransport
from balancer.net.poller import Poller
from balancer.net.socket_calls import close_descriptor, connect, socket_error


class PlainConnect:
    """Connects to `host` (a numeric IPv4 or IPv6 address) and `port`; once connected,
    `protocol` gets a PlainTransport over the connection (its connection_made, then its
    data_received and the rest, as from the loop's transports). A connect that fails
    after the call returned is told to `failed`; one that fails at once raises OSError
    from the constructor. `abandon` stops a connect under way."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        poller: Poller,
        host: str,
        port: int,
        protocol: asyncio.BaseProtocol,
        failed: Callable[[OSError], None],
    ) -> None:
        self.loop = loop
        self.poller = poller
        self.peer = (host, port)
        self.protocol = protocol
        self.failed = failed
        self.fd = -1  # while the connect goes on
        fd, connected = connect(host, port)
        if connected:
            self._made(fd)
            return
        self.fd = fd
        poller.attach()  # the poller stays open while this waits in it
        poller.add_writer(fd, self._writable)

    def _writable(self) -> None:
        fd = self.fd
        self.fd = -1
        self.poller.remove_writer(fd)
        try:
            error = socket_error(fd)
        except OSError as exc:
            error = exc.errno or errno.EIO
        if error:
            close_descriptor(fd)
        else:
            self._made(fd)
        self.poller.detach()  # after the transport attached: the poller must not close between
        if error:
            self.failed(OSError(error, os.strerror(error)))

    def _made(self, fd: int) -> None:
        # The server speaks when spoken to, mostly: no read before the first poll.
        PlainTransport(self.loop, self.poller, fd, self.peer, None, self.protocol, read_now=False)

    def abandon(self) -> None:
        """Stop the connect if it is still under way (nothing is told)."""
        fd = self.fd
        if fd >= 0:
            self.fd = -1
            self.poller.forget_closed(fd)
            close_descriptor(fd)
            self.poller.detach()
