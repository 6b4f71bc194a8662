"""[peers] between two whole nodes on loopback, as an operator runs a pair: each node is a
`balancer run -c FILE` with two workers, a stick table on its backend and [peers] naming the
other. 100 clients (one source address each, 127.0.1.1-100) are balanced by node A; node B
must send each to the same server. Then B is killed and started again: it gets A's table
in a full copy. The netns pair with VRRP is in test_e2e_vrrp_netns.py.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tests.support import BalancerProcess, free_port, wait_until
from tests.support.config import server_blocks

pytestmark = pytest.mark.e2e

CLIENTS = [f"127.0.1.{n}" for n in range(1, 101)]


class Node:
    def __init__(self, folder: Path, name: str, servers: list[Any], peer_port: int, other_peer: int) -> None:
        self.port, self.admin = free_port(), free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{name}.toml"
        self.path.write_text(
            f'[global]\nworkers = 2\ngrace = "1s"\nlog = "none"\n'
            f'[admin]\nbind = "127.0.0.1:{self.admin}"\n'
            f'[peers]\nbind = "127.0.0.1:{peer_port}"\nnodes = ["127.0.0.1:{other_peer}"]\nkey = "pair-secret"\n'
            f'heartbeat = "500ms"\n'
            f'[[frontend]]\nname = "www"\nbind = ["127.0.0.1:{self.port}"]\ndefault_backend = "web"\n'
            f'[[backend]]\nname = "web"\nbalance = "roundrobin"\nstick = {{ on = "src", expire = "10m" }}\n'
            + server_blocks(servers)
        )
        self.folder = folder
        self.process: BalancerProcess | None = None

    def start(self) -> Node:
        self.process = BalancerProcess(self.path, log_dir=self.folder / "log")
        self.process.wait_ready(self.port)
        self.process.wait_ready(self.admin)
        return self

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}{path}", timeout=5) as reply:
            return json.loads(reply.read())

    def server_for(self, client: str) -> str:
        """The server that answers a request from source address `client` (a new connection)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5, source_address=(client, 0)) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: pair\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head = data.split(b"\r\n\r\n", 1)[0].decode()
        assert head.startswith("HTTP/1.1 200"), head
        return next(line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.startswith("Server-Name:"))


def _link_up(node: Node) -> bool:
    nodes = node.api("/api/peers")["nodes"]
    return bool(nodes) and all(row["state"] == "up" and row["inbound"] for row in nodes)


def test_clients_keep_their_server_on_the_other_node_and_after_its_restart(tmp_path: Path, tagged) -> None:
    servers = tagged("s1", "s2", "s3")
    a_peer, b_peer = free_port(), free_port()
    a = Node(tmp_path / "a", "a", servers, a_peer, b_peer).start()
    b = Node(tmp_path / "b", "b", servers, b_peer, a_peer).start()
    try:
        wait_until(lambda: _link_up(a) and _link_up(b), timeout=10, what="both links up")
        learned = {client: a.server_for(client) for client in CLIENTS}
        assert set(learned.values()) == {"s1", "s2", "s3"}  # balanced, so a match is no accident
        wait_until(
            lambda: (
                a.api("/api/peers")["nodes"][0]["sent"] >= len(CLIENTS)
                and b.api("/api/peers")["received"] >= len(CLIENTS)
            ),
            timeout=5,
            what="B to receive A's entries",
        )
        # Asked in the reverse order, so that B balancing anew would give other servers.
        kept = sum(b.server_for(client) == learned[client] for client in reversed(CLIENTS))
        print(f"\n{kept} of {len(CLIENTS)} clients kept their server on the other node")
        assert kept >= 99

        # B dies and starts empty: the full copy from A brings every client back.
        assert b.process is not None
        b.process.kill()
        b.start()
        wait_until(lambda: _link_up(b), timeout=15, what="B's links up again")
        wait_until(lambda: b.api("/api/peers")["received"] >= len(CLIENTS), timeout=5, what="the full copy at B")
        kept = sum(b.server_for(client) == learned[client] for client in reversed(CLIENTS))
        print(f"{kept} of {len(CLIENTS)} after B restarted")
        assert kept >= 99
    finally:
        for node in (a, b):
            if node.process is not None:
                node.process.kill()


def test_a_node_with_another_key_is_refused_and_says_so(tmp_path: Path, tagged) -> None:
    servers = tagged("s1")
    a_peer, b_peer = free_port(), free_port()
    a = Node(tmp_path / "a", "a", servers, a_peer, b_peer)
    b = Node(tmp_path / "b", "b", servers, b_peer, a_peer)
    b.path.write_text(b.path.read_text().replace("pair-secret", "another-secret"))
    a.start()
    b.start()
    try:
        wait_until(
            lambda: any("authentication failed" in row["error"] for row in a.api("/api/peers")["nodes"]),
            timeout=10,
            what="A told it was refused",
        )
        assert a.process is not None and b.process is not None
        wait_until(lambda: "failed authentication (a different key?)" in b.process.output(), timeout=5)
        assert a.api("/api/peers")["nodes"][0]["state"] == "failed"
    finally:
        for node in (a, b):
            if node.process is not None:
                node.process.kill()
