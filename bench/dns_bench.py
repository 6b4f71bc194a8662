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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ZONE = "example.com"
RECORDS = 400  # names that exist (www0..www399), each with three A answers
NAMES = 2000  # distinct names a varied run asks for


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(i: int) -> list[str]:
    return [f"10.{i // 250}.{i % 250}.{k}" for k in (1, 2, 3)]


def balancer_config(port: int) -> str:
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
    return "\n".join(lines) + "\n"


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
    args = parser.parse_args()
    for tool in ("dnsperf", "nsd"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            print(f"{tool} is missing: apt-get install dnsperf nsd", file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory(prefix="balancer-dns-bench-") as tmp:
        directory = Path(tmp)
        queries = query_files(directory)
        ports = {"balancer": free_port(), "nsd": free_port()}
        (directory / "balancer.toml").write_text(balancer_config(ports["balancer"]))
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        servers = {
            "balancer": subprocess.Popen(
                [sys.executable, "-m", "balancer", "run", "-c", str(directory / "balancer.toml")],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
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
        finally:
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
