"""Running under a service manager: systemd readiness (sd_notify) and dropping root."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest
from tests.support.backends import TaggedBackend
from tests.support.ports import free_port
from tests.support.process import BalancerProcess, wait_until

pytestmark = pytest.mark.e2e


def _config(port: int, backend: TaggedBackend, extra_global: str = "") -> str:
    return f"""
[global]
workers = 1
grace = "2s"
log = "none"
{extra_global}

[[frontend]]
name = "www"
bind = ["127.0.0.1:{port}"]
default_backend = "web"

[[backend]]
name = "web"
  [[backend.server]]
  name = "s1"
  address = "{backend.address}"
"""


def _receive(sock: socket.socket, deadline: float) -> str:
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    return sock.recv(4096).decode()


def test_sd_notify_ready_reloading_and_stopping(tmp_path: Path):
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    port = free_port()
    with TaggedBackend("s1") as s1:
        config = tmp_path / "lb.toml"
        config.write_text(_config(port, s1))
        with BalancerProcess(config, log_dir=tmp_path, env={"NOTIFY_SOCKET": str(notify_path)}) as proc:
            deadline = time.monotonic() + 20
            assert _receive(listener, deadline) == "READY=1", proc.output()
            proc.send_signal(signal.SIGHUP)
            reloading = _receive(listener, deadline)
            assert re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=\d+", reloading), reloading
            assert _receive(listener, deadline) == "READY=1"
            proc.send_signal(signal.SIGTERM)
            assert _receive(listener, deadline) == "STOPPING=1"
            assert proc.wait(timeout=10) == 0
    listener.close()


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_workers_drop_root_after_binding(tmp_path: Path):
    port = free_port()
    tmp_path.chmod(0o755)
    with TaggedBackend("s1") as s1:
        config = tmp_path / "lb.toml"
        config.write_text(_config(port, s1, 'user = "nobody"\ngroup = "nogroup"'))
        config.chmod(0o644)
        with BalancerProcess(config, log_dir=tmp_path) as proc:
            proc.wait_ready(port, timeout=20)
            workers = wait_until(
                lambda: Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split(),
                timeout=10,
                what="worker processes",
            )
            # A worker drops root once its listeners are set up, before it reports ready.
            wait_until(lambda: "balancer running" in proc.output(), timeout=20, what="workers ready")
            assert _uid_of(int(workers[0])) != 0, "the worker still runs as root"
            # The master keeps root to bind new addresses and read the file on reloads.
            assert _uid_of(proc.pid) == 0
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                assert response.status == 200
            assert proc.stop() == 0
