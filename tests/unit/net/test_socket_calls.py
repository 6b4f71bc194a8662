"""net.socket_calls on real sockets, built (net/_nowait.c) or not (BALANCER_PURE=1): accept
gives what socket.accept gives (the peer's address for IPv4, IPv6 and Unix sockets, named,
unnamed and abstract) on a descriptor that is non-blocking and close-on-exec; "nothing
now" is None (accept, recv, recv_into) or 0 (send), never BlockingIOError; the end of
stream is b"" / 0 / -1 (drain); other errors raise OSError with their errno, as the socket
methods do. bytes_of copies a read out of its buffer."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.listening import UnansweredListener

from balancer.net import socket_calls
from balancer.net.socket_calls import accept, bytes_of, drain, getsockname, recv, recv_into, send, shutdown_write


def test_the_calls_are_the_c_ones_in_a_compiled_build() -> None:
    if os.environ.get("BALANCER_PURE") == "1":
        pytest.skip("built with BALANCER_PURE=1: os and socket make the calls")
    assert socket_calls.NATIVE, "net/_nowait was not built (make native)"


@pytest.fixture
def listening_ipv4() -> Iterator[socket.socket]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock


def _check_accepted(fd: int) -> None:
    try:
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
    finally:
        os.close(fd)


def test_an_empty_queue_is_none(listening_ipv4: socket.socket) -> None:
    assert accept(listening_ipv4) is None


def test_ipv4_peer_as_socket_accept_gives_it(listening_ipv4: socket.socket) -> None:
    with socket.create_connection(listening_ipv4.getsockname()) as client:
        accepted = accept(listening_ipv4)
        assert accepted is not None
        fd, peer = accepted
        assert peer == client.getsockname()
        assert getsockname(fd) == listening_ipv4.getsockname()
        _check_accepted(fd)
    assert accept(listening_ipv4) is None


@pytest.mark.parametrize(
    "source",
    # Octets of one, two and three digits in every position, zeros included (_nowait.c
    # formats the address by hand).
    ["127.0.0.1", "127.0.0.10", "127.0.100.9", "127.255.255.254", "127.9.99.199", "127.10.0.250", "127.100.20.3"],
)
def test_ipv4_peers_of_every_digit_count_read_as_socket_accept_reads_them(
    listening_ipv4: socket.socket, source: str
) -> None:
    with socket.socket() as client:
        client.bind((source, 0))
        client.connect(listening_ipv4.getsockname())
        accepted = accept(listening_ipv4)
        assert accepted is not None
        fd, peer = accepted
        os.close(fd)
        assert peer == client.getsockname() == (source, peer[1])


def test_ipv6_peer_as_socket_accept_gives_it() -> None:
    with socket.socket(socket.AF_INET6) as listening:
        try:
            listening.bind(("::1", 0))
        except OSError as exc:
            pytest.skip(f"no IPv6 loopback here: {exc}")
        listening.listen(8)
        listening.setblocking(False)
        with socket.create_connection(listening.getsockname()[:2]) as client:
            accepted = accept(listening)
            assert accepted is not None
            fd, peer = accepted
            assert peer == client.getsockname()  # (host, port, flowinfo, scope_id)
            assert getsockname(fd) == listening.getsockname()
            _check_accepted(fd)


@pytest.mark.parametrize("client_name", ["unnamed", "path", "abstract"])
def test_unix_peer_as_socket_accept_gives_it(tmp_path: Path, client_name: str) -> None:
    with socket.socket(socket.AF_UNIX) as listening, socket.socket(socket.AF_UNIX) as client:
        listening.bind(str(tmp_path / "listening"))
        listening.listen(8)
        listening.setblocking(False)
        if client_name == "path":
            client.bind(str(tmp_path / "client"))
        elif client_name == "abstract":
            client.bind(b"\0balancer-test-%d" % os.getpid())
        client.connect(str(tmp_path / "listening"))
        accepted = accept(listening)
        assert accepted is not None
        fd, peer = accepted
        assert peer == client.getsockname()
        assert getsockname(fd) == str(tmp_path / "listening")
        _check_accepted(fd)


def test_accept_errors_raise_as_socket_accept_raises() -> None:
    with socket.socket() as never_listened:
        never_listened.setblocking(False)
        with pytest.raises(OSError) as raised:
            accept(never_listened)
        assert raised.value.errno == errno.EINVAL


@pytest.fixture
def connection() -> Iterator[tuple[int, socket.socket]]:
    """A non-blocking descriptor (ours) and its blocking peer (the client's socket)."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    fd = ours.detach()
    try:
        yield fd, theirs
    finally:
        os.close(fd)
        theirs.close()


def test_recv_and_send_say_nothing_now_without_an_exception(connection: tuple[int, socket.socket]) -> None:
    fd, theirs = connection
    assert recv(fd, 1024) is None
    assert recv_into(fd, bytearray(16)) is None
    theirs.sendall(b"hello")
    assert recv(fd, 1024) == b"hello"
    theirs.sendall(b"into a buffer")
    buffer = bytearray(64)
    assert recv_into(fd, memoryview(buffer)[4:]) == 13
    assert bytes(buffer[4:17]) == b"into a buffer"
    sent = 0
    chunk = b"x" * 65536
    for _ in range(1000):  # until the kernel's buffers are full: then 0, not an exception
        taken = send(fd, chunk)
        if taken == 0:
            break
        sent += taken
    else:
        raise AssertionError("the kernel took 64 MiB without a reader")
    assert sent > 0
    theirs.setblocking(False)
    received = 0
    while received < sent:
        received += len(theirs.recv(1 << 20))
    assert received == sent
    shutdown_write(fd)
    assert theirs.recv(16) == b""  # our end of stream
    theirs.shutdown(socket.SHUT_WR)
    assert recv(fd, 1024) == b""  # theirs
    assert recv_into(fd, bytearray(16)) == 0


def test_drain_discards_what_waits_and_tells_the_end(connection: tuple[int, socket.socket]) -> None:
    fd, theirs = connection
    assert drain(fd) == 0  # nothing waits
    theirs.sendall(b"x" * 100_000)
    drained = 0
    for _ in range(100):  # the kernel may hand it over in several pieces
        got = drain(fd)
        assert got >= 0
        drained += got
        if drained == 100_000:
            break
    assert drained == 100_000
    assert drain(fd) == 0
    theirs.sendall(b"last words")
    theirs.shutdown(socket.SHUT_WR)
    assert drain(fd) == -1  # read, then the end of stream


def test_a_reset_is_the_end_of_a_drain_and_an_error_of_recv(listening_ipv4: socket.socket) -> None:
    client = socket.create_connection(listening_ipv4.getsockname())
    listening_ipv4.setblocking(True)
    server, _ = listening_ipv4.accept()
    server.setblocking(False)
    fd = server.detach()
    try:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
        client.close()  # over loopback, the reset is there when close returns
        with pytest.raises(ConnectionResetError):
            recv(fd, 16)
    finally:
        os.close(fd)
    client = socket.create_connection(listening_ipv4.getsockname())
    server, _ = listening_ipv4.accept()
    server.setblocking(False)
    fd = server.detach()
    try:
        client.sendall(b"unread")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        assert drain(fd) == -1
    finally:
        os.close(fd)


def test_a_read_into_a_buffer_is_copied_out_as_bytes(connection: tuple[int, socket.socket]) -> None:
    fd, peer = connection
    buffer = bytearray(32)
    view = memoryview(buffer)
    peer.sendall(b"HTTP/1.1 200 OK\r\n")
    size = recv_into(fd, view)
    assert size == 17
    data = bytes_of(view, size)
    assert data == b"HTTP/1.1 200 OK\r\n" and type(data) is bytes
    buffer[:4] = b"XXXX"  # the next read reuses the buffer: what was taken is a copy
    assert data.startswith(b"HTTP")
    assert bytes_of(buffer, 0) == b"" and bytes_of(view, 32) == bytes(buffer)
    for outside in (-1, 33):
        with pytest.raises(ValueError):
            bytes_of(view, outside)


def test_a_connect_to_this_host_is_over_when_connect_returns(listening_ipv4: socket.socket) -> None:
    """The first connect() of a non-blocking socket is "in progress" even to loopback, though
    the handshake ends within that call; connect asks again, so the relay waits for nothing.
    Without the second ask no connect would end at once; with it nearly all do (the kernel
    may leave its network work to ksoftirqd under load: at least one of 20 is asked)."""
    host, port = listening_ipv4.getsockname()
    listening_ipv4.settimeout(5)  # a connect left to ksoftirqd is queued a moment later
    at_once = 0
    for _ in range(20):
        fd, connected = socket_calls.connect(host, port)
        try:
            assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
            assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
            with socket.socket(fileno=os.dup(fd)) as view:
                assert view.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                if connected:
                    assert view.getpeername() == (host, port)
            at_once += connected
        finally:
            os.close(fd)
        accepted, _ = listening_ipv4.accept()
        accepted.close()
    assert at_once >= 1


def test_a_refused_connect_to_this_host_raises_from_the_call() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, not listening: refused
        host, port = closed.getsockname()
        refused_at_once = 0
        for _ in range(20):
            try:
                fd, connected = socket_calls.connect(host, port)
            except ConnectionRefusedError:
                refused_at_once += 1
                continue
            try:  # left to ksoftirqd: the refusal is the socket's pending error once it ends
                assert not connected
                select.select([], [fd], [], 5)
                assert socket_calls.socket_error(fd) == errno.ECONNREFUSED
            finally:
                os.close(fd)
        assert refused_at_once >= 1


def test_a_connect_still_under_way_after_the_second_ask_is_not_connected() -> None:
    """A listener whose queue is full drops the SYN: the connect goes on (and would be
    retried by the kernel), with no error pending."""
    full = UnansweredListener()
    try:
        fd, connected = socket_calls.connect("127.0.0.1", full.port)
        try:
            assert not connected
            assert socket_calls.socket_error(fd) == 0
        finally:
            os.close(fd)
    finally:
        full.close()


def test_connect_refuses_a_name() -> None:
    with pytest.raises(ValueError, match="not a numeric address"):
        socket_calls.connect("localhost", 80)
