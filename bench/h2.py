#!/usr/bin/env python3
"""Benchmark HTTP/2 to clients: balancer vs HAProxy in the same run, with h2load.

Each proxy (1 HAProxy thread, 1 balancer worker) serves two frontends to the NGINX backend of
bench/run.py (`return 200 "hello\\n"`): one over TLS with ALPN h2 (ECDSA P-256 certificate, made
by bench/tls.py's helper) and one in cleartext h2c (prior knowledge: HAProxy `proto h2`, balancer
`h2c = true`). For every frontend, `h2load -t1 -c CONNECTIONS -m STREAMS -D DURATION` runs with
1 and with 100 concurrent streams per connection (--streams). Figures: req/s, failed requests,
the proxy's CPU seconds over the run (user+system of its process tree, from /proc, as run.py reads
them), CPU µs per request and req/s per proxy core, the figure to compare on a shared machine.

Usage: .venv/bin/python bench/h2.py [--duration 5] [--connections 16] [--streams 1,100] [--repeat 5]
With --repeat, the proxies take turns round after round and each figure is the median run.
Prints a table and the balancer/HAProxy ratios; writes JSON to bench/results/h2-latest.json.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # bench/run.py: processes, the nginx backend, CPU time, tables
import tls as tlsbench  # bench/tls.py: the self-signed certificate

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO / "bench" / "results" / "h2-latest.json"
PROXIES = ("haproxy", "balancer")
TRANSPORTS = ("tls", "h2c")


@dataclass(frozen=True)
class Ports:
    backend: int
    tls: int
    h2c: int


def haproxy_config(ports: Ports, pem: Path) -> str:
    return f"""\
global
    nbthread 1
    maxconn 8000

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always

frontend fe_tls
    bind 127.0.0.1:{ports.tls} ssl crt {pem} alpn h2,http/1.1
    default_backend web

frontend fe_h2c
    bind 127.0.0.1:{ports.h2c} proto h2
    default_backend web

backend web
    server s1 127.0.0.1:{ports.backend}
"""


def balancer_config(ports: Ports, pem: Path, idle: int) -> str:
    # `idle`: server connections kept idle. HAProxy keeps every idle server connection (no
    # `pool-max-conn` bound by default); ours keeps 64 per server unless told, and with
    # h2load -m100 (1,600 requests at the server at once, in bursts of 100 per client
    # connection) most requests would then open and close a server connection. Both keep
    # what the load needs: as many as there can be requests in flight.
    return f"""\
[global]
workers = 1
grace = "1s"

[[frontend]]
name = "fe_tls"
bind = ["127.0.0.1:{ports.tls}"]
mode = "http"
default_backend = "web"
tls = {{ cert = ["{pem}"], alpn = ["h2", "http/1.1"] }}

[[frontend]]
name = "fe_h2c"
bind = ["127.0.0.1:{ports.h2c}"]
mode = "http"
default_backend = "web"
h2c = true

[[backend]]
name = "web"
mode = "http"

pool = {{ max_idle_per_server = {idle} }}

  [[backend.server]]
  name = "s1"
  address = "127.0.0.1:{ports.backend}"
"""


def proxy_argv(args: argparse.Namespace, proxy: str, tmp: Path, ports: Ports, pem: Path) -> list[str]:
    if proxy == "haproxy":
        conf = tmp / "haproxy-h2.cfg"
        conf.write_text(haproxy_config(ports, pem))
        return [harness.find_binary("haproxy"), "-db", "-f", str(conf)]
    conf = tmp / "balancer-h2.toml"
    conf.write_text(balancer_config(ports, pem, args.connections * max(args.streams)))
    return harness.balancer_argv(args.balancer_cmd, conf)


# --------------------------------------------------------------------------- measures


@dataclass
class H2Run:
    proxy: str
    transport: str  # "tls" (ALPN h2) or "h2c"
    streams: int  # h2load -m
    requests: int  # succeeded
    failed: int  # failed + errored + timeout
    rps: float
    cpu_s: float
    cpu_us_per_req: float | None
    rps_per_core: float | None
    round: int = 1


FINISHED = re.compile(r"finished in ([\d.]+)s, ([\d.]+) req/s")
REQUESTS = re.compile(
    r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout"
)


def parse_h2load(output: str) -> tuple[float, int, int]:
    """(req/s, succeeded, failed+errored+timeout) from h2load's summary; BenchError without one."""
    finished, requests = FINISHED.search(output), REQUESTS.search(output)
    if finished is None or requests is None:
        raise harness.BenchError(f"h2load gave no summary: {output[-400:]}")
    failed = sum(int(requests.group(i)) for i in (3, 4, 5))
    return float(finished.group(2)), int(requests.group(2)), failed


def h2load_argv(args: argparse.Namespace, url: str, streams: int, seconds: int) -> list[str]:
    h2load = harness.find_binary("h2load")
    return [h2load, "-t1", "-c", str(args.connections), "-m", str(streams), "-D", str(seconds), url]


def run_h2load(args: argparse.Namespace, proc: harness.Proc, url: str, transport: str, streams: int) -> H2Run:
    if args.warmup:
        subprocess.run(
            h2load_argv(args, url, streams, args.warmup), capture_output=True, timeout=args.warmup + 60, check=False
        )
    user0, sys0 = harness.tree_cpu(proc.popen.pid)
    done = subprocess.run(
        h2load_argv(args, url, streams, args.duration),
        capture_output=True,
        text=True,
        timeout=args.duration + 60,
        check=False,
    )
    user1, sys1 = harness.tree_cpu(proc.popen.pid)
    rps, ok, failed = parse_h2load(done.stdout + done.stderr)
    cpu = (user1 - user0) + (sys1 - sys0)
    return H2Run(
        proxy=proc.name,
        transport=transport,
        streams=streams,
        requests=ok,
        failed=failed,
        rps=round(rps, 1),
        cpu_s=round(cpu, 2),
        cpu_us_per_req=round(cpu * 1e6 / ok, 1) if ok else None,
        rps_per_core=round(ok / cpu, 1) if cpu > 0 else None,
    )


@dataclass
class Results:
    runs: list[H2Run] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)

    def summary(self) -> list[H2Run]:
        """One run per proxy, transport and streams: the median round when there are several."""
        keys = dict.fromkeys((r.proxy, r.transport, r.streams) for r in self.runs)
        return [harness.median_run([r for r in self.runs if (r.proxy, r.transport, r.streams) == key]) for key in keys]


def bench_proxy(
    args: argparse.Namespace, proxy: str, tmp: Path, ports: Ports, pem: Path, out: Results, rnd: int
) -> None:
    argv = proxy_argv(args, proxy, tmp, ports, pem)
    label = f"{proxy} [round {rnd}/{args.repeat}]" if args.repeat > 1 else proxy
    harness.progress(f"{label}: {shlex.join(argv)}")
    with harness.listening(proxy, argv, tmp, (ports.tls, ports.h2c)) as proc:
        for transport in args.transports:
            scheme, port = ("https", ports.tls) if transport == "tls" else ("http", ports.h2c)
            for streams in args.streams:
                run = run_h2load(args, proc, f"{scheme}://127.0.0.1:{port}/", transport, streams)
                run.round = rnd
                out.runs.append(run)
                harness.progress(
                    f"{label} {transport} -m{streams}: {run.rps:,.0f} req/s, "
                    f"{harness.fmt(run.rps_per_core, '{:,.0f}')} per core, {run.failed} failed"
                )
                harness.check_alive(proc, proxy)


def ratios(summary: list[H2Run]) -> dict[str, float | None]:
    found: dict[str, float | None] = {}
    per_core = {(r.proxy, r.transport, r.streams): r.rps_per_core for r in summary}
    for (proxy, transport, streams), mine in per_core.items():
        theirs = per_core.get(("haproxy", transport, streams))
        if proxy == "balancer" and mine is not None and theirs:
            found[f"{transport} -m{streams} per_core balancer/haproxy"] = round(mine / theirs, 3)
    return found


def report(args: argparse.Namespace, out: Results, meta: dict[str, object]) -> int:
    summary = out.summary()
    rounds = f", median of {args.repeat} interleaved rounds by req/s per core" if args.repeat > 1 else ""
    print(f"\nHTTP/2 (h2load -t1 -c{args.connections} -D {args.duration}, NGINX backend{rounds})")
    print(
        harness.text_table(
            ("proxy", "transport", "streams", "req/s", "failed", "proxy CPU s", "CPU µs/req", "req/s per core"),
            [
                (
                    r.proxy,
                    r.transport,
                    str(r.streams),
                    f"{r.rps:,.0f}",
                    str(r.failed),
                    f"{r.cpu_s:.2f}",
                    harness.fmt(r.cpu_us_per_req, "{:.1f}"),
                    harness.fmt(r.rps_per_core, "{:,.0f}"),
                )
                for r in summary
            ],
        )
    )
    rat = ratios(summary)
    for name, value in rat.items():
        print(f"  {name}: {harness.fmt(value, '{:.2f}x')}")
    data: dict[str, object] = {**meta, "runs": [asdict(r) for r in summary], "ratios": rat, "failures": out.failures}
    if args.repeat > 1:
        data["rounds"] = [asdict(r) for r in out.runs]
    return harness.conclude(args.output, data, out.failures)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_part_options(
        p, PROXIES, DEFAULT_OUTPUT, "keep configs, certificate and logs", duration=5, duration_of="h2load run"
    )
    p.add_argument("--connections", type=int, default=16, help="h2load -c (default 16)")
    p.add_argument(
        "--streams", type=harness.csv_choice(("1", "10", "100")), default=["1", "100"], help="h2load -m values"
    )
    p.add_argument("--transports", type=harness.csv_choice(TRANSPORTS), default=list(TRANSPORTS), help="tls,h2c")
    p.add_argument("--warmup", type=int, default=1, help="seconds of unmeasured h2load before each run")
    p.add_argument("--repeat", type=int, default=1, help="rounds over both proxies; the median is reported")
    args = harness.parse_part_args(p, argv)
    if args.duration <= 0 or args.connections < 1 or args.warmup < 0 or args.repeat < 1:
        p.error("--duration, --connections and --repeat must be positive")
    args.streams = [int(s) for s in args.streams]
    return args


def measure_all(args: argparse.Namespace, tmp: Path) -> Results:
    out = Results()
    pem = tlsbench.make_pem(tmp, "ecdsa")
    free = harness.free_ports(4)
    ports = Ports(backend=free[0], tls=free[1], h2c=free[2])
    with harness.nginx_backend(tmp, harness.Ports(free[0], free[3], 0, 0, 0)):
        # Rounds interleave the proxies so a slow spell of a shared machine hits both alike.
        for rnd in range(1, args.repeat + 1):
            for proxy in (p for p in PROXIES if p in args.only and p not in out.failures):
                try:
                    bench_proxy(args, proxy, tmp, ports, pem, out, rnd)
                except harness.BenchError as exc:
                    out.failures[proxy] = str(exc)
                    harness.progress(f"{proxy}: FAILED: {exc}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    meta: dict[str, object] = {**harness.metadata(args), "streams": args.streams, "transports": args.transports}
    meta["versions"] = {**meta["versions"], "h2load": harness.version_of(["h2load", "--version"])}  # type: ignore[dict-item]
    started = time.monotonic()

    def finish(out: Results) -> int:
        meta["elapsed_s"] = round(time.monotonic() - started, 1)
        return report(args, out, meta)

    return harness.bench_main("balancer-bench-h2-", args.keep_tmp, lambda tmp: measure_all(args, tmp), finish)


if __name__ == "__main__":
    sys.exit(main())
