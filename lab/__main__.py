"""Seed 001's three tiers in network namespaces, every tier run by `balancer run -c lab/X.toml`.

    sudo .venv/bin/python -m lab up       # build it (first tears down what a previous run left)
    sudo .venv/bin/python -m lab status   # namespaces, processes, the router's routes
    sudo .venv/bin/python -m lab down     # kill every lab process by pid, delete the namespaces

Run from the repository's root (the configs name lab/.run/ paths relative to it).

    s1-client 10.0.1.2 ── s1-router 10.0.1.1 | 10.0.3.1 (BIRD: BGP + ECMP) ── bridge (s1-sw)
    bridge ── s1-l4a .11, s1-l4b .12        L4 nodes: [[l4]] + [bgp], announce VIP 10.100.0.1
          ── s1-l7a .21, s1-l7b .22        L7 nodes: [dsr] + a frontend on the VIP (port 80)
          ── s1-web1 .31, s1-web2 .32, s1-web3 .33   web servers on port 8080 (lab/web.py)

Every name starts with PREFIX; pids and logs go to lab/.run/. `down` is idempotent and safe
after a crash: it kills what the pid files name and whatever still runs in an s1- namespace
(only lab processes can run there), then deletes the namespaces; the root namespace never
gets a lab address, route or device.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "lab"
RUN = LAB / ".run"
PREFIX = "s1-"
VIP = "10.100.0.1"
MTU = "1600"  # VXLAN adds 50 bytes; the underlay carries full-size inner packets (LAB pitfall 7)
CLIENT = ("client", "10.0.1.2")
ROUTER_CLIENT_SIDE = "10.0.1.1"
ROUTER = ("router", "10.0.3.1")
L4_NODES = [("l4a", "10.0.3.11"), ("l4b", "10.0.3.12")]
L7_NODES = [("l7a", "10.0.3.21"), ("l7b", "10.0.3.22")]
WEB = [("web1", "10.0.3.31"), ("web2", "10.0.3.32"), ("web3", "10.0.3.33")]
WEB_PORT = 8080
START_SECONDS = 15.0  # bound on waiting for a process to listen or a route to appear


def ns(name: str) -> str:
    return f"{PREFIX}{name}"


def sh(*command: str, check: bool = True) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip()}")
    return result.stdout


def nsexec(name: str, *command: str, check: bool = True) -> str:
    return sh("ip", "netns", "exec", ns(name), *command, check=check)


def namespaces() -> list[str]:
    """The lab's namespaces that exist now."""
    listed = sh("ip", "netns", "list")
    return [line.split()[0] for line in listed.splitlines() if line.startswith(PREFIX)]


def say(message: str) -> None:
    print(message, flush=True)


# ---- topology ---------------------------------------------------------------------------


def add_namespace(name: str) -> None:
    sh("ip", "netns", "add", ns(name))
    sh("ip", "-n", ns(name), "link", "set", "lo", "up")


def join_bridge(name: str, address: str) -> None:
    """A veth from namespace `name` (its side `e0`, `address`/24) to the bridge."""
    port = f"p-{name}"
    sh(
        "ip",
        "link",
        "add",
        "e0",
        "netns",
        ns(name),
        "mtu",
        MTU,
        "type",
        "veth",
        "peer",
        "name",
        port,
        "netns",
        ns("sw"),
    )
    sh("ip", "-n", ns("sw"), "link", "set", port, "mtu", MTU, "master", "br0", "up")
    sh("ip", "-n", ns(name), "addr", "add", f"{address}/24", "dev", "e0")
    sh("ip", "-n", ns(name), "link", "set", "e0", "up")


def sysctl(name: str, *settings: str) -> None:
    nsexec(name, "sysctl", "-qw", *settings)


def build_topology() -> None:
    add_namespace("sw")
    sh("ip", "-n", ns("sw"), "link", "add", "br0", "mtu", MTU, "type", "bridge")
    sh("ip", "-n", ns("sw"), "link", "set", "br0", "up")
    for name, _ in [CLIENT, ROUTER, *L4_NODES, *L7_NODES, *WEB]:
        add_namespace(name)
    # client <-> router: a point-to-point veth
    sh("ip", "link", "add", "c0", "netns", ns("client"), "type", "veth", "peer", "name", "r0", "netns", ns("router"))
    sh("ip", "-n", ns("client"), "addr", "add", f"{CLIENT[1]}/24", "dev", "c0")
    sh("ip", "-n", ns("client"), "link", "set", "c0", "up")
    sh("ip", "-n", ns("client"), "route", "add", "default", "via", ROUTER_CLIENT_SIDE)
    sh("ip", "-n", ns("router"), "addr", "add", f"{ROUTER_CLIENT_SIDE}/24", "dev", "r0")
    sh("ip", "-n", ns("router"), "link", "set", "r0", "up")
    join_bridge("router", ROUTER[1])
    sysctl(
        "router",
        "net.ipv4.ip_forward=1",
        "net.ipv4.fib_multipath_hash_policy=1",  # ECMP by the 5-tuple: one flow, one L4 node
        "net.ipv4.fib_multipath_use_neigh=1",
    )
    for name, address in [*L4_NODES, *L7_NODES, *WEB]:
        join_bridge(name, address)
        sh("ip", "-n", ns(name), "route", "add", "default", "via", ROUTER[1])
    for name, _ in L7_NODES:
        # Explicit, whatever the host's defaults (LAB pitfall 8): loose, so VIP traffic that
        # arrives through the tunnel and leaves through e0 is accepted.
        sysctl(name, "net.ipv4.conf.all.rp_filter=2", "net.ipv4.conf.default.rp_filter=2")


# ---- processes --------------------------------------------------------------------------


def start(name: str, process: str, command: list[str]) -> int:
    """Start `command` in namespace `name`, its output in lab/.run/PROCESS.log, its pid in
    lab/.run/PROCESS.pid (`ip netns exec` execs the command: the pid is the command's)."""
    log = open(RUN / f"{process}.log", "ab")  # noqa: SIM115 (handed to the child)
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{ROOT / 'src'}{os.pathsep}{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    child = subprocess.Popen(
        ["ip", "netns", "exec", ns(name), *command],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=env,
        start_new_session=True,  # a Ctrl-C of `lab up` does not reach the lab's daemons
    )
    log.close()
    (RUN / f"{process}.pid").write_text(f"{child.pid}\n")
    return child.pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of ours counts as gone.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z"):
            os.waitpid(pid, os.WNOHANG)
            return False
    return True


def listening(name: str, address: str, port: int) -> bool:
    result = subprocess.run(
        ["ip", "netns", "exec", ns(name), "ss", "-Hltn", f"src {address}:{port}"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return bool(result.stdout.strip())


def wait_for(what: str, ready: object, pid: int | None = None) -> None:
    """Poll `ready()` until true (bounded); fail early if process `pid` exits."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if ready():  # type: ignore[operator]
            return
        if pid is not None and not alive(pid):
            raise RuntimeError(f"{what}: the process exited (see lab/.run/)")
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not ready after {START_SECONDS:.0f} s")


def balancer(*args: str) -> list[str]:
    return [sys.executable, "-m", "balancer", *args]


def start_web(names: tuple[str, ...] = ()) -> None:
    """Start the web servers (or those of `names`): `python -m lab.web NAME ADDRESS PORT`."""
    for name, address in WEB:
        if names and name not in names:
            continue
        pid = start(name, name, [sys.executable, "-m", "lab.web", name, address, str(WEB_PORT)])
        wait_for(name, lambda n=name, a=address: listening(n, a, WEB_PORT), pid)
    say(f"  web servers: {', '.join(f'{n} {a}:{WEB_PORT}' for n, a in WEB if not names or n in names)}")


def start_l7(names: tuple[str, ...] = ()) -> None:
    """Start the L7 nodes (or those of `names`): `balancer run -c lab/NODE.toml`."""
    for name, address in L7_NODES:
        if names and name not in names:
            continue
        pid = start(name, name, balancer("run", "-c", str(LAB / f"{name}.toml")))
        wait_for(name, lambda n=name, a=address: listening(n, a, 80) and listening(n, VIP, 80), pid)
    shown = ", ".join(f"{n} {a}" for n, a in L7_NODES if not names or n in names)
    say(f"  L7 nodes: {shown} (frontend on {VIP}:80 and their own :80)")


def start_l4() -> None:
    """Start the L4 nodes: `balancer run -c lab/NODE.toml` ([[l4]] + [bgp])."""
    for name, _ in L4_NODES:
        pid = start(name, name, balancer("run", "-c", str(LAB / f"{name}.toml")))
        wait_for(name, lambda n=name: "balancer_l4" in nsexec(n, "nft", "list", "tables", check=False), pid)
    say(f"  L4 nodes: {', '.join(f'{n} {a}' for n, a in L4_NODES)}")


def start_router() -> None:
    control = RUN / "bird.ctl"
    pid_file = RUN / "bird.pid"
    nsexec("router", "bird", "-c", str(LAB / "bird.conf"), "-s", str(control), "-P", str(pid_file))
    wait_for("bird", lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    wait_for("the router's ECMP route to the VIP", lambda: route_hops() == 2)
    say("  router: BIRD holds the VIP from both L4 nodes (BGP, ECMP)")


def route_hops() -> int:
    shown = sh("ip", "-n", ns("router"), "route", "show", f"{VIP}/32", check=False)
    return shown.count("nexthop via") or (1 if "via" in shown else 0)


def up() -> int:
    down(quiet=True)
    RUN.mkdir(parents=True, exist_ok=True)
    for old in (*RUN.glob("*.log"), *RUN.glob("*.toml"), *RUN.glob("*.disable")):
        old.unlink()
    say("building seed 001's topology (namespaces s1-*)")
    try:
        build_topology()
        start_web()
        start_l7()
        start_l4()
        start_router()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        say(f"lab up failed: {exc}")
        say("logs: lab/.run/*.log; tearing down")
        down(quiet=True)
        return 1
    say(f"ready: ip netns exec {ns('client')} curl http://{VIP}/")
    return 0


# ---- teardown and status ----------------------------------------------------------------


def stop_pid(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10.0  # balancer drains for up to its grace; the lab's is short
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.05)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def down(quiet: bool = False) -> int:
    stopped = 0
    if RUN.is_dir():
        # L4 nodes first (they clean their kernel state on SIGTERM), then the rest.
        files = sorted(RUN.glob("*.pid"), key=lambda f: (not f.name.startswith("l4"), f.name))
        for pid_file in files:
            with contextlib.suppress(ValueError, OSError):
                pid = int(pid_file.read_text().strip())
                if alive(pid):
                    stop_pid(pid)
                    stopped += 1
            pid_file.unlink(missing_ok=True)
    for name in namespaces():
        # After a crash of `lab up` a process may have no pid file: only lab processes run
        # in an s1- namespace.
        for word in sh("ip", "netns", "pids", name, check=False).split():
            with contextlib.suppress(ValueError):
                stop_pid(int(word))
                stopped += 1
        sh("ip", "netns", "del", name, check=False)
    for leftover in (RUN / "bird.ctl", *RUN.glob("*.sock")) if RUN.is_dir() else ():
        leftover.unlink(missing_ok=True)
    if not quiet:
        say(f"lab down: {stopped} processes stopped, namespaces left: {namespaces() or 'none'}")
    return 0


def status() -> int:
    present = namespaces()
    if not present:
        say("lab: down (no s1- namespace)")
        return 1
    say(f"namespaces: {' '.join(present)}")
    for pid_file in sorted(RUN.glob("*.pid")) if RUN.is_dir() else []:
        text = pid_file.read_text().strip()
        state = "running" if text.isdigit() and alive(int(text)) else "NOT RUNNING"
        say(f"  {pid_file.stem:8} pid {text:>8}  {state}")
    say(f"router's route to the VIP: {sh('ip', '-n', ns('router'), 'route', 'show', f'{VIP}/32', check=False).strip()}")
    if (RUN / "bird.ctl").exists():
        say(nsexec("router", "birdc", "-s", str(RUN / "bird.ctl"), "show", "protocols", check=False).strip())
    return 0


def main(argv: list[str]) -> int:
    commands = {"up": up, "down": down, "status": status}
    if len(argv) != 1 or argv[0] not in commands:
        print("usage: python -m lab up | down | status  (as root, from the repository's root)", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("the lab creates network namespaces: run it as root", file=sys.stderr)
        return 1
    return commands[argv[0]]()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
