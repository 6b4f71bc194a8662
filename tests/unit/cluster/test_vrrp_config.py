"""What balancer tells keepalived ([vrrp] → keepalived.conf) and what it reads back from
keepalived's notify FIFO. keepalived itself runs in tests/e2e/test_e2e_vrrp_netns.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from balancer.cluster.vrrp import parse_fifo_line, render_keepalived_config
from balancer.config.model import Vrrp


def test_unicast_preempting_instance() -> None:
    vrrp = Vrrp(
        interface="e0",
        virtual_router_id=51,
        priority=150,
        advert_interval="200ms",
        vips=["10.0.3.100/24", "10.0.3.101/32"],
        unicast_peers=["10.0.3.12"],
        unicast_src="10.0.3.11",
    )
    text = render_keepalived_config(vrrp, "/run/x/notify.fifo", "/run/x/health")
    assert "    notify_fifo /run/x/notify.fifo\n    vrrp_version 3\n" in text
    assert "track_file balancer_health {\n    file /run/x/health\n    weight 1\n}" in text
    for line in (
        "    interface e0",
        "    virtual_router_id 51",
        "    priority 150",
        "    advert_int 0.20",
        "    unicast_src_ip 10.0.3.11",
        "    unicast_peer {\n        10.0.3.12\n    }",
        "        10.0.3.100/24 dev e0\n        10.0.3.101/32 dev e0",
        "        balancer_health weight 1",
    ):
        assert line in text, line
    assert "nopreempt" not in text


def test_multicast_without_preempt() -> None:
    text = render_keepalived_config(
        Vrrp(interface="eth0", virtual_router_id=7, vips=["10.0.0.5/24"], preempt=False), "/f", "/h"
    )
    assert "    nopreempt\n" in text and "state BACKUP" in text
    assert "unicast" not in text


@pytest.mark.skipif(shutil.which("keepalived", path="/usr/sbin:/usr/bin") is None, reason="keepalived not installed")
def test_keepalived_accepts_what_balancer_writes(tmp_path: Path) -> None:
    """keepalived's own --config-test (it wants an existing interface other than lo)."""
    interfaces = sorted(name for name in os.listdir("/sys/class/net") if name != "lo")
    if not interfaces:
        pytest.skip("no network interface but lo here")
    vrrp = Vrrp(
        interface=interfaces[0],
        virtual_router_id=9,
        advert_interval="50ms",
        vips=["10.9.9.9/32"],
        unicast_peers=["10.0.0.2"],
    )
    conf = tmp_path / "keepalived.conf"
    conf.write_text(render_keepalived_config(vrrp, str(tmp_path / "fifo"), str(tmp_path / "health")))
    keepalived = shutil.which("keepalived", path="/usr/sbin:/usr/bin")
    assert keepalived is not None
    result = subprocess.run([keepalived, "--config-test", "-f", str(conf)], capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr


def test_fifo_lines() -> None:
    assert parse_fifo_line('INSTANCE "balancer" MASTER 150') == ("MASTER", 150)
    assert parse_fifo_line('INSTANCE "balancer" FAULT 100') == ("FAULT", 100)
    assert parse_fifo_line('INSTANCE "other" MASTER 150') is None
    assert parse_fifo_line('GROUP "g" MASTER') is None
    assert parse_fifo_line('INSTANCE "balancer" DANCING 1') is None
    assert parse_fifo_line("") is None
