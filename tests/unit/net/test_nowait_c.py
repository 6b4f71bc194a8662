"""net/_nowait.c: `accept` accepts as socket._accept does (the descriptor close-on-exec and
blocking, the peer's address in socket.accept's form for IPv4, IPv6 and Unix sockets, named,
unnamed and abstract), says None where socket._accept raises BlockingIOError, and raises
the same OSError otherwise; `drain` discards what waits on a connection, says 0 where
socket.recv would raise BlockingIOError, and -1 at the peer's end of stream or reset."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from balancer.net import acceptor

_nowait = acceptor._nowait
if _nowait is None:  # a BALANCER_PURE=1 build has no C module; CI builds it
    pytestmark = pytest.mark.skipif(
        os.environ.get("BALANCER_PURE") == "1", reason="built with BALANCER_PURE=1: no net/_nowait"
    )


@pytest.fixture
def listening_ipv4() -> Iterator[socket.socket]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock


def test_an_empty_queue_is_none_not_an_exception(listening_ipv4: socket.socket) -> None:
    assert _nowait is not None, "net/_nowait was not built (make native)"
    assert _nowait.accept(listening_ipv4.fileno()) is None
    with pytest.raises(BlockingIOError):
        listening_ipv4._accept()  # type: ignore[attr-defined]  # what the C call spares


def _check_accepted(fd: int) -> None:
    try:
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
    finally:
        os.close(fd)


def test_ipv4_peer_as_socket_accept_gives_it(listening_ipv4: socket.socket) -> None:
    assert _nowait is not None, "net/_nowait was not built (make native)"
    with socket.create_connection(listening_ipv4.getsockname()) as client:
        accepted = _nowait.accept(listening_ipv4.fileno())
        assert accepted is not None
        fd, peer = accepted
        assert peer == client.getsockname()
        _check_accepted(fd)
    assert _nowait.accept(listening_ipv4.fileno()) is None


def test_ipv6_peer_as_socket_accept_gives_it() -> None:
    assert _nowait is not None, "net/_nowait was not built (make native)"
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    with socket.socket(socket.AF_INET6) as listening:
        try:
            listening.bind(("::1", 0))
        except OSError as exc:
            pytest.skip(f"no IPv6 loopback: {exc}")
        listening.listen(8)
        listening.setblocking(False)
        with socket.create_connection(listening.getsockname()[:2]) as client:
            accepted = _nowait.accept(listening.fileno())
            assert accepted is not None
            fd, peer = accepted
            assert peer == client.getsockname()  # (host, port, flowinfo, scope_id)
            assert len(peer) == 4
            _check_accepted(fd)


@pytest.mark.parametrize("client_name", ["unnamed", "path", "abstract"])
def test_unix_peer_as_socket_accept_gives_it(tmp_path: Path, client_name: str) -> None:
    assert _nowait is not None, "net/_nowait was not built (make native)"
    with socket.socket(socket.AF_UNIX) as listening, socket.socket(socket.AF_UNIX) as client:
        listening.bind(str(tmp_path / "listening"))
        listening.listen(8)
        listening.setblocking(False)
        if client_name == "path":
            client.bind(str(tmp_path / "client"))
        elif client_name == "abstract":
            client.bind(b"\0balancer-test-%d" % os.getpid())
        client.connect(str(tmp_path / "listening"))
        accepted = _nowait.accept(listening.fileno())
        assert accepted is not None
        fd, peer = accepted
        assert peer == client.getsockname()
        _check_accepted(fd)


def test_other_errors_raise_as_socket_accept_raises() -> None:
    assert _nowait is not None, "net/_nowait was not built (make native)"
    with socket.socket() as never_listened:
        never_listened.setblocking(False)
        with pytest.raises(OSError) as raised:
            _nowait.accept(never_listened.fileno())
        assert raised.value.errno == errno.EINVAL
    with pytest.raises(OSError) as closed:
        _nowait.accept(never_listened.fileno())  # -1 once closed
    assert closed.value.errno == errno.EBADF


def test_drain_discards_what_waits_and_tells_the_end() -> None:
    assert _nowait is not None, "net/_nowait was not built (make native)"
    server, client = socket.socketpair()
    with server, client:
        assert _nowait.drain(server.fileno()) == 0  # nothing waits: no exception
        client.sendall(b"x" * 100_000)
        drained = 0
        while drained < 100_000:  # the kernel may hand it over in several pieces
            got = _nowait.drain(server.fileno())
            assert got >= 0
            drained += got
        assert drained == 100_000
        assert _nowait.drain(server.fileno()) == 0
        client.sendall(b"last words")
        client.shutdown(socket.SHUT_WR)
        assert _nowait.drain(server.fileno()) == -1  # read, then the end of stream


def test_drain_of_a_reset_connection_is_its_end(listening_ipv4: socket.socket) -> None:
    assert _nowait is not None, "net/_nowait was not built (make native)"
    client = socket.create_connection(listening_ipv4.getsockname())
    listening_ipv4.setblocking(True)
    server, _ = listening_ipv4.accept()
    with server:
        client.sendall(b"unread")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
        client.close()  # over loopback, the reset is there when close returns
        assert _nowait.drain(server.fileno()) == -1
