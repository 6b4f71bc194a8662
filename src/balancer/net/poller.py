"""Connections waiting to read or to write, watched in epoll sets of our own.

uvloop's `add_reader` costs a descriptor four system calls (libuv probes it with an epoll add
and delete, sets it non-blocking, then adds it) and `remove_reader` one or two more; its
`add_writer` the same. Under load most new connections are accepted before their request
arrives: with wrk's 64 `Connection: close` clients, 83% of first reads found nothing, and
each such connection paid 5 epoll_ctl and an ioctl (`perf stat -e syscalls:sys_enter_*` on
the worker), where HAProxy pays one epoll_ctl at most. An L4 relay's connection to its
server waits twice: to be connected (writable), then for the server's bytes. Here a
waiting descriptor costs one epoll_ctl to be watched and one to be dropped, and the loop
watches each set as one descriptor: one epoll_wait per loop pass in which any of them is
ready (net.socket_calls; in C they keep the GIL, which select.epoll releases and takes back
at each call).

A `Poller` has two sets, one for reading and one for writing (made when first wanted), so
a descriptor can wait for both without an EPOLL_CTL_MOD at each change. Both are
level-triggered, as the loop's readers and writers are: a callback that leaves the
descriptor ready is called again in the next pass. A callback's exception is logged and
ends no other connection's turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from balancer.net.socket_calls import epoll_close, epoll_create, epoll_forget, epoll_ready, epoll_watch

log = logging.getLogger(__name__)

# Ready descriptors taken per pass; more wait for the next pass (the set stays ready).
MAX_EVENTS: Final = 256


class _WatchSet:
    """One epoll set, watched by the loop as one descriptor: each member's callback is
    called while it is readable (or writable, for a `writable` set)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, writable: bool) -> None:
        self.loop = loop
        self.writable = writable
        self.epfd = epoll_create()
        self.callbacks: dict[int, Callable[[], None]] = {}
        self.closed = False
        loop.add_reader(self.epfd, self._ready)

    def add(self, fd: int, callback: Callable[[], None]) -> None:
        if fd not in self.callbacks:
            epoll_watch(self.epfd, fd, self.writable)
        self.callbacks[fd] = callback

    def remove(self, fd: int) -> None:
        if self.callbacks.pop(fd, None) is not None:
            epoll_forget(self.epfd, fd)

    def drop(self, fd: int) -> None:
        self.callbacks.pop(fd, None)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.epfd)
            epoll_close(self.epfd)

    def _ready(self) -> None:
        if self.closed:
            return
        callbacks = self.callbacks
        for fd in epoll_ready(self.epfd, MAX_EVENTS):
            callback = callbacks.get(fd)
            if callback is None:
                continue  # removed by an earlier callback of this pass
            try:
                callback()
            except Exception:  # one connection's bug is that connection's
                log.exception("serving a ready connection failed")


class Poller:
    """Calls each watched descriptor's callback when it is readable (`add_reader`) or
    writable (`add_writer`), from the loop it was made in. A descriptor must be removed
    before it is handed to another watcher, and forgotten (`forget_closed`) as it is
    closed (the close drops it from the sets, but not its callbacks here). The connections
    that may use the sets are counted (`attach`, `detach`): once `retire`d, the sets are
    closed with the last of them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.reading = _WatchSet(loop, writable=False)
        self.writing: _WatchSet | None = None  # made when a descriptor first waits to write
        self.connections = 0
        self.retired = False
        self.closed = False

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        """Call `callback` while `fd` is readable (a second call replaces the callback)."""
        self.reading.add(fd, callback)

    def remove_reader(self, fd: int) -> None:
        """Stop watching `fd` for reading (nothing if it is not watched)."""
        self.reading.remove(fd)

    def add_writer(self, fd: int, callback: Callable[[], None]) -> None:
        """Call `callback` while `fd` is writable (a second call replaces the callback)."""
        writing = self.writing
        if writing is None:
            writing = self.writing = _WatchSet(self.loop, writable=True)
        writing.add(fd, callback)

    def remove_writer(self, fd: int) -> None:
        """Stop watching `fd` for writing (nothing if it is not watched)."""
        if self.writing is not None:
            self.writing.remove(fd)

    def forget_closed(self, fd: int) -> None:
        """Forget `fd`, which the caller closes now and has no other descriptor of: the
        close takes it out of the epoll sets (no epoll_ctl for it)."""
        self.reading.drop(fd)
        if self.writing is not None:
            self.writing.drop(fd)

    def attach(self) -> None:
        self.connections += 1

    def detach(self) -> None:
        self.connections -= 1
        if self.retired and not self.connections:
            self._close()

    def retire(self) -> None:
        """No connection comes any more (its acceptor is closed)."""
        self.retired = True
        if not self.connections:
            self._close()

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self.reading.close()
            if self.writing is not None:
                self.writing.close()
