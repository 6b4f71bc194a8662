"""Client connections waiting for bytes, watched in one epoll set of our own.

uvloop's `add_reader` costs a descriptor four system calls (libuv probes it with an epoll add
and delete, sets it non-blocking, then adds it) and `remove_reader` one or two more. Under
load most new connections are accepted before their request arrives: with wrk's 64
`Connection: close` clients, 83% of first reads found nothing, and each such connection paid
5 epoll_ctl and an ioctl (`perf stat -e syscalls:sys_enter_*` on the worker), where HAProxy
pays one epoll_ctl at most. Here a waiting connection costs one epoll_ctl to be watched and
one to be dropped, and the loop watches the whole set as one descriptor: one epoll_wait per
loop pass in which any of them is readable (net.socket_calls; in C they keep the GIL, which
select.epoll releases and takes back at each call).

`ReadPoller` is level-triggered, as the loop's readers are: a callback that leaves bytes
unread is called again in the next pass. A callback's exception is logged and ends no
other connection's turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from balancer.net.socket_calls import epoll_close, epoll_create, epoll_forget, epoll_ready, epoll_watch

log = logging.getLogger(__name__)

# Ready descriptors taken per pass; more wait for the next pass (the set stays readable).
MAX_EVENTS: Final = 256


class ReadPoller:
    """Calls each watched descriptor's callback when it is readable, from the loop it was
    made in. A descriptor must be removed before it is closed or handed to another watcher
    (closing it would drop it from the set, but not its callback here). The connections
    that may use the set are counted (`attach`, `detach`): once `retire`d, the set is
    closed with the last of them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.epfd = epoll_create()
        self.readers: dict[int, Callable[[], None]] = {}
        self.connections = 0
        self.retired = False
        self.closed = False
        loop.add_reader(self.epfd, self._ready)

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        """Call `callback` while `fd` is readable (a second call replaces the callback)."""
        if fd not in self.readers:
            epoll_watch(self.epfd, fd)
        self.readers[fd] = callback

    def remove_reader(self, fd: int) -> None:
        """Stop watching `fd` (nothing if it is not watched)."""
        if self.readers.pop(fd, None) is not None:
            epoll_forget(self.epfd, fd)

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
            self.loop.remove_reader(self.epfd)
            epoll_close(self.epfd)

    def _ready(self) -> None:
        if self.closed:
            return
        readers = self.readers
        for fd in epoll_ready(self.epfd, MAX_EVENTS):
            callback = readers.get(fd)
            if callback is None:
                continue  # removed by an earlier callback of this pass
            try:
                callback()
            except Exception:  # one connection's bug is that connection's
                log.exception("reading a connection failed")
