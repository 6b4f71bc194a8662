"""Closing a client connection without destroying the answer it has not read yet.

A socket closed while bytes it received are still unread makes the kernel answer with a
reset instead of an end of stream (RFC 1122 4.2.2.13), and throw away what it had not sent;
a reset reaching the client before it read the answer makes the client's kernel drop that
answer too. It happens whenever a client sent more than was read: a request after one that
asked to close the connection (a session stops reading after the last request), a body
after a refused head, a pipeline cut by an error. NGINX calls the cure "lingering close"
(`lingering_close`): when the client may still be sending, half-close, read and discard
until the client's end of stream, for a bounded time, and only then close.

`close_lingering` costs one non-blocking read where the client's end of stream was not
read: it finds nothing for nearly every connection, which is then closed at once (its
descriptor forgotten by the transport's poller without an epoll_ctl: the close takes it
out of the epoll sets). Only a connection that must linger leaves the poller, for the
loop's watch.
"""

from __future__ import annotations

import asyncio
from typing import Final

from balancer.net.poller import Poller
from balancer.net.socket_calls import close_descriptor, drain, shutdown_write

# The longest a closed connection is drained (NGINX's lingering_timeout, 5 s): a client that
# sends for longer, or sends nothing and keeps its end open, is then closed regardless.
LINGER_SECONDS: Final = 5.0


def close_at_once(poller: Poller, fd: int) -> None:
    """Close `fd`, a connection watched in `poller` or not: the close takes it out of the
    epoll sets (its only reference), so the poller only forgets its callbacks, without an
    epoll_ctl (HAProxy's way too). The caller gives the descriptor up."""
    poller.forget_closed(fd)
    close_descriptor(fd)


def close_lingering(loop: asyncio.AbstractEventLoop, poller: Poller, fd: int) -> None:
    """Close `fd`, a client connection (watched in `poller` or not) whose answer was handed
    to the kernel but whose end of stream was not read: at once if nothing more came from
    the client, else after draining it (see the module's docstring). Closed at once, it is
    only forgotten by the poller: the close takes it out of the epoll sets. The caller
    gives the descriptor up."""
    if drain(fd) <= 0:  # nothing came (the usual case), or the client's stream is over
        close_at_once(poller, fd)
        return
    poller.remove_reader(fd)  # the loop watches it now
    poller.remove_writer(fd)
    Lingering(loop, fd)


class Lingering:
    """A closed connection being drained: half-closed (the client reads the whole answer
    and its end), read and discarded until the client's end of stream, then closed; closed
    after LINGER_SECONDS at the latest."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self.loop = loop
        self.fd = fd
        try:
            shutdown_write(fd)
        except OSError:  # the client is gone
            close_descriptor(fd)
            self.fd = -1
            return
        loop.add_reader(fd, self.readable)
        self.deadline = loop.call_later(LINGER_SECONDS, self.close)

    def readable(self) -> None:
        if drain(self.fd) < 0:
            self.close()
        # else told again when more comes (what was left unread still counts: level-triggered)

    def close(self) -> None:
        if self.fd == -1:
            return
        self.deadline.cancel()
        self.loop.remove_reader(self.fd)
        close_descriptor(self.fd)
        self.fd = -1
