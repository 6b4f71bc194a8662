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
read: it comes back empty-handed for nearly every connection, which is then closed at once.
"""

from __future__ import annotations

import _socket
import asyncio
import socket
from typing import Final

DONTWAIT: Final = socket.MSG_DONTWAIT
DRAIN_SIZE: Final = 65536
DRAINS_PER_EVENT: Final = 16  # then other connections get their turn
# The longest a closed connection is drained (NGINX's lingering_timeout, 5 s): a client that
# sends for longer, or sends nothing and keeps its end open, is then closed regardless.
LINGER_SECONDS: Final = 5.0


def close_lingering(loop: asyncio.AbstractEventLoop, sock: _socket.socket) -> None:
    """Close `sock`, a client connection whose answer was handed to the kernel but whose end
    of stream was not read: at once if nothing more came from the client, else after
    draining it (see the module's docstring). The caller has forgotten the socket's
    descriptor in `loop` already; `sock` may be blocking (every read passes MSG_DONTWAIT)."""
    try:
        if not sock.recv(DRAIN_SIZE, DONTWAIT):
            sock.close()  # the client's end of stream: nothing to drain
            return
    except OSError:  # BlockingIOError: nothing came (the usual case); or the client is gone
        sock.close()
        return
    Lingering(loop, sock)


class Lingering:
    """A closed connection being drained: half-closed (the client reads the whole answer
    and its end), read and discarded until the client's end of stream, then closed; closed
    after LINGER_SECONDS at the latest."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: _socket.socket) -> None:
        self.loop = loop
        self.sock = sock
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the client is gone
            sock.close()
            return
        loop.add_reader(sock.fileno(), self.drain)
        self.deadline = loop.call_later(LINGER_SECONDS, self.close)

    def drain(self) -> None:
        for _ in range(DRAINS_PER_EVENT):
            try:
                if not self.sock.recv(DRAIN_SIZE, DONTWAIT):
                    break  # the client's end of stream
            except (BlockingIOError, InterruptedError):
                return  # told again when more comes
            except OSError:
                break
        else:
            return  # a fast sender: the rest is read on the next pass
        self.close()

    def close(self) -> None:
        if self.sock.fileno() == -1:
            return
        self.deadline.cancel()
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
