"""`mode = "tcp"`: the balancer relays bytes both ways (L4), seen with plain sockets."""

from __future__ import annotations

import hashlib
import itertools
import os
import socket
import threading
import time

import pytest
from tests.support import TcpEchoServer, closed_port
from tests.support.config import server_blocks

pytestmark = pytest.mark.e2e


def tcp_config(site, servers, balance: str = "roundrobin") -> str:
    return (
        site.global_toml()
        + f"""
[[frontend]]
name = "tcpin"
bind = ["127.0.0.1:{site.port}"]
mode = "tcp"
default_backend = "echo"
timeouts = {{ client = "10s", tunnel = "10s" }}

[[backend]]
name = "echo"
mode = "tcp"
balance = "{balance}"
timeouts = {{ connect = "1s", server = "10s" }}
"""
        + server_blocks(servers)
    )


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(min(1 << 20, n - len(data)))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def recv_all(sock: socket.socket) -> bytes:
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


def test_bytes_echo_through(site):
    with TcpEchoServer("e1") as echo:
        site.start(tcp_config(site, [echo]))
        with socket.create_connection(("127.0.0.1", site.port), timeout=5) as sock:
            for message in (b"hello\n", b"\x00\xff binary \r\n", b"z" * 10_000):
                sock.sendall(message)
                assert recv_exactly(sock, len(message)) == message


def test_large_transfer_keeps_every_byte(site):
    size = 20 * 1024 * 1024
    payload = os.urandom(size)
    with TcpEchoServer("e1") as echo:
        site.start(tcp_config(site, [echo]))
        with socket.create_connection(("127.0.0.1", site.port), timeout=20) as sock:
            errors: list[BaseException] = []

            def send() -> None:
                try:
                    sock.sendall(payload)
                    sock.shutdown(socket.SHUT_WR)
                except OSError as exc:
                    errors.append(exc)

            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            received = recv_all(sock)
            sender.join(20)
        assert not errors
        assert len(received) == size
        assert hashlib.sha256(received).hexdigest() == hashlib.sha256(payload).hexdigest()


def test_half_close_still_delivers_the_other_direction(site):
    with TcpEchoServer("e1", farewell=b"bye after your FIN\n") as echo:
        site.start(tcp_config(site, [echo]))
        with socket.create_connection(("127.0.0.1", site.port), timeout=5) as sock:
            sock.sendall(b"last words")
            sock.shutdown(socket.SHUT_WR)
            started = time.monotonic()
            received = recv_all(sock)
        assert received == b"last words" + b"bye after your FIN\n"
        assert time.monotonic() - started < 4
        assert echo.eofs >= 1


def test_tcp_connections_are_balanced(site):
    with TcpEchoServer("a", greeting=b"A") as a, TcpEchoServer("b", greeting=b"B") as b:
        site.start(tcp_config(site, [a, b]))
        seen = []
        for _ in range(6):
            with socket.create_connection(("127.0.0.1", site.port), timeout=5) as sock:
                seen.append(recv_exactly(sock, 1))
        # (the readiness probe may have taken the first turn, so do not insist on who starts)
        assert sorted(seen) == [b"A"] * 3 + [b"B"] * 3
        assert all(first != second for first, second in itertools.pairwise(seen)), seen


def test_dead_server_is_skipped_by_retry(site):
    with TcpEchoServer("alive") as alive:
        dead = {"name": "dead", "address": f"127.0.0.1:{closed_port()}"}
        site.start(tcp_config(site, [dead, alive]))
        for _ in range(4):
            with socket.create_connection(("127.0.0.1", site.port), timeout=5) as sock:
                sock.sendall(b"ping")
                assert recv_exactly(sock, 4) == b"ping"
