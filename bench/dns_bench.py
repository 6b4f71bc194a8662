#!/usr/bin/env python3
"""Benchmark `[dns]` against NSD serving the same zone, in the same run (issue 15).

Both servers answer the zone example.com on 127.0.0.1 (balancer: `balancer run` with only a
`[dns]` table; NSD 4: `nsd -d`, one server process). `dnsperf` (Debian) sends each workload
for `--seconds` with `--clients` sockets:
- same: `www.example.com A` again and again (the answer balancer keeps, once computed);
- varied: 2,000 distinct names of the zone, a fifth of them existing records and the rest
  unknown (NXDOMAIN with the SOA), A and AAAA, as a resolver's cache misses arrive.
Each server's CPU time (its processes, from /proc) is read before and after, so the
comparable figure is queries per server CPU second ("per core"). Lost queries are printed.

Then a health flap under load (balancer only): `flap.example.com` has two checked answers,
127.0.0.1 whose check target always listens and 127.0.0.2 whose target starts and stops
listening every `--flap-period` while dnsperf sends the varied workload. A second client asks
for the name about 500 times a second and checks every answer: NOERROR, the steady address
always there, no address the file does not name. It prints the wrong answers (0 expected),
the answers seen with and without the flapping address, and how long each change took to show.

Usage: .venv/bin/python bench/dns_bench.py [--seconds 10] [--clients 4]
Not part of `make test`; needs dnsperf and nsd (apt-get install dnsperf nsd).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

ROOT = Path(__file__).resolve().parents[1]
ZONE = "example.com"
RECORDS = 400  # names that exist (www0..www399), each with three A answers
NAMES = 2000  # distinct names a varied run asks for
STEADY, FLAPPING = "127.0.0.1", "127.0.0.2"  # flap.example.com's answers
CHECK_INTERVAL = 0.1  # their checks, rise 1 fall 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(i: int) -> list[str]:
    return [f"10.{i // 250}.{i % 250}.{k}" for k in (1, 2, 3)]


def balancer_config(port: int, check_port: int) -> str:
    check = f'{{ type = "tcp", port = {check_port}, interval = "{CHECK_INTERVAL}s", rise = 1, fall = 1 }}'
    lines = [
        "[global]",
        'log = "none"',
        "[dns]",
        f'bind = ["127.0.0.1:{port}"]',
        f'zone = "{ZONE}"',
        'ttl = "30s"',
    ]
    for i in range(RECORDS):
        addresses = ", ".join(f'{{ address = "{a}" }}' for a in answers(i))
        lines += ["[[dns.record]]", f'name = "www{i}"', 'type = "A"', 'policy = "all"', f"answers = [{addresses}]"]
    flap = ", ".join(f'{{ address = "{a}", check = {check} }}' for a in (STEADY, FLAPPING))
    lines += ["[[dns.record]]", 'name = "flap"', 'type = "A"', f"answers = [{flap}]"]
    return "\n".join(lines) + "\n"


class Flap:
    """The flapping answer's check target (a listener on 127.0.0.2 that comes and goes) and
    the steady one's (127.0.0.1, always there), both on `port`; a thread accepts and closes
    the checks' connections so that no listen queue fills up."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.lock = threading.Lock()
        self.steady = self._listen(STEADY)
        self.flapping: socket.socket | None = None
        self.changes: list[tuple[float, bool]] = []  # (monotonic time, listening)
        self.stopped = threading.Event()
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _listen(self, host: str) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, self.port))
        sock.listen(64)
        sock.setblocking(False)
        return sock

    def _accept(self) -> None:
        while not self.stopped.wait(0.01):
            with self.lock:
                listening = [sock for sock in (self.steady, self.flapping) if sock is not None]
                for sock in listening:
                    while True:
                        try:
                            sock.accept()[0].close()
                        except OSError:
                            break

    def toggle(self) -> None:
        with self.lock:
            if self.flapping is None:
                self.flapping = self._listen(FLAPPING)
            else:
                self.flapping.close()
                self.flapping = None
            self.changes.append((time.monotonic(), self.flapping is not None))

    def close(self) -> None:
        self.stopped.set()
        self.acceptor.join(2)
        self.steady.close()
        if self.flapping is not None:
            self.flapping.close()


def verify_flap(port: int, stop: threading.Event, seen: list[tuple[float, bool]], wrong: list[str]) -> None:
    """Ask for flap.example.com until `stop`; note each answer (time, has the flapping
    address) and every answer that is wrong."""
    query = dns.message.make_query(f"flap.{ZONE}", "A")
    while not stop.is_set():
        try:
            response = dns.query.udp(query, "127.0.0.1", port=port, timeout=1)
        except Exception as exc:  # a lost or garbled answer is a wrong one here
            wrong.append(f"{type(exc).__name__}: {exc}")
            continue
        addresses = {rdata.to_text() for rrset in response.answer for rdata in rrset}
        if response.rcode() != dns.rcode.NOERROR or STEADY not in addresses or addresses - {STEADY, FLAPPING}:
            wrong.append(f"{dns.rcode.to_text(response.rcode())} {sorted(addresses)}")
        seen.append((time.monotonic(), FLAPPING in addresses))
        time.sleep(0.002)


def flap_lags(changes: list[tuple[float, bool]], seen: list[tuple[float, bool]]) -> list[float]:
    """For each change of the target, the time until answers first showed it."""
    lags = []
    for at, listening in changes:
        shown = next((t for t, has in seen if t >= at and has == listening), None)
        if shown is not None:
            lags.append(shown - at)
    return lags


def run_flap(port: int, flap: Flap, queries: Path, seconds: int, clients: int, period: float) -> None:
    stop = threading.Event()
    seen: list[tuple[float, bool]] = []
    wrong: list[str] = []
    checker = threading.Thread(target=verify_flap, args=(port, stop, seen, wrong), daemon=True)

    def flapper() -> None:
        while not stop.wait(period):
            flap.toggle()

    toggler = threading.Thread(target=flapper, daemon=True)
    checker.start()
    toggler.start()
    try:
        rate, lost = dnsperf(port, queries, seconds, clients)
    finally:
        stop.set()
        checker.join(5)
        toggler.join(5)
    lags = flap_lags(flap.changes, seen)
    with_it = sum(1 for _, has in seen if has)
    print(
        f"health flap under load ({len(flap.changes)} changes, every {period:g} s; checks every"
        f" {CHECK_INTERVAL:g} s, rise 1 fall 1): dnsperf {rate:,.0f} q/s, {lost} lost"
    )
    print(
        f"  flap.{ZONE}: {len(seen)} answers checked, {len(wrong)} wrong;"
        f" {with_it} with {FLAPPING}, {len(seen) - with_it} without"
    )
    if lags:
        lags.sort()
        print(
            f"  a change showed in the answers after {lags[len(lags) // 2] * 1000:.0f} ms (median),"
            f" {lags[-1] * 1000:.0f} ms (max); {len(flap.changes) - len(lags)} not seen before the end"
        )
    for line in wrong[:5]:
        print(f"  wrong: {line}")


def nsd_files(directory: Path, port: int) -> Path:
    zone = [
        f"$ORIGIN {ZONE}.",
        "$TTL 30",
        f"@ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 30",
        f"@ IN NS ns1.{ZONE}.",
    ]
    for i in range(RECORDS):
        zone += [f"www{i} IN A {a}" for a in answers(i)]
    (directory / "zone").write_text("\n".join(zone) + "\n")
    config = directory / "nsd.conf"
    config.write_text(
        "server:\n"
        f"  ip-address: 127.0.0.1@{port}\n"
        "  server-count: 1\n"
        '  username: ""\n'
        f'  zonesdir: "{directory}"\n'
        f'  pidfile: "{directory}/nsd.pid"\n'
        f'  zonelistfile: "{directory}/zone.list"\n'
        f'  xfrdfile: "{directory}/xfrd.state"\n'
        '  database: ""\n'
        "  verbosity: 0\n"
        "  rrl-ratelimit: 0\n"  # response rate limiting would cap one client (dnsperf) at 200/s
        "remote-control:\n"
        "  control-enable: no\n"
        "zone:\n"
        f"  name: {ZONE}\n"
        '  zonefile: "zone"\n'
    )
    return config


def query_files(directory: Path) -> dict[str, Path]:
    same = directory / "same.txt"
    same.write_text(f"www0.{ZONE} A\n")
    varied = directory / "varied.txt"
    lines = []
    for i in range(NAMES):
        name = f"www{i}" if i % 5 == 0 and i // 5 < RECORDS else f"host{i}"
        lines.append(f"{name}.{ZONE} {'A' if i % 3 else 'AAAA'}")
    varied.write_text("\n".join(lines) + "\n")
    return {"same": same, "varied": varied}


def descendants(pid: int) -> list[int]:
    """`pid` and every process under it (NSD forks its server and xfrd processes)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            found += descendants(int(child))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` and its descendants running now, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in descendants(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def wait_answering(port: int, deadline: float = 20.0) -> None:
    query = bytes.fromhex("12340100000100000000000003777777") + b"\x07example\x03com\x00\x00\x01\x00\x01"
    ends = time.monotonic() + deadline
    while time.monotonic() < ends:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            try:
                sock.sendto(query, ("127.0.0.1", port))
                sock.recv(512)
                return
            except OSError:
                time.sleep(0.05)
    raise RuntimeError(f"no DNS answer on port {port} within {deadline:.0f} s")


def dnsperf(port: int, queries: Path, seconds: int, clients: int) -> tuple[float, int]:
    result = subprocess.run(
        ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-l", str(seconds), "-c", str(clients)],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    rate = re.search(r"Queries per second:\s+([\d.]+)", result.stdout)
    lost = re.search(r"Queries lost:\s+(\d+)", result.stdout)
    if not rate or not lost:
        raise RuntimeError(f"dnsperf: {result.stdout}{result.stderr}")
    return float(rate.group(1)), int(lost.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--flap-period", type=float, default=0.5, help="seconds between the target's changes")
    args = parser.parse_args()
    for tool in ("dnsperf", "nsd"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            print(f"{tool} is missing: apt-get install dnsperf nsd", file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory(prefix="balancer-dns-bench-") as tmp:
        directory = Path(tmp)
        queries = query_files(directory)
        ports = {"balancer": free_port(), "nsd": free_port()}
        flap = Flap(free_port())
        (directory / "balancer.toml").write_text(balancer_config(ports["balancer"], flap.port))
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        servers = {
            "balancer": subprocess.Popen(
                [sys.executable, "-m", "balancer", "run", "-c", str(directory / "balancer.toml")],
                env=env,
                stdout=subprocess.DEVNULL,
            ),
            "nsd": subprocess.Popen(
                ["nsd", "-d", "-c", str(nsd_files(directory, ports["nsd"]))],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
        }
        try:
            for port in ports.values():
                wait_answering(port)
            figures: dict[tuple[str, str], float] = {}
            print(f"dnsperf, {args.clients} clients, {args.seconds} s per run, 127.0.0.1")
            print(f"{'server':9} {'workload':8} {'queries/s':>10} {'lost':>6} {'CPU s':>6} {'per core':>10}")
            for workload, path in queries.items():
                for name, port in ports.items():
                    before = cpu_seconds(servers[name].pid)
                    rate, lost = dnsperf(port, path, args.seconds, args.clients)
                    cpu = cpu_seconds(servers[name].pid) - before
                    per_core = rate * args.seconds / cpu if cpu > 0 else 0.0
                    figures[(name, workload)] = per_core
                    print(f"{name:9} {workload:8} {rate:10,.0f} {lost:6} {cpu:6.2f} {per_core:10,.0f}")
            print("balancer / NSD, queries per server CPU second:")
            for workload in queries:
                print(f"  {workload}: {figures[('balancer', workload)] / figures[('nsd', workload)]:.2f}x")
            run_flap(ports["balancer"], flap, queries["varied"], args.seconds, args.clients, args.flap_period)
        finally:
            flap.close()
            for server in servers.values():
                server.terminate()
            for server in servers.values():
                try:
                    server.wait(10)
                except subprocess.TimeoutExpired:
                    server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
