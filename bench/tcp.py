#!/usr/bin/env python3
"""Benchmark the L4 relay (`mode = "tcp"`): balancer vs HAProxy `mode tcp` and pproxy, same run.

Each proxy relays one listening port to one backend port, nothing else (no rules, no logging),
and is measured two ways:

1. **Bulk throughput**: an `iperf3 -s` backend (a sink), `iperf3 -c PROXY -P STREAMS -t D` pushes
   STREAMS parallel streams through the proxy. Figures: Gbit/s received by the sink and Gbit
   relayed per proxy CPU second ("per proxy core"), the comparable one on a shared machine.
2. **New connections**: an NGINX backend answering `return 200`, `wrk -H "Connection: close"`
   through the relay: every request is a new client connection and a new server connection.
   Figures: connections/s and connections per proxy CPU second.

With `--repeat N` both run in N rounds, the proxies interleaved (a fresh process each round, so
a slow spell of the shared machine hits them alike), and each figure is the median round by
per proxy core; the per-round balancer/HAProxy ratios are printed beside the ratio of medians
(their lowest, median and highest), as bench/run.py prints them.

The Python peer is pproxy 2.7.9 on uvloop (a `tunnel{backend}://listen` relay), run from the
bench venv bench/.venv-peers (see bench/README.md); when that venv is missing it is reported as not
installed, not left out silently.

Usage: .venv/bin/python bench/tcp.py [--duration 10] [--streams 4] [--repeat 1] [--only haproxy,balancer]
Prints a table and the ratios; writes JSON to bench/results/tcp-latest.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # bench/peers.py: where the Python peers are installed
import run as harness  # bench/run.py: processes, the nginx backend, wrk parsing, CPU time

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO / "bench" / "results" / "tcp-latest.json"
PROXIES = ("haproxy", "balancer", "pproxy")
BULK_ATTEMPTS = 3


@dataclass(frozen=True)
class Ports:
    sink: int  # iperf3 -s
    web: int  # nginx return 200
    relay_sink: int  # the proxy's port relaying to the sink
    relay_web: int  # the proxy's port relaying to the web backend


def haproxy_config(ports: Ports) -> str:
    return f"""\
global
    nbthread 1
    maxconn 8000

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

listen sink
    bind 127.0.0.1:{ports.relay_sink}
    server s1 127.0.0.1:{ports.sink}

listen web
    bind 127.0.0.1:{ports.relay_web}
    server s1 127.0.0.1:{ports.web}
"""


def balancer_config(ports: Ports) -> str:
    pairs = (("sink", ports.relay_sink, ports.sink), ("web", ports.relay_web, ports.web))
    text = '[global]\nworkers = 1\ngrace = "1s"\n'
    for name, listen, target in pairs:
        text += f"""
[[frontend]]
name = "{name}"
bind = ["127.0.0.1:{listen}"]
mode = "tcp"
default_backend = "{name}"

[[backend]]
name = "{name}"
mode = "tcp"

  [[backend.server]]
  name = "s1"
  address = "127.0.0.1:{target}"
"""
    return text


def proxy_argv(args: argparse.Namespace, proxy: str, tmp: Path, ports: Ports) -> list[str]:
    if proxy == "haproxy":
        conf = tmp / "haproxy-tcp.cfg"
        conf.write_text(haproxy_config(ports))
        return [harness.find_binary("haproxy"), "-db", "-f", str(conf)]
    if proxy == "pproxy":
        listens = [
            arg
            for listen, target in ((ports.relay_sink, ports.sink), (ports.relay_web, ports.web))
            for arg in ("-l", f"tunnel{{127.0.0.1:{target}}}://127.0.0.1:{listen}")
        ]
        return peers.pproxy_argv(listens)
    conf = tmp / "balancer-tcp.toml"
    conf.write_text(balancer_config(ports))
    return harness.balancer_argv(args.balancer_cmd, conf)


# --------------------------------------------------------------------------- measures


@dataclass
class Bulk:
    proxy: str
    streams: int
    seconds: float
    gbit_s: float
    cpu_s: float
    gbit_per_core: float | None  # Gbit relayed per proxy CPU second
    round: int = 1


@dataclass
class Connections:
    proxy: str
    connections: int
    per_s: float
    errors: int
    cpu_s: float
    per_core: float | None
    cpu_us_per_conn: float | None
    round: int = 1


def run_bulk(args: argparse.Namespace, proc: harness.Proc, port: int, rnd: int) -> Bulk:
    iperf = harness.find_binary("iperf3")
    argv = [iperf, "-c", "127.0.0.1", "-p", str(port), "-P", str(args.streams), "-t", str(args.duration), "-J"]
    for attempt in range(BULK_ATTEMPTS):
        user0, sys0 = harness.tree_cpu(proc.popen.pid)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=args.duration + 60, check=False)
        user1, sys1 = harness.tree_cpu(proc.popen.pid)
        # iperf3 -s serves one test at a time and refuses a client while it ends the last one.
        if "busy" not in done.stdout or attempt == BULK_ATTEMPTS - 1:
            break
        time.sleep(0.5)
    try:
        report = json.loads(done.stdout)
        received = report["end"]["sum_received"]
    except (ValueError, KeyError) as exc:
        raise harness.BenchError(f"{proc.name}: iperf3 gave no result: {(done.stdout + done.stderr)[-400:]}") from exc
    cpu = (user1 - user0) + (sys1 - sys0)
    gbits = received["bytes"] * 8 / 1e9
    return Bulk(
        proxy=proc.name,
        streams=args.streams,
        seconds=round(received["seconds"], 2),
        gbit_s=round(received["bits_per_second"] / 1e9, 2),
        cpu_s=round(cpu, 2),
        gbit_per_core=round(gbits / cpu, 2) if cpu > 0 else None,
        round=rnd,
    )


def run_connections(args: argparse.Namespace, proc: harness.Proc, port: int, rnd: int) -> Connections:
    # harness.measure runs the warm-up and reads the proxy's CPU around the measured wrk run.
    m = harness.measure(args, proc, port, "close")
    return Connections(
        proxy=proc.name,
        connections=m.requests,
        per_s=m.rps,
        errors=sum(m.socket_errors.values()) + m.non_2xx_3xx,
        cpu_s=m.cpu_s,
        per_core=m.rps_per_core,
        cpu_us_per_conn=m.cpu_us_per_req,
        round=rnd,
    )


@dataclass
class Results:
    bulk: list[Bulk] = field(default_factory=list)  # the median rounds
    connections: list[Connections] = field(default_factory=list)
    bulk_rounds: list[Bulk] = field(default_factory=list)  # every round
    connection_rounds: list[Connections] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


def bench_proxy(args: argparse.Namespace, proxy: str, tmp: Path, ports: Ports, out: Results, rnd: int) -> None:
    argv = proxy_argv(args, proxy, tmp, ports)
    label = f"{proxy} [round {rnd}/{args.repeat}]" if args.repeat > 1 else proxy
    harness.progress(f"{label}: {shlex.join(argv)}")
    # Only the web port is probed: a probe through the sink port would start an iperf3 test
    # that the server is still tearing down when the measured client connects (it then
    # refuses it as busy). Every proxy here opens both listeners at once.
    with harness.listening(proxy, argv, tmp, (ports.relay_web,)) as proc:
        bulk = run_bulk(args, proc, ports.relay_sink, rnd)
        out.bulk_rounds.append(bulk)
        harness.progress(
            f"{label}: bulk {bulk.gbit_s:.2f} Gbit/s, {harness.fmt(bulk.gbit_per_core, '{:.2f}')} per core"
        )
        conns = run_connections(args, proc, ports.relay_web, rnd)
        out.connection_rounds.append(conns)
        harness.progress(
            f"{label}: {conns.per_s:,.0f} new connections/s, {harness.fmt(conns.per_core, '{:,.0f}')} per core"
        )
        harness.check_alive(proc, proxy)


def per_core(measured: Bulk | Connections) -> float | None:
    return measured.gbit_per_core if isinstance(measured, Bulk) else measured.per_core


def ratios(out: Results) -> dict[str, float | None]:
    """balancer over each peer, per figure: the ratio of the median rounds."""
    figures: dict[str, list[Bulk] | list[Connections]] = {
        "bulk_per_core": out.bulk,
        "new_connections_per_core": out.connections,
    }
    found: dict[str, float | None] = {}
    for peer in ("haproxy", "pproxy"):
        for name, measured in figures.items():
            values = {m.proxy: per_core(m) for m in measured}
            mine, theirs = values.get("balancer"), values.get(peer)
            if mine is not None and theirs:
                found[f"{name} balancer/{peer}"] = round(mine / theirs, 3)
    return found


def round_ratios(out: Results) -> dict[str, list[float]]:
    """balancer over each peer, per figure, within each round (the two measured one after the
    other): how far one round strays from the next."""
    figures: dict[str, list[Bulk] | list[Connections]] = {
        "bulk_per_core": out.bulk_rounds,
        "new_connections_per_core": out.connection_rounds,
    }
    found: dict[str, list[float]] = {}
    for name, measured in figures.items():
        by_key = {(m.proxy, m.round): per_core(m) for m in measured}
        rounds = sorted({r for _, r in by_key})
        for peer in ("haproxy", "pproxy"):
            paired = [
                mine / theirs
                for r in rounds
                if (mine := by_key.get(("balancer", r))) is not None and (theirs := by_key.get((peer, r)))
            ]
            if paired:
                found[f"{name} balancer/{peer}"] = [round(x, 3) for x in paired]
    return found


def report(args: argparse.Namespace, out: Results, meta: dict[str, object]) -> int:
    rounds = f", median of {args.repeat} interleaved rounds by per proxy core" if args.repeat > 1 else ""
    if out.bulk:
        print(f"\nL4 bulk throughput (iperf3 -P {args.streams} -t {args.duration} through the relay{rounds})")
        print(
            harness.text_table(
                ("proxy", "Gbit/s", "proxy CPU s", "Gbit per proxy core"),
                [
                    (b.proxy, f"{b.gbit_s:.2f}", f"{b.cpu_s:.2f}", harness.fmt(b.gbit_per_core, "{:.2f}"))
                    for b in out.bulk
                ],
            )
        )
    if out.connections:
        print(f"\nL4 new connections (wrk -c{args.connections} -H 'Connection: close' through the relay{rounds})")
        print(
            harness.text_table(
                ("proxy", "conn/s", "errors", "proxy CPU s", "CPU µs/conn", "conn per proxy core"),
                [
                    (
                        c.proxy,
                        f"{c.per_s:,.0f}",
                        str(c.errors),
                        f"{c.cpu_s:.2f}",
                        harness.fmt(c.cpu_us_per_conn, "{:.1f}"),
                        harness.fmt(c.per_core, "{:,.0f}"),
                    )
                    for c in out.connections
                ],
            )
        )
    rat = ratios(out)
    per_round = round_ratios(out)
    for name, value in rat.items():
        spread = sorted(per_round.get(name, []))
        cell = f"  {name}: {harness.fmt(value, '{:.2f}x')}"
        if len(spread) > 1:
            cell += f" (rounds {spread[0]:.2f}-{spread[-1]:.2f}x, median {spread[len(spread) // 2]:.2f}x)"
        print(cell)
    data: dict[str, object] = {
        **meta,
        "rounds": args.repeat,
        "bulk": [asdict(b) for b in out.bulk],
        "connections": [asdict(c) for c in out.connections],
        "bulk_rounds": [asdict(b) for b in out.bulk_rounds],
        "connection_rounds": [asdict(c) for c in out.connection_rounds],
        "ratios": rat,
        "round_ratios": per_round,
        "failures": out.failures,
    }
    return harness.conclude(args.output, data, out.failures)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_part_options(
        p, PROXIES, DEFAULT_OUTPUT, "keep configs and logs", duration=10, duration_of="iperf3 and wrk run"
    )
    p.add_argument("--streams", type=int, default=4, help="iperf3 -P, parallel bulk streams (default 4)")
    p.add_argument("--connections", type=int, default=64, help="wrk -c for the new-connection run (default 64)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of unmeasured wrk before the run")
    p.add_argument("--repeat", type=int, default=1, help="rounds over all proxies; the median is reported")
    args = harness.parse_part_args(p, argv)
    if args.duration <= 0 or min(args.streams, args.connections, args.repeat) < 1 or args.warmup < 0:
        p.error("--duration, --streams, --connections and --repeat must be positive")
    return args


def measure_all(args: argparse.Namespace, tmp: Path) -> Results:
    out = Results()
    free = harness.free_ports(6)
    ports = Ports(sink=free[0], web=free[1], relay_sink=free[2], relay_web=free[3])
    sink_argv = [harness.find_binary("iperf3"), "-s", "-B", "127.0.0.1", "-p", str(ports.sink)]
    with (
        harness.nginx_backend(tmp, harness.Ports(free[1], free[4], 0, 0, 0)),
        harness.listening("sink", sink_argv, tmp, (ports.sink,)),
    ):
        harness.run_rounds(
            args, PROXIES, out.failures, lambda proxy, rnd: bench_proxy(args, proxy, tmp, ports, out, rnd)
        )
    out.bulk = harness.median_rounds(out.bulk_rounds, lambda b: b.proxy, per_core)
    out.connections = harness.median_rounds(out.connection_rounds, lambda c: c.proxy, per_core)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    meta: dict[str, object] = {**harness.metadata(args), "streams": args.streams}
    meta["versions"] = {**meta["versions"], "iperf3": harness.version_of(["iperf3", "--version"])}  # type: ignore[dict-item]
    meta["versions"]["pproxy"] = peers.version("pproxy")  # type: ignore[index]
    return harness.bench_main(
        "balancer-bench-tcp-", args.keep_tmp, lambda tmp: measure_all(args, tmp), lambda out: report(args, out, meta)
    )


if __name__ == "__main__":
    sys.exit(main())
