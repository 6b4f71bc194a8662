"""The socket calls of our own transports (net.plain_transport, net.plain_connect, net.linger, net.acceptor),
on descriptors: a connection is its descriptor, not a socket object; and `bytes_of`, which
copies a read of the loop's transports out of the buffer it went into (net.upstream).

Each call never waits, and says "nothing now" as a value (None, or 0 bytes sent) rather
than BlockingIOError. net/_nowait.c makes them when it is built (why, there); a build
without C (BALANCER_PURE=1) makes them here with os and socket, which raise and catch.
Accepted descriptors are non-blocking and close-on-exec. Errors raise OSError.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
from collections.abc import Iterator
from typing import Any, Final

Buffer = bytes | bytearray | memoryview

try:
    from balancer.net import _nowait
except ImportError:  # a build without C
    _nowait = None  # type: ignore[assignment]
NATIVE: Final = _nowait is not None
# The C functions themselves, bound once: compiled, a module global and its attribute are
# two dict lookups per call, on every read and write of a connection.
_accept: Final = _nowait.accept if _nowait is not None else None
_recv: Final = _nowait.recv if _nowait is not None else None
_recv_into: Final = _nowait.recv_into if _nowait is not None else None
_bytes_of: Final = _nowait.bytes_of if _nowait is not None else None
_send: Final = _nowait.send if _nowait is not None else None
_shutdown_write: Final = _nowait.shutdown_write if _nowait is not None else None
_getsockname: Final = _nowait.getsockname if _nowait is not None else None
_drain: Final = _nowait.drain if _nowait is not None else None
_close: Final = _nowait.close if _nowait is not None else None
_connect: Final = _nowait.connect if _nowait is not None else None
_socket_error: Final = _nowait.socket_error if _nowait is not None else None
_epoll_watch: Final = _nowait.epoll_watch if _nowait is not None else None
_epoll_forget: Final = _nowait.epoll_forget if _nowait is not None else None
_epoll_ready: Final = _nowait.epoll_ready if _nowait is not None else None
# The pure build's epoll sets, by descriptor (select.epoll owns each).
_EPOLLS: Final[dict[int, select.epoll]] = {}

DRAIN_SIZE: Final = 65536
DRAIN_READS: Final = 16  # per call (_nowait.c's too): then other connections get their turn


def accept(listening: socket.socket) -> tuple[int, Any] | None:
    """(descriptor, peer address) of a connection from the non-blocking `listening` socket;
    None when none waits. The connection has the listening socket's TCP options (Linux
    copies them, TCP_NODELAY included)."""
    if _accept is not None:
        return _accept(listening.fileno())
    try:
        fd, peer = listening._accept()  # `accept` adds interpreted Python
    except (BlockingIOError, InterruptedError):
        return None
    try:
        os.set_blocking(fd, False)
    except OSError:
        os.close(fd)
        raise
    return fd, peer


def recv(fd: int, size: int) -> bytes | None:
    """At most `size` bytes; b"" at the end of stream, None when nothing waits."""
    if _recv is not None:
        return _recv(fd, size)
    try:
        return os.read(fd, size)
    except (BlockingIOError, InterruptedError):
        return None


def recv_into(fd: int, buffer: Buffer) -> int | None:
    """Into `buffer`: how many bytes (0 at the end of stream); None when nothing waits."""
    if _recv_into is not None:
        return _recv_into(fd, buffer)
    try:
        return os.readv(fd, [buffer])
    except (BlockingIOError, InterruptedError):
        return None


def bytes_of(buffer: Buffer, size: int) -> bytes:
    """The first `size` bytes of `buffer` (0 <= size <= its length), copied out."""
    if _bytes_of is not None:
        return _bytes_of(buffer, size)
    view = memoryview(buffer)
    if not 0 <= size <= view.nbytes:
        raise ValueError("size outside the buffer")
    return view[:size].tobytes()


def send(fd: int, data: Buffer, more: bool = False) -> int:
    """How many bytes of `data` the kernel took (0: none). `more`: a close or shutdown
    follows at once, and its end of stream may leave in the data's last segment (MSG_MORE,
    see net/_nowait.c)."""
    if _send is not None:
        return _send(fd, data, more)
    try:
        if more:
            with _borrowed(fd) as borrowed:
                return borrowed.send(data, socket.MSG_MORE | socket.MSG_DONTWAIT)
        return os.write(fd, data)
    except (BlockingIOError, InterruptedError):
        return 0


def shutdown_write(fd: int) -> None:
    if _shutdown_write is not None:
        _shutdown_write(fd)
        return
    with _borrowed(fd) as borrowed:
        borrowed.shutdown(socket.SHUT_WR)


def getsockname(fd: int) -> Any:
    """The local address, as socket.getsockname gives it."""
    if _getsockname is not None:
        return _getsockname(fd)
    with _borrowed(fd) as borrowed:
        return borrowed.getsockname()


def close_descriptor(fd: int) -> None:
    """Close the descriptor (in C without releasing the GIL: a socket's close never waits)."""
    if _close is not None:
        _close(fd)
        return
    os.close(fd)


def drain(fd: int) -> int:
    """Read and discard what waits: how many bytes (0: nothing waited), or -1 once the
    stream is over (the end of stream, or an error)."""
    if _drain is not None:
        return _drain(fd)
    total = 0
    for _ in range(DRAIN_READS):
        try:
            got = len(os.read(fd, DRAIN_SIZE))
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            return -1
        if not got:
            return -1
        total += got
    return total


def connect(host: str, port: int) -> tuple[int, bool]:
    """(descriptor, connected): a non-blocking TCP socket with TCP_NODELAY connecting to
    the numeric address `host` (ValueError when it is not one) and `port`; `connected`
    False while the connect goes on (writable once it ends: `socket_error` tells how)."""
    if _connect is not None:
        return _connect(host, port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.inet_pton(family, host)
    except OSError:
        raise ValueError(f"connect(): {host} is not a numeric address") from None
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        error = sock.connect_ex((host, port))
        if error == errno.EINPROGRESS:  # asked again, as _nowait.c does: mostly over by now
            error = sock.connect_ex((host, port))
            if error == errno.EISCONN:
                error = 0
            elif error == errno.EALREADY:
                error = errno.EINPROGRESS
        if error not in (0, errno.EINPROGRESS):
            raise OSError(error, os.strerror(error))
    except OSError:
        sock.close()
        raise
    return sock.detach(), error == 0


def socket_error(fd: int) -> int:
    """The socket's pending error (SO_ERROR): 0, or the errno of a failed connect."""
    if _socket_error is not None:
        return _socket_error(fd)
    with _borrowed(fd) as borrowed:
        return borrowed.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)


def epoll_create() -> int:
    """A new epoll set's descriptor (close-on-exec); closed by epoll_close."""
    if _nowait is not None:
        return _nowait.epoll_create()
    epoll = select.epoll()
    _EPOLLS[epoll.fileno()] = epoll
    return epoll.fileno()


def epoll_close(epfd: int) -> None:
    epoll = _EPOLLS.pop(epfd, None)
    if epoll is not None:
        epoll.close()
    else:
        os.close(epfd)


def epoll_watch(epfd: int, fd: int, writable: bool) -> None:
    """Watch `fd` for reading, or for writing when `writable` (level-triggered), in the
    set `epfd`."""
    if _epoll_watch is not None:
        _epoll_watch(epfd, fd, writable)
        return
    _EPOLLS[epfd].register(fd, select.EPOLLOUT if writable else select.EPOLLIN)


def epoll_forget(epfd: int, fd: int) -> None:
    """Stop watching `fd`; nothing if it is not watched (closed meanwhile)."""
    if _epoll_forget is not None:
        _epoll_forget(epfd, fd)
        return
    with contextlib.suppress(OSError):
        _EPOLLS[epfd].unregister(fd)


def epoll_ready(epfd: int, most: int) -> tuple[int, ...]:
    """The descriptors of the set ready now, at most `most`; never waits."""
    if _epoll_ready is not None:
        return _epoll_ready(epfd, most)
    return tuple(fd for fd, _ in _EPOLLS[epfd].poll(0, most))


@contextlib.contextmanager
def _borrowed(fd: int) -> Iterator[socket.socket]:
    """A socket object over `fd` for one call of the pure build; `fd` stays open."""
    borrowed = socket.socket(fileno=fd)
    try:
        yield borrowed
    finally:
        borrowed.detach()
