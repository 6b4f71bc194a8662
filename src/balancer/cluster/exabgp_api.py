"""ExaBGP's API process: relays lines between ExaBGP and balancer's BGP speaker.

ExaBGP runs the programs of its `process` sections itself and talks to them over their
stdin/stdout; it does not connect to anything. This relay is that program: run as
`python -m balancer.cluster.exabgp_api SOCKET`, it connects to the unix socket the master's
BgpSpeaker (cluster/bgp.py) listens on and copies bytes both ways — ExaBGP's JSON messages
(neighbor states, command answers) to the master, the master's commands (`announce route
...`) to ExaBGP. It holds no state, so either side may restart without the other
remembering anything: the speaker re-announces what it wants on every new connection.

It exits when either side closes (ExaBGP stopping, or the master gone); ExaBGP is started
with api.terminate, so a relay that exits takes ExaBGP down with it and the speaker's
supervision restarts both. Exit status 2 on a bad command line, 1 when the socket refuses.
"""

from __future__ import annotations

import os
import selectors
import socket
import sys

CHUNK = 65536


def relay(connection: socket.socket, stdin: int, stdout: int) -> None:
    """Copy stdin to `connection` and `connection` to stdout until either ends."""
    selector = selectors.DefaultSelector()
    selector.register(stdin, selectors.EVENT_READ)
    selector.register(connection, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj == stdin:
                data = os.read(stdin, CHUNK)
                if not data:
                    return
                connection.sendall(data)
            else:
                data = connection.recv(CHUNK)
                if not data:
                    return
                view = memoryview(data)
                while view:
                    view = view[os.write(stdout, view) :]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m balancer.cluster.exabgp_api SOCKET", file=sys.stderr)
        return 2
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(argv[1])
    except OSError as exc:
        print(f"exabgp_api: cannot reach balancer at {argv[1]}: {exc}", file=sys.stderr)
        return 1
    try:
        relay(connection, sys.stdin.fileno(), sys.stdout.fileno())
    except (BrokenPipeError, ConnectionError):
        pass
    finally:
        connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
