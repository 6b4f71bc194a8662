"""What a test process holds open, to check that what a test opened is closed again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path


def open_sockets_and_epolls() -> list[str]:
    """What this process has open of sockets and epoll sets (other descriptors come and go
    with libraries: OpenSSL opens /dev/null once, for one)."""
    names = []
    for fd in list(Path("/proc/self/fd").iterdir()):
        with contextlib.suppress(FileNotFoundError):  # the listing's own descriptor, closed by now
            name = os.readlink(fd)
            if name.startswith(("socket:", "anon_inode:[eventpoll]")):
                names.append(name)
    return sorted(names)


def open_sockets() -> int:
    """How many sockets this process has open (an acceptor's epoll sets come and go with
    its connections' needs: a set for writing is made when a connection first waits)."""
    return sum(1 for name in open_sockets_and_epolls() if name.startswith("socket:"))


async def open_sockets_once_down_to(count: int, seconds: float = 5.0) -> int:
    """How many sockets this process has open once they are down to `count`, or after
    `seconds` if they never come down (polled every 10 ms): for a test that waits for the
    other end of a connection to close its socket."""
    deadline = time.monotonic() + seconds
    while (now := open_sockets()) > count and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return now
