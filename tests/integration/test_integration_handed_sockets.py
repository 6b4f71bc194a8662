"""Listening sockets handed down by a master, as a worker gets them: a worker starting on
them must never make them blocking for the other processes that share them.

A listening socket is one open file description shared by the master and every worker, and
its O_NONBLOCK flag is the description's. A worker wraps each inherited descriptor in a
socket object, and a Listener dups that object for its acceptor. socket.dup() copies the
object's timeout with settimeout(): an object with the default timeout (None) so cleared
O_NONBLOCK for every process, until the acceptor's add_reader set it again. A worker that
covered the slot (or an old generation during a reload) and accepted in that moment blocked
in accept4 with a request read and its answer unsent, until another client connected: a
request hung for its client's whole timeout (test_e2e_health's backup test, 1 run in 50).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket

import uvloop
from tests.support import TaggedBackend, free_port

from balancer.config import parse_config
from balancer.server import Balancer, bind_socket, listener_key


def _nonblocking(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK)


def test_a_worker_starting_on_handed_sockets_never_makes_them_blocking() -> None:
    port = free_port()
    with TaggedBackend("s1") as s1:
        config = parse_config(
            f'[global]\nlog = "none"\n'
            f'[[frontend]]\nname = "www"\nbind = ["127.0.0.1:{port}"]\ndefault_backend = "web"\n'
            f'[[backend]]\nname = "web"\n[[backend.server]]\nname = "s1"\naddress = "{s1.address}"\n'
        )
        address = config.frontend[0].bind[0]
        # The master's sockets, one per worker slot (supervisor.Master.bind).
        master = [bind_socket(address, 128, reuseport=True, joining=bool(i)) for i in range(2)]
        seen: list[bool] = []  # O_NONBLOCK of the master's socket right after each dup

        class Inherited(socket.socket):
            """What run_worker makes of an inherited descriptor, noting what each dup leaves."""

            slot = 0  # the master socket it was inherited from

            def dup(self) -> socket.socket:
                copy = super().dup()
                seen.append(_nonblocking(master[self.slot].fileno()))
                return copy

        handed = []
        for slot, sock in enumerate(master):
            inherited = Inherited(fileno=os.dup(sock.fileno()))  # the default timeout, as inherited
            inherited.slot = slot
            handed.append((inherited, slot))

        async def main() -> bytes:
            balancer = Balancer(config)
            await balancer.start({listener_key(address, "www"): handed})
            try:
                # Slot 0's socket is this worker's own; slot 1's is served while covered.
                for listener in balancer.listeners.values():
                    if listener.owner >= 0:
                        listener.cover(True)
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = await asyncio.wait_for(reader.read(), 5)
                writer.close()
                return answer
            finally:
                await balancer.stop(grace=0)

        try:
            answer = uvloop.run(main())
        finally:
            for sock in master:
                sock.close()
    assert answer.startswith(b"HTTP/1.1 200") and b"Server-Name: s1" in answer, answer[:200]
    assert len(seen) == 2, f"expected a dup for the own socket and one for the covered one: {seen}"
    assert all(seen), f"a dup left the shared listening socket blocking: {seen}"
