#!/usr/bin/env python3
"""Added latency at half of peak load: balancer vs HAProxy (and NGINX), against the backend directly.

1. Peak: each proxy, as bench/run.py starts it (same configs, full default path for balancer),
   is loaded flat out with varied heads (`wrk -s varied.lua`) for `--duration` seconds.
2. The offered rate is half of the lowest peak (or `--rate`), the same for every target, so
   they all see the same load.
3. Paced: `wrk -s paced.lua` with `--paced-connections` connections, each waiting
   connections / rate seconds after every response (wrk's `delay()`), heads varying, for
   `--duration` seconds, once to the backend directly and once through each proxy. wrk's
   percentiles give p50 / p90 / p99; **added** latency is the proxy's minus the backend's.

wrk2 (constant-rate with coordinated-omission correction) is not in Debian; a paced closed loop
like this one under-reports tail latency when a target stalls (a stalled connection sends
nothing), so the achieved rate is printed beside each row: a row that fell short of the offered
rate stalled.

Usage: .venv/bin/python bench/latency.py [--duration 10] [--rate 0] [--only haproxy,balancer]
Writes JSON to bench/results/latency-latest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # bench/run.py: processes, configs of every proxy, wrk parsing

BENCH = Path(__file__).resolve().parent
DEFAULT_OUTPUT = BENCH / "results" / "latency-latest.json"
PROXIES = ("haproxy", "nginx", "balancer")
DIRECT = "direct"  # the backend without a proxy


@dataclass
class Paced:
    target: str
    offered_rps: float
    achieved_rps: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    errors: int
    added_p50_ms: float | None = None
    added_p99_ms: float | None = None


@dataclass
class Results:
    peaks: dict[str, float] = field(default_factory=dict)
    paced: list[Paced] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


def percentile(output: str, label: str) -> float | None:
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == label:
            return harness.parse_ms(parts[1])
    return None


def run_paced(args: argparse.Namespace, target: str, port: int, rate: float) -> Paced:
    delay_ms = args.paced_connections * 1000.0 / rate
    argv = [
        harness.find_binary("wrk"),
        "-t1",
        f"-c{args.paced_connections}",
        f"-d{args.duration}s",
        "--latency",
        "-s",
        str(BENCH / "paced.lua"),
        f"http://127.0.0.1:{port}/",
        "--",
        f"{delay_ms:.3f}",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=args.duration + 60, check=False)
    if done.returncode != 0:
        raise harness.BenchError(f"wrk exited with {done.returncode}: {done.stderr.strip()[:300]}")
    wrk = harness.parse_wrk(done.stdout)
    return Paced(
        target=target,
        offered_rps=round(rate, 1),
        achieved_rps=wrk.rps,
        p50_ms=harness.rounded(wrk.p50_ms),
        p90_ms=harness.rounded(percentile(done.stdout, "90%")),
        p99_ms=harness.rounded(wrk.p99_ms),
        errors=sum(wrk.socket_errors.values()) + wrk.non_2xx_3xx,
    )


@contextlib.contextmanager
def proxy_serving(args: argparse.Namespace, proxy: str, tmp: Path, ports: harness.Ports) -> Iterator[harness.Proc]:
    """`proxy` started as bench/run.py starts it, checked to balance, stopped on leaving."""
    argv = harness.proxy_argv(proxy, tmp, ports, args.balancer_cmd)
    harness.progress(f"{proxy}: {shlex.join(argv)}")
    port = harness.proxy_port(proxy, ports)
    with harness.listening(proxy, argv, tmp, (port,)) as proc:
        harness.check_balancing(proxy, port)
        yield proc


def measure_all(args: argparse.Namespace, tmp: Path, ports: harness.Ports, out: Results) -> None:
    proxies = [p for p in PROXIES if p in args.only]
    for proxy in proxies:
        try:
            with proxy_serving(args, proxy, tmp, ports) as proc:
                peak = harness.measure(args, proc, harness.proxy_port(proxy, ports), "varied")
            out.peaks[proxy] = peak.rps
            harness.progress(f"{proxy}: peak {peak.rps:,.0f} req/s (varied heads)")
        except harness.BenchError as exc:
            out.failures[proxy] = str(exc)
            harness.progress(f"{proxy}: FAILED: {exc}")
    if not out.peaks:
        return
    rate = args.rate or min(out.peaks.values()) / 2
    harness.progress(f"offered rate: {rate:,.0f} req/s to every target")
    direct = run_paced(args, DIRECT, ports.backend1, rate)
    out.paced.append(direct)
    for proxy in (p for p in proxies if p in out.peaks):
        try:
            with proxy_serving(args, proxy, tmp, ports):
                paced = run_paced(args, proxy, harness.proxy_port(proxy, ports), rate)
        except harness.BenchError as exc:
            out.failures[proxy] = str(exc)
            continue
        if paced.p50_ms is not None and direct.p50_ms is not None:
            paced.added_p50_ms = round(paced.p50_ms - direct.p50_ms, 3)
        if paced.p99_ms is not None and direct.p99_ms is not None:
            paced.added_p99_ms = round(paced.p99_ms - direct.p99_ms, 3)
        out.paced.append(paced)
        harness.progress(f"{proxy}: p50 {paced.p50_ms} ms, p99 {paced.p99_ms} ms at {paced.achieved_rps:,.0f} req/s")


def report(args: argparse.Namespace, out: Results, meta: dict[str, object]) -> int:
    if out.paced:
        print(f"\nLatency at half of peak (wrk -c{args.paced_connections} paced, varied heads, {args.duration}s)")
        print(
            harness.text_table(
                ("target", "offered/s", "achieved/s", "p50 ms", "p90 ms", "p99 ms", "added p50", "added p99", "errors"),
                [
                    (
                        p.target,
                        f"{p.offered_rps:,.0f}",
                        f"{p.achieved_rps:,.0f}",
                        harness.fmt(p.p50_ms, "{:.3f}"),
                        harness.fmt(p.p90_ms, "{:.3f}"),
                        harness.fmt(p.p99_ms, "{:.3f}"),
                        harness.fmt(p.added_p50_ms, "{:+.3f}"),
                        harness.fmt(p.added_p99_ms, "{:+.3f}"),
                        str(p.errors),
                    )
                    for p in out.paced
                ],
            )
        )
    data: dict[str, object] = {
        **meta,
        "paced_connections": args.paced_connections,
        "peaks_rps": out.peaks,
        "paced": [asdict(p) for p in out.paced],
        "failures": out.failures,
    }
    return harness.conclude(args.output, data, out.failures)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_part_options(
        p, PROXIES, DEFAULT_OUTPUT, "keep configs and logs", duration=10, duration_of="peak and paced run"
    )
    p.add_argument("--connections", type=int, default=64, help="wrk -c for the peak runs (default 64)")
    p.add_argument("--paced-connections", type=int, default=32, help="wrk -c for the paced runs (default 32)")
    p.add_argument("--rate", type=float, default=0.0, help="offered req/s; 0: half of the lowest peak (default)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of unmeasured wrk before each peak run")
    args = harness.parse_part_args(p, argv)
    if args.duration <= 0 or args.connections < 1 or args.paced_connections < 1 or args.rate < 0:
        p.error("--duration and the connection counts must be positive, --rate at least 0")
    return args


def run_all(args: argparse.Namespace, tmp: Path) -> Results:
    out = Results()
    ports = harness.Ports(*harness.free_ports(7))
    with harness.nginx_backend(tmp, ports):
        measure_all(args, tmp, ports, out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    meta = harness.metadata(args)
    return harness.bench_main(
        "balancer-bench-latency-", args.keep_tmp, lambda tmp: run_all(args, tmp), lambda out: report(args, out, meta)
    )


if __name__ == "__main__":
    sys.exit(main())
