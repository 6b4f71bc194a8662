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
read: it finds nothing for nearly every connection, which is then closed at once (and
net/_nowait.c says "nothing" without the exception socket.recv raises).
"""

from __future__ import annotations

import _socket
import asyncio
import socket
from collections.abc import Callable
from typing import Final

try:
    from balancer.net import _nowait
except ImportError:  # a build without C
    _nowait = None  # type: ignore[assignment]
_drain_c: Final[Callable[[int], int] | None] = _nowait.drain if _nowait is not None else None

DRAIN_SIZE: Final = 65536
DRAIN_READS: Final = 16  # per wake-up (_nowait.c's too): then other connections get their turn
# The longest a closed connection is drained (NGINX's lingering_timeout, 5 s): a client that
# sends for longer, or sends nothing and keeps its end open, is then closed regardless.
LINGER_SECONDS: Final = 5.0


def drain(sock: _socket.socket) -> int:
    """Read and discard what waits on `sock` (never waiting); how many bytes (0: nothing
    waited), or -1 once the client's stream is over (its end, or an error)."""
    if _drain_c is not None:
        return _drain_c(sock.fileno())
    total = 0
    for _ in range(DRAIN_READS):
        try:
            got = len(sock.recv(DRAIN_SIZE, socket.MSG_DONTWAIT))
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            return -1
        if not got:
            return -1
        total += got
    return total


def close_lingering(loop: asyncio.AbstractEventLoop, sock: _socket.socket) -> None:
    """Close `sock`, a client connection whose answer was handed to the kernel but whose end
    of stream was not read: at once if nothing more came from the client, else after
    draining it (see the module's docstring). The caller has forgotten the socket's
    descriptor in `loop` already; `sock` may be blocking (no read waits)."""
    if drain(sock) <= 0:
        sock.close()  # nothing came (the usual case), or the client's stream is over
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
        loop.add_reader(sock.fileno(), self.readable)
        self.deadline = loop.call_later(LINGER_SECONDS, self.close)

    def readable(self) -> None:
        if drain(self.sock) < 0:
            self.close()
        # else told again when more comes (what was left unread still counts: level-triggered)

    def close(self) -> None:
        if self.sock.fileno() == -1:
            return
        self.deadline.cancel()
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
