"""TLS sessions kept in memory every worker of a master shares, for `tls.tickets = false`.

With session tickets off (Mozilla's HAProxy configurations turn them off), a session is
resumed from the server's session cache: by its id in TLS 1.2, by a ticket that only names
it in TLS 1.3. OpenSSL's cache lives in one process, so with several workers a returning
client resumed only when the kernel handed it to the worker that made its session, and no
session outlived a reload. Here the master makes one cache of `global.tls_session_cache`
sessions (HAProxy's `tune.ssl.cachesize`, shared by its processes the same way) in a memfd,
hands its descriptor to every worker it starts (BALANCER_TLS_SESSIONS_FD), and keeps it
across reloads; net/_tls.c's SessionCache reads and writes it (layout and locking there).
Its pages are only resident once sessions are written to them: 1 KiB a session.

With tickets on (the default) the ticket itself carries the session, under keys the
workers share (net.ticket_keys): no cache is needed, and none is given to the contexts.
Python's `ssl` (a build without net/_tls.c) cannot use an outside cache: there each worker
keeps its own.
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Any, Final

try:
    from balancer.net import _tls
except ImportError:  # not built: Python's ssl keeps each worker's own cache
    _tls = None  # type: ignore[assignment]

ENV_FD: Final = "BALANCER_TLS_SESSIONS_FD"


def create(sessions: int) -> int | None:
    """A new cache for `sessions` sessions (rounded up to a whole set of slots): its memfd,
    for the master to keep and pass to its workers; None when there is none to make (0
    sessions, or no net/_tls.c)."""
    if _tls is None or sessions <= 0:
        return None
    ways = _tls.CACHE_WAYS
    slots = -(-sessions // ways) * ways
    size = _tls.CACHE_HEADER_SIZE + slots * _tls.CACHE_SLOT_SIZE
    fd = os.memfd_create("balancer-tls-sessions")  # close-on-exec: handed to workers explicitly
    try:
        os.ftruncate(fd, size)
        with mmap.mmap(fd, _tls.CACHE_HEADER_SIZE) as header:
            salt = int.from_bytes(os.urandom(8), "little")
            struct.pack_into("<IIIIQ", header, 0, _tls.CACHE_MAGIC, _tls.CACHE_SLOT_SIZE, slots, 0, salt)
    except OSError:
        os.close(fd)
        raise
    return fd


class MasterCache:
    """The master's cache, kept across reloads: made again only when its size changes
    (the workers of an older generation keep their mapping of the one before)."""

    def __init__(self) -> None:
        self.sessions = 0
        self.fd: int | None = None

    def for_config(self, sessions: int) -> int | None:
        """The descriptor to hand to workers of a config asking for `sessions`, or None."""
        if sessions != self.sessions:
            self.close()
            self.fd = create(sessions)
            self.sessions = sessions
        return self.fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.fd = None
        self.sessions = 0


# This worker's cache from its master, when it has one (received at start).
_from_master: Any = None


def receive_from_master() -> None:
    """Map the cache the master passed (ENV_FD), once, at a worker's start; nothing if there
    is none (a process run without a master, a master without net/_tls.c)."""
    global _from_master
    fd_text = os.environ.pop(ENV_FD, "")
    if not fd_text or _tls is None:
        return
    fd = int(fd_text)
    try:
        memory = mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    _from_master = _tls.SessionCache(memory)


def from_master() -> Any:
    """The cache the master passed to this worker (a net/_tls.c SessionCache), or None."""
    return _from_master
