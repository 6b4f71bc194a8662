"""The L4 tier's figures in seed 001's lab (issue 14 point 7): forwarded throughput through the
L4 tier vs plain routing, and the time from a health change to the updated table in the kernel.

    sudo .venv/bin/python bench/l4.py [--seconds 5] [--connections 64] [--streams 8] [--keep-lab] [--update-only]

Root only; not part of `make test`. Builds the lab (`python -m lab up`) unless it is up,
and tears it down at the end unless --keep-lab.

Throughput: the same client (wrk in s1-client), the same L7 nodes and web servers, two paths:
- plain routing: client -> router -> L7 node's own address (one wrk per L7 node, at once);
- L4 tier: client -> router (ECMP) -> L4 node (nft Maglev, VXLAN) -> L7 node, replies straight
  back to the router (DSR); two wrk on the VIP at once, so both runs use the same client load.
Each with keep-alive connections and with a new connection per request, `--seconds` each; and
bulk transfer: `--streams` client connections sending as fast as the path takes, to a sink on
each L7 node (port 5201, in the lab's [[l4]] ports): the bytes the L4 tier forwards.
Must hold (issue 14): L4 tier >= 0.8x plain routing. What limits the HTTP runs is the
user-space HTTP work on a 2-core machine (balancer's L7 nodes, Python web servers), so their
ratio shows what the L4 tier costs end to end; the bulk run loads the forwarding itself (the
router, the L4 node's nft lookup and VXLAN encapsulation), and nothing crosses user space
but the sender and the sinks.

Table update: one L7 node of ten out and back (65537 slots) by an L4Node in a namespace of
its own: with the next tables computed ahead (changes seconds apart, the usual case) and in a
burst (back to back: the table is built on the spot). Must hold: <= 50 ms. Interpreted unless
balancer is installed compiled (`make native`); `--update-only` runs just this.

Health change -> kernel: the L7 node l7a is frozen (SIGSTOP of its process group: it stops
answering, as a hung node does), then thawed. The time until the L4 node l4a's table changes
is taken from its health event, logged right after the kernel took the delta (polled every
2 ms; `nft get`/`nft list` crash on this map, LAB.md); the map is then read once with
`nft -j` to confirm l7a's mark left and came back.
The figure includes the health check's detection (lab: interval 500 ms, fall 2, rise 2,
timeout 300 ms), which dominates; the update itself is in the netns tests' figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from lab.__main__ import L7_NODES, RUN, VIP, namespaces  # noqa: E402

PYTHON = sys.executable
L7A_MARK = 0x4C340001  # balancer.cluster.nft.node_mark(0, 0): the first node of the first [[l4]]
POLL_LIMIT_SECONDS = 20.0


def lab(command: str) -> None:
    subprocess.run([PYTHON, "-m", "lab", command], cwd=ROOT, check=True, timeout=300)


def wrk(urls: list[str], seconds: int, connections: int, close: bool) -> float:
    """Requests per second of one wrk per URL run at once (connections split between them)."""
    each = max(1, connections // len(urls))
    header = ["-H", "Connection: close"] if close else []
    runs = [
        subprocess.Popen(
            ["ip", "netns", "exec", "s1-client", "wrk", "-t", "1", "-c", str(each), "-d", f"{seconds}s", *header, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for url in urls
    ]
    total = 0.0
    for run in runs:
        output, _ = run.communicate(timeout=seconds + 60)
        match = re.search(r"Requests/sec:\s+([\d.]+)", output)
        if not match:
            raise RuntimeError(f"wrk: no figure in {output!r}")
        errors = re.search(r"Socket errors: (.*)", output)
        if errors:
            print(f"    wrk {run.args[-1]}: socket errors {errors.group(1)}")
        total += float(match.group(1))
    return total


def marks_in_kernel(node: str) -> set[int]:
    """The marks the L4 node's slot map holds (`nft -j`: plain `nft list`/`get` crash on
    this map, LAB.md)."""
    result = subprocess.run(
        ["ip", "netns", "exec", f"s1-{node}", "nft", "-j", "list", "map", "ip", "balancer_l4", "slots_0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    elements = json.loads(result.stdout)["nftables"][1]["map"].get("elem", [])
    return {data for _, data in elements}


def poll_until(predicate: Callable[[], bool], what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < POLL_LIMIT_SECONDS:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.002)
    raise RuntimeError(f"{what}: not within {POLL_LIMIT_SECONDS:.0f} s")


def logged(node: str, line: str, after: int) -> bool:
    return line in (RUN / f"{node}.log").read_text(errors="replace")[after:]


def health_to_kernel() -> tuple[float, float]:
    """Freeze l7a, time until l4a's table leaves it; thaw it, time until it is back. The L4
    node logs a health event after the kernel took the delta (balancer.cluster.l4_health)."""
    pid = int((RUN / "l7a.pid").read_text())
    assert L7A_MARK in marks_in_kernel("l4a")
    size = len((RUN / "l4a.log").read_text(errors="replace"))
    os.killpg(pid, signal.SIGSTOP)
    try:
        out = poll_until(lambda: logged("l4a", "l4 www/l7a is DOWN", size), "l4a taking l7a out")
    finally:
        os.killpg(pid, signal.SIGCONT)
    assert L7A_MARK not in marks_in_kernel("l4a")
    size = len((RUN / "l4a.log").read_text(errors="replace"))
    back = poll_until(lambda: logged("l4a", "l4 www/l7a is UP", size), "l4a putting l7a back")
    assert L7A_MARK in marks_in_kernel("l4a")
    return out, back


BULK_PORT = 5201  # in the lab's [[l4]] ports
BULK_CHUNK = 256 * 1024


def bulk_sink() -> None:
    """In an L7 node's namespace: take connections on BULK_PORT (any address: the VIP is on
    lo), read each to its end and answer the byte count. Runs until killed."""
    import socket
    import threading

    def drain(connection: socket.socket) -> None:
        total = 0
        with connection:
            while chunk := connection.recv(BULK_CHUNK):
                total += len(chunk)
            connection.sendall(f"{total}\n".encode())

    with socket.create_server(("0.0.0.0", BULK_PORT), backlog=256, reuse_port=True) as server:
        print("ready", flush=True)
        while True:
            connection, _ = server.accept()
            threading.Thread(target=drain, args=(connection,), daemon=True).start()


def bulk_send(targets: list[str], streams: int, seconds: float) -> None:
    """In the client's namespace: `streams` connections spread over `targets`, each sending
    as fast as the path takes for `seconds`; prints the bytes the sinks counted, per second."""
    import socket
    import threading

    payload = b"x" * BULK_CHUNK
    counted: list[int] = []

    def send(target: str) -> None:
        with socket.create_connection((target, BULK_PORT), timeout=30) as connection:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                connection.sendall(payload)
            connection.shutdown(socket.SHUT_WR)
            counted.append(int(connection.makefile().readline()))

    started = time.monotonic()
    threads = [threading.Thread(target=send, args=(targets[i % len(targets)],)) for i in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(sum(counted) / (time.monotonic() - started))


def bulk(targets: list[str], streams: int, seconds: int) -> float:
    """Bytes per second the L7 nodes received from `streams` client connections to `targets`."""
    result = subprocess.run(
        ["ip", "netns", "exec", "s1-client", PYTHON, __file__, "--bulk-send", str(streams), str(seconds), *targets],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"bulk send: {result.stderr.strip()}")
    return float(result.stdout.strip())


def start_sinks() -> list[subprocess.Popen[str]]:
    sinks = []
    for name, _ in L7_NODES:
        sink = subprocess.Popen(
            ["ip", "netns", "exec", f"s1-{name}", PYTHON, __file__, "--bulk-sink"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        sinks.append(sink)
    return sinks


UPDATE_NS = "s1-bench-update"


def table_update(rounds: int) -> None:
    """One L7 node of ten taken out and put back, 65537 slots, in a namespace of its own (an
    L4Node programs the kernel there; no traffic needed), with the next tables computed
    ahead (a change seconds after the last) and in a burst (changes back to back)."""
    subprocess.run(["ip", "netns", "add", UPDATE_NS], check=True, timeout=20)
    try:
        env = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        for mode in ("ready", "burst"):
            result = subprocess.run(
                ["ip", "netns", "exec", UPDATE_NS, PYTHON, __file__, "--update-child", mode, str(rounds)],
                capture_output=True,
                text=True,
                timeout=600,
                env=env,
            )
            print(result.stdout.rstrip() or result.stderr.rstrip())
    finally:
        subprocess.run(["ip", "netns", "del", UPDATE_NS], check=False, timeout=20)


def table_update_child(mode: str, rounds: int) -> None:
    from statistics import median

    from balancer.cluster.l4 import L4Node
    from balancer.config import parse_config

    text = '[[l4]]\nname = "www"\nvip = "10.100.0.1"\nports = [80]\nseed = 7\ntable_size = 65537\n'
    text += "".join(f'[[l4.node]]\nname = "n{n}"\naddress = "10.0.3.{21 + n}"\n' for n in range(10))
    node = L4Node(parse_config(text).l4)
    node.start()
    everybody = {f"n{n}" for n in range(10)}
    whole: list[float] = []
    kernel: list[float] = []
    try:
        for round_ in range(rounds):
            for usable in (everybody - {f"n{round_ % 10}"}, everybody):
                if mode == "ready" and not node.cache.settle(60):
                    raise RuntimeError("the next tables were not computed within 60 s")
                node.set_usable(0, usable)
                whole.append(node.last_update_seconds * 1000)
                kernel.append(node.last_kernel_seconds * 1000)
    finally:
        node.stop()
    print(
        f"  one L7 node of 10 out or back, 65537 slots, {mode:5}: median {median(whole):5.1f} ms,"
        f" max {max(whole):5.1f} ms (kernel median {median(kernel):5.1f} ms) over {len(whole)} changes;"
        f" must hold <= 50 ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--keep-lab", action="store_true")
    parser.add_argument("--update-rounds", type=int, default=10, help="table update figure: changes x 2")
    parser.add_argument("--update-only", action="store_true", help="only the table update figure, no lab")
    parser.add_argument("--streams", type=int, default=8, help="bulk transfer: client connections")
    parser.add_argument("--update-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--bulk-sink", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bulk-send", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bulk_sink:
        bulk_sink()
        return 0
    if args.bulk_send:
        bulk_send(args.bulk_send[2:], int(args.bulk_send[0]), float(args.bulk_send[1]))
        return 0
    if os.geteuid() != 0:
        print("bench/l4.py builds network namespaces: run it as root", file=sys.stderr)
        return 1
    if args.update_child:
        table_update_child(args.update_child[0], int(args.update_child[1]))
        return 0
    print("table update (L4Node.set_usable: the diff, the nft transaction):")
    table_update(args.update_rounds)
    if args.update_only:
        return 0
    started_lab = not namespaces()
    if started_lab:
        lab("up")
    try:
        plain = [f"http://{address}/" for _, address in L7_NODES]
        tier = [f"http://{VIP}/"] * len(L7_NODES)
        print(f"throughput, wrk from s1-client, {args.connections} connections, {args.seconds} s each:")
        for label, close in (("keep-alive", False), ("new connection per request", True)):
            direct = wrk(plain, args.seconds, args.connections, close)
            through = wrk(tier, args.seconds, args.connections, close)
            print(
                f"  {label:27} plain routing {direct:8.0f} req/s   L4 tier {through:8.0f} req/s"
                f"   ratio {through / direct:.2f} (must hold >= 0.8)"
            )
        sinks = start_sinks()
        try:
            print(f"bulk transfer client -> L7 nodes, {args.streams} connections, {args.seconds} s each:")
            direct = bulk([address for _, address in L7_NODES], args.streams, args.seconds)
            through = bulk([VIP], args.streams, args.seconds)
            print(
                f"  {'bytes forwarded':27} plain routing {direct * 8 / 1e9:6.2f} Gbit/s   L4 tier"
                f" {through * 8 / 1e9:6.2f} Gbit/s   ratio {through / direct:.2f} (must hold >= 0.8)"
            )
        finally:
            for sink in sinks:
                sink.kill()
                sink.wait(10)
        out, back = health_to_kernel()
        print(
            f"health change -> table in the kernel (l7a frozen, then thawed; includes the checks'"
            f" detection): out {out * 1000:.0f} ms, back {back * 1000:.0f} ms"
        )
    finally:
        if started_lab and not args.keep_lab:
            lab("down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
