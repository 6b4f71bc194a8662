#!/usr/bin/env python3
"""Where a proxy's CPU time goes, balancer vs HAProxy: `perf record` during a wrk run.

For each proxy (as bench/run.py starts it) and each scenario (default: varied heads keep-alive,
i.e. the time of one request, and varied heads with `Connection: close`, i.e. the time of one
connection): a warm-up, then `perf record -e cpu-clock -g` on every process of the proxy while
wrk runs `--duration` seconds. Reported per run:

- user vs kernel: the proxy's CPU µs per request from /proc (as run.py), and the share of
  perf samples in the kernel;
- the share of samples per DSO (kernel, python, libssl, balancer's compiled modules, ...);
- the top symbols (self time).

Needs `perf` (Debian linux-perf) and root or kernel.perf_event_paranoid <= 1.

Usage: .venv/bin/python bench/profile.py [--duration 5] [--only haproxy,balancer] [--top 15]
Writes JSON to bench/results/profile-latest.json.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # bench/run.py: processes, configs, wrk, CPU time

BENCH = Path(__file__).resolve().parent
DEFAULT_OUTPUT = BENCH / "results" / "profile-latest.json"
PROXIES = ("haproxy", "balancer")
SCENARIOS = ("varied", "varied-close")


def tree_pids(root: int) -> list[int]:
    """The process and its live descendants (balancer: master and workers)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := harness.read_stat(int(entry))) is not None:
            parents[int(entry)] = stat[0]
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(child for child, parent in parents.items() if parent == pid)
    return found


def perf_report(data: Path, sort: str, top: int) -> list[tuple[float, str]]:
    """(percent, name) rows of `perf report --sort SORT` (self time), the first `top`."""
    argv = [
        harness.find_binary("perf"),
        "report",
        "-i",
        str(data),
        "--no-children",
        "--sort",
        sort,
        "--stdio",
        "-g",
        "none",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    rows: list[tuple[float, str]] = []
    for line in done.stdout.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+(.*\S)", line)
        if match:
            rows.append((float(match[1]), re.sub(r"\s+", " ", match[2])))
    return rows[:top]


def profile_one(args: argparse.Namespace, proc: harness.Proc, port: int, scenario: str, tmp: Path) -> dict[str, object]:
    harness.run_wrk(args, port, scenario, 1)  # warm-up
    data = tmp / f"{proc.name}-{scenario}.perf"
    pids = ",".join(map(str, tree_pids(proc.popen.pid)))
    perf = subprocess.Popen(
        [harness.find_binary("perf"), "record", "-e", "cpu-clock", "-F", "999", "-g", "-o", str(data), "-p", pids],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        m = harness.measure(args, proc, port, scenario)
    finally:
        perf.send_signal(signal.SIGINT)
        perf.wait(60)
    dsos = perf_report(data, "dso", args.top)
    kernel = sum(p for p, name in dsos if "kernel" in name)
    return {
        "proxy": proc.name,
        "scenario": scenario,
        "rps_per_core": m.rps_per_core,
        "user_us_per_req": m.user_us_per_req,
        "sys_us_per_req": m.sys_us_per_req,
        "kernel_sample_share": round(kernel, 1),
        "dsos": dsos,
        "symbols": perf_report(data, "dso,sym", args.top),
    }


def print_profile(entry: dict[str, object]) -> None:
    print(
        f"\n{entry['proxy']} / {entry['scenario']}: {harness.fmt(entry['rps_per_core'], '{:,.0f}')} req/s per core "  # type: ignore[arg-type]
        f"{entry['user_us_per_req']} µs user + {entry['sys_us_per_req']} µs kernel per request; "
        f"{entry['kernel_sample_share']}% of samples in the kernel"
    )
    for title in ("dsos", "symbols"):
        print(f"  by {title[:-1]}:")
        for percent, name in entry[title]:  # type: ignore[attr-defined]
            print(f"    {percent:5.1f}%  {name}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=5, help="seconds of wrk per profile (default 5)")
    p.add_argument("--connections", type=int, default=64, help="wrk -c (default 64)")
    p.add_argument("--top", type=int, default=15, help="rows of each report (default 15)")
    p.add_argument("--only", type=harness.csv_choice(PROXIES), default=list(PROXIES))
    p.add_argument("--scenarios", type=harness.csv_choice(tuple(harness.SCENARIOS)), default=list(SCENARIOS))
    p.add_argument("--balancer-cmd", default=harness.DEFAULT_BALANCER_CMD, help="as in bench/run.py")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results (default: %(default)s)")
    args = p.parse_args(argv)
    args.balancer_cmd = harness.with_config(args.balancer_cmd)
    args.threads, args.pin, args.repeat, args.warmup = 1, False, 1, 0  # what harness.measure reads
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, harness.on_sigterm)
    tmp = Path(tempfile.mkdtemp(prefix="balancer-bench-profile-"))
    tmp.chmod(0o755)  # nginx workers run as nobody when started as root
    entries: list[dict[str, object]] = []
    try:
        ports = harness.Ports(*harness.free_ports(7))
        backend_argv = harness.nginx_argv(tmp, "nginx-backend", harness.backend_config(tmp / "nginx-backend", ports))
        with harness.running("backend", backend_argv, tmp) as backend:
            harness.wait_for_port(backend, ports.backend1)
            for proxy in args.only:
                argv_ = harness.proxy_argv(proxy, tmp, ports, args.balancer_cmd)
                harness.progress(f"{proxy}: {shlex.join(argv_)}")
                with harness.running(proxy, argv_, tmp) as proc:
                    port = harness.proxy_port(proxy, ports)
                    harness.wait_for_port(proc, port)
                    for scenario in args.scenarios:
                        entry = profile_one(args, proc, port, scenario, tmp)
                        entries.append(entry)
                        print_profile(entry)
    except harness.BenchError as exc:
        harness.progress(f"FAILED: {exc}")
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    harness.write_json(args.output, {**harness.metadata(args), "profiles": entries})
    harness.progress(f"\nJSON written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
