"""What the keeper writes to keepalived's track file for each verdict of the master (the file
keepalived adds to the priority: 0 ok, -253 = priority 1 (hand over), -254 = fault)."""

from __future__ import annotations

from pathlib import Path

import pytest

from balancer.cluster.vrrp import TRACK_FAULT, TRACK_OK, TRACK_YIELD, VrrpKeeper
from balancer.config.model import Vrrp


def keeper(tmp_path: Path, vip: str, verdict: list[tuple[str, str]], preempt: bool = True) -> VrrpKeeper:
    """A keeper without keepalived: its folder is tmp_path, its health the last of `verdict`."""
    node = VrrpKeeper()
    node.vrrp = Vrrp(interface="e0", virtual_router_id=1, vips=[vip], preempt=preempt)
    node.folder = str(tmp_path)
    node.health = lambda: verdict[-1]
    return node


def track(tmp_path: Path) -> int:
    return int((tmp_path / "health").read_text())


def test_healthy_then_sick_then_healthy(tmp_path: Path) -> None:
    verdict = [("ok", "1/1 servers usable in backend app")]
    node = keeper(tmp_path, "10.255.255.1/32", verdict)
    node.refresh()
    assert track(tmp_path) == TRACK_OK and node.verdict == "ok"
    verdict.append(("fault", "10.255.255.1: no usable server in app"))
    node.refresh()
    assert track(tmp_path) == TRACK_FAULT and node.why == "10.255.255.1: no usable server in app"
    verdict.append(("ok", "back"))
    node.refresh()
    assert track(tmp_path) == TRACK_OK


def test_yield_while_the_vip_is_here_then_fault_once_it_left(tmp_path: Path) -> None:
    """127.0.0.1 is on this node (held); a VIP not on it (left) turns the yield into a fault."""
    held = keeper(tmp_path / "a", "127.0.0.1/8", [("yield", "disabled by /x")])
    (tmp_path / "a").mkdir()
    held.refresh()
    assert track(tmp_path / "a") == TRACK_YIELD and held.verdict == "yield"
    gone = keeper(tmp_path / "b", "10.255.255.1/32", [("yield", "disabled by /x")])
    (tmp_path / "b").mkdir()
    gone.refresh()
    assert track(tmp_path / "b") == TRACK_FAULT


def test_without_preempt_nobody_would_take_the_vip_so_yield_is_fault(tmp_path: Path) -> None:
    node = keeper(tmp_path, "127.0.0.1/8", [("yield", "disabled")], preempt=False)
    node.refresh()
    assert track(tmp_path) == TRACK_FAULT


def test_stopping_hands_over_whatever_the_health_says(tmp_path: Path) -> None:
    node = keeper(tmp_path, "127.0.0.1/8", [("ok", "fine")])
    node.stopping = True
    node.refresh()
    assert (track(tmp_path), node.why) == (TRACK_YIELD, "stopping")


def test_an_error_deciding_gives_the_vips_up(tmp_path: Path) -> None:
    node = keeper(tmp_path, "127.0.0.1/8", [])
    node.refresh()  # the health function raises IndexError
    assert track(tmp_path) == TRACK_FAULT and node.why == "error deciding (see the log)"


@pytest.mark.parametrize("value", [TRACK_OK, TRACK_YIELD, TRACK_FAULT])
def test_effective_priority(tmp_path: Path, value: int) -> None:
    node = keeper(tmp_path, "10.255.255.1/32", [("ok", "")])
    node.written = value
    assert node.status()["effective_priority"] == {TRACK_OK: 100, TRACK_YIELD: 1, TRACK_FAULT: 0}[value]


def test_runtime_folders_of_killed_masters_are_removed(tmp_path: Path) -> None:
    """A master killed outright cannot remove its folder: the next one does, if its pid is gone."""
    import os
    import subprocess
    import sys

    from balancer.cluster.child import remove_stale_folders

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"balancer-vrrp-{int(ended.stdout)}-abc"
    alive = tmp_path / f"balancer-vrrp-{os.getpid()}-def"
    other = tmp_path / "balancer-bgp-1-x"
    for folder in (dead, alive, other):
        folder.mkdir()
        (folder / "keepalived.conf").write_text("x")
    assert remove_stale_folders(str(tmp_path), "vrrp") == [str(dead)]
    assert not dead.exists() and alive.exists() and other.exists()
