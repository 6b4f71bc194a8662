"""The lab (`python -m lab up | status | down`) as a user runs it: seed 001's topology comes
up, a client reaches the web servers through the router, both L4 nodes and the L7 tier, no
reply crosses an L4 node, and `down` leaves no namespace or process behind.

Root only (skipped with the reason elsewhere, a failure under CI=true). The lab's names are
fixed (s1-*), so the test refuses to run beside a lab someone left up."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from tests.support.tools import require_root, require_tool

ROOT = Path(__file__).resolve().parents[2]
VIP = "10.100.0.1"
L4_NODES = ("s1-l4a", "s1-l4b")
COUNTERS = (
    "table ip labcheck { chain c { type filter hook prerouting priority -300;"
    f" ip saddr {VIP} counter; ip daddr {VIP} counter; }}; }}"
)


def lab(command: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab", command], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def lab_namespaces() -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=20).stdout
    return [line.split()[0] for line in listed.splitlines() if line.startswith("s1-")]


def in_ns(ns: str, *command: str) -> str:
    result = subprocess.run(["ip", "netns", "exec", ns, *command], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"{ns}: {' '.join(command)}: {result.stderr}"
    return result.stdout


def check_flows_through_every_tier() -> None:
    """40 new connections from the client reach the web servers through the router, both
    L4 nodes and the L7 tier (the labcheck counters were set before), and `lab status`
    finds every process running."""
    answers = []
    for port in range(47001, 47041):  # 40 flows, each a new connection
        answers.append(in_ns("s1-client", "curl", "-s", "-m", "5", "--local-port", str(port), f"http://{VIP}/").strip())
    served = {answer: answers.count(answer) for answer in set(answers)}
    print(f"40 requests through the tiers, served by: {served}")
    assert set(served) <= {"web1", "web2", "web3"} and len(served) >= 2, served
    for ns in L4_NODES:
        counters = in_ns(ns, "nft", "list", "table", "ip", "labcheck")
        # Direct return: no packet from the VIP reached an L4 node; ECMP: both got flows.
        assert f"ip saddr {VIP} counter packets 0 " in counters, counters
        assert f"ip daddr {VIP} counter packets 0 " not in counters, counters
    status = lab("status")
    assert status.returncode == 0 and "NOT RUNNING" not in status.stdout, status.stdout


# -- seed 001's six disruption cases ---------------------------------------------------------

CLIENTS = 200  # long-lived keep-alive connections, a GET every ~200 ms each
TRAFFIC_SECONDS = 2.0  # traffic measured after each change has taken effect
EFFECT_SECONDS = 15.0  # bound on waiting for a change to take effect


class LabClient:
    """lab/client.py in the client namespace: `mark()` returns what happened since the
    previous mark (requests, failed, broken connections by L7 node, open connections)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", "s1-client", sys.executable, "-m", "lab.client", VIP, "80", str(CLIENTS), "200"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def mark(self) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("mark\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], 10)
        assert ready, "the lab client did not answer"
        return cast(dict[str, Any], json.loads(self.process.stdout.readline()))

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self.process.stdin is not None
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def ctl_json(node: str, *command: str) -> Any:
    result = subprocess.run(
        [sys.executable, "-m", "balancer", "ctl", "--socket", f"lab/.run/{node}.sock", "--json", *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def l7_state_on_l4(l7: str) -> set[str]:
    """The state of L7 node `l7` in both L4 nodes' tables."""
    return {row["state"] for node in ("l4a", "l4b") for row in ctl_json(node, "show", "l4") if row["node"] == l7}


def server_health_on_l7(server: str) -> set[str]:
    return {
        row["health"] for node in ("l7a", "l7b") for row in ctl_json(node, "show", "servers") if row["server"] == server
    }


def route_hops() -> int:
    shown = in_ns("s1-router", "ip", "route", "show", f"{VIP}/32")
    return shown.count("nexthop via") or (1 if "via" in shown else 0)


def wait_until(what: str, done: Callable[[], bool]) -> float:
    """Poll `done` until true; the seconds it took. Fails after EFFECT_SECONDS."""
    started = time.monotonic()
    while time.monotonic() - started < EFFECT_SECONDS:
        if done():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {EFFECT_SECONDS:.0f} s")


def kill_lab_process(name: str) -> None:
    pid = int((ROOT / "lab" / ".run" / f"{name}.pid").read_text())
    os.kill(pid, signal.SIGKILL)


def slot_map(ns: str) -> list[Any]:
    listed = json.loads(in_ns(ns, "nft", "-j", "list", "map", "ip", "balancer_l4", "slots_0"))
    return [entry["map"]["elem"] for entry in listed["nftables"] if "map" in entry]


@pytest.mark.timeout(600)
def test_seed_001_six_disruption_cases() -> None:
    """The lab as a user runs it (up, traffic through every tier, status, down twice), then
    seed 001's promise, with 200 long-lived keep-alive connections sending requests
    throughout: (a) an L4 node withdrawn and (b) back: 0 broken; (c) an L7 node lost: only
    the connections that were on it break; (d) an L7 node added: 0; (f) a web server lost:
    0 (idempotent requests retried elsewhere); (e) a web server added: 0. Also: both L4
    nodes hold the same table, no reply passes through an L4 node, the router holds two
    BGP next hops. Each case prints its figure."""
    require_root("the lab")
    for tool in ("bird", "nft"):
        require_tool(tool)
    if lab_namespaces():
        pytest.skip("a lab is up (s1-* namespaces): `python -m lab down` first")
    from lab.__main__ import start_l7, start_web

    figures: list[str] = []
    client: LabClient | None = None
    try:
        up = lab("up")
        assert up.returncode == 0, up.stdout + up.stderr
        for ns in L4_NODES:
            in_ns(ns, "nft", COUNTERS)
        check_flows_through_every_tier()
        assert route_hops() == 2 and "proto bird" in in_ns("s1-router", "ip", "route", "show", f"{VIP}/32")
        assert slot_map("s1-l4a") == slot_map("s1-l4b"), "the L4 nodes disagree on the table"
        client = LabClient()
        wait_until("200 connections open", lambda: sum(client.mark()["open_on"].values()) == CLIENTS)
        client.mark()

        def case(label: str, change: Callable[[], None], effect: str, done: Callable[[], bool]) -> dict[str, Any]:
            assert client is not None
            before = client.mark()
            change()
            took = wait_until(effect, done)
            time.sleep(TRAFFIC_SECONDS)  # traffic flows through the changed site meanwhile
            after = client.mark()
            figures.append(
                f"{label}: {after['broken']} broken of {CLIENTS} connections (broken on {after['broken_on'] or '-'};"
                f" open before on {before['open_on']}),"
                f" {after['failed']} failed of {before['requests'] + after['requests']} requests;"
                f" {effect} after {took * 1000:.0f} ms"
            )
            print(figures[-1])
            after["open_before"] = before["open_on"]
            after["requests"] += before["requests"]
            return after

        disable = ROOT / "lab" / ".run" / "l4a.disable"
        a = case("(a) L4 node l4a withdrawn", disable.touch, "route down to one next hop", lambda: route_hops() == 1)
        b = case("(b) l4a back", disable.unlink, "route back to two next hops", lambda: route_hops() == 2)
        c = case(
            "(c) L7 node l7a lost (SIGKILL)",
            lambda: kill_lab_process("l7a"),
            "l7a out of both L4 tables",
            lambda: l7_state_on_l4("l7a") == {"down"},
        )
        d = case(
            "(d) L7 node l7a added (started again)",
            lambda: start_l7(("l7a",)),
            "l7a in both L4 tables",
            lambda: l7_state_on_l4("l7a") == {"up"},
        )
        f = case(
            "(f) web server web1 lost (SIGKILL)",
            lambda: kill_lab_process("web1"),
            "web1 down on both L7 nodes",
            lambda: server_health_on_l7("web1") == {"down"},
        )
        e = case(
            "(e) web server web1 added (started again)",
            lambda: start_web(("web1",)),
            "web1 up on both L7 nodes",
            lambda: server_health_on_l7("web1") == {"up"},
        )
        for ns in L4_NODES:
            counters = in_ns(ns, "nft", "list", "table", "ip", "labcheck")
            assert f"ip saddr {VIP} counter packets 0 " in counters, f"a reply crossed {ns}: {counters}"
        assert slot_map("s1-l4a") == slot_map("s1-l4b"), "the L4 nodes disagree on the table"
    finally:
        if client is not None:
            client.close()
        down = lab("down")
        print("\n".join(["seed 001's six cases:", *figures]))
    assert down.returncode == 0 and lab_namespaces() == [], down.stdout
    again = lab("down")  # idempotent
    assert again.returncode == 0 and "0 processes stopped" in again.stdout, again.stdout
    for label, result in (("a", a), ("b", b), ("d", d), ("e", e), ("f", f)):
        assert result["broken"] == 0, (label, result)
        assert result["failed"] == 0, (label, result)
    on_l7a = c["open_before"].get("l7a", 0)
    assert 0 < c["broken"] <= on_l7a, c
    assert set(c["broken_on"]) == {"l7a"}, c
