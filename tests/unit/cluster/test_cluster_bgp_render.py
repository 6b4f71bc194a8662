"""cluster.bgp: the ExaBGP configuration balancer writes for a [bgp] table, checked by
ExaBGP's own validator, and the relay that carries the API between ExaBGP and the master."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from balancer.cluster.bgp import exabgp_environment, render_exabgp_config
from balancer.config.model import Bgp

SRC = Path(__file__).resolve().parents[3] / "src"


def bgp(**changes: object) -> Bgp:
    table: dict[str, object] = {
        "router_id": "10.0.3.11",
        "local_as": 65001,
        "local_address": "10.0.3.11",
        "announce": ["10.100.0.1/32"],
        "neighbor": [
            {"address": "10.0.3.1", "peer_as": 65000},
            {"address": "10.0.3.2", "peer_as": 4200000000, "port": 1179},
            {"address": "10.0.3.3", "peer_as": 65000, "passive": True},
        ],
    }
    table.update(changes)
    return Bgp.model_validate(table)


def test_each_neighbor_gets_a_block_with_the_api_process() -> None:
    text = render_exabgp_config(bgp(hold_time="9s"), "/run/x/api.sock")
    assert f"run {sys.executable} -m balancer.cluster.exabgp_api /run/x/api.sock;" in text
    assert "encoder json;" in text
    blocks = text.split("\nneighbor ")[1:]
    assert [block.split(" ", 1)[0] for block in blocks] == ["10.0.3.1", "10.0.3.2", "10.0.3.3"]
    for block in blocks:
        assert "router-id 10.0.3.11;" in block and "local-as 65001;" in block and "hold-time 9;" in block
        assert "processes [ balancer ];" in block and "neighbor-changes;" in block
    assert "connect" not in blocks[0] and "peer-as 4200000000;" in blocks[1] and "connect 1179;" in blocks[1]
    assert "passive true;" in blocks[2] and "listen 179;" in blocks[2]


@pytest.mark.parametrize("hold_time", ["0s", "3s", "6s"])
def test_exabgp_accepts_the_configuration(tmp_path: Path, hold_time: str) -> None:
    pytest.importorskip("exabgp", reason="ExaBGP (the tiers extra) is not installed")
    conf = tmp_path / "exabgp.conf"
    conf.write_text(render_exabgp_config(bgp(hold_time=hold_time), str(tmp_path / "api.sock")))
    result = subprocess.run(
        [sys.executable, "-m", "exabgp", "validate", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        env=exabgp_environment(str(tmp_path / "exabgp.log")),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_environment_keeps_exabgp_in_the_foreground_and_reaches_this_balancer(tmp_path: Path) -> None:
    env = exabgp_environment(str(tmp_path / "exabgp.log"))
    assert env["exabgp_daemon_daemonize"] == "false" and env["exabgp_api_cli"] == "false"
    assert env["exabgp_api_terminate"] == "true" and env["exabgp_api_ack"] == "true"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(SRC)


def test_the_relay_copies_lines_both_ways_and_exits_when_balancer_closes(tmp_path: Path) -> None:
    path = str(tmp_path / "api.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(10)
    env = dict(os.environ, PYTHONPATH=str(SRC))
    relay = subprocess.Popen(
        [sys.executable, "-m", "balancer.cluster.exabgp_api", path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert relay.stdin is not None and relay.stdout is not None
    try:
        connection, _ = listener.accept()
        connection.settimeout(10)
        relay.stdin.write(b'{ "type": "state" }\n')  # as ExaBGP writes to its API process
        relay.stdin.flush()
        received = b""
        while not received.endswith(b"\n"):
            chunk = connection.recv(100)
            assert chunk, "the relay closed"
            received += chunk
        assert received == b'{ "type": "state" }\n'
        connection.sendall(b"announce route 10.100.0.1/32 next-hop self\n")
        assert relay.stdout.readline() == b"announce route 10.100.0.1/32 next-hop self\n"
        connection.close()
        assert relay.wait(timeout=10) == 0
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.wait(timeout=10)
        relay.stdin.close()
        relay.stdout.close()
        listener.close()


def test_the_relay_says_why_it_cannot_reach_balancer(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "balancer.cluster.exabgp_api", str(tmp_path / "absent.sock")],
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ, PYTHONPATH=str(SRC)),
    )
    assert result.returncode == 1
    assert "cannot reach balancer at" in result.stderr
