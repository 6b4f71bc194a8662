#!/usr/bin/env python3
"""Benchmark balancer against HAProxy and NGINX as HTTP reverse proxies on this machine.

Beside them runs "pyfloor" (bench/floor_proxy.py), a bare uvloop + httptools relay: the floor plain
Python reaches here, so the gap between balancer and HAProxy splits into Python's part and
balancer's own.

One NGINX process (1 worker, two server blocks) is the backend for every proxy. Each proxy is
started in turn on its own loopback port, checked to really balance over both backend servers,
then loaded with wrk in each scenario (SCENARIOS: varied heads first, keep-alive and `Connection:
close`, identical heads, POST bodies). Proxy CPU time is read
from /proc before and after each wrk run, because wrk, the backend and the proxy share the cores:
req/s alone says little, req/s per proxy core is the comparable figure (see
../shared/REFERENCE.md).

Usage: .venv/bin/python bench/run.py [--duration 10] [--connections 64] [--only balancer] ...
Writes a table to stdout and JSON to bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Protocol, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # bench/peers.py: the Python peers' venv

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO / "bench" / "results" / "latest.json"
DEFAULT_BALANCER_CMD = f"{REPO / '.venv' / 'bin' / 'balancer'} run -c {{config}}"

PROXIES = ("haproxy", "nginx", "pyfloor", "pyproxy", "balancer")
# Python peers that cannot be an HTTP reverse proxy: reported as such (bench/peers.py).
UNABLE = {"pproxy": "pproxy 2.7.9 has no HTTP reverse proxy mode (only tunnels to one address): measured in tcp.py"}
FLOOR_PROXY = REPO / "bench" / "floor_proxy.py"
# Ratios of req/s per proxy core printed and kept in the JSON: (numerator, denominator).
RATIOS = (
    ("balancer", "haproxy"),
    ("balancer", "nginx"),
    ("balancer", "pyfloor"),
    ("pyfloor", "haproxy"),
    ("balancer", "pyproxy"),
)
BENCH = Path(__file__).resolve().parent
# Extra wrk arguments per scenario; those after "--" go after the URL (the lua script's arguments).
# Every head different, browser-like (bench/varied.lua) is what users send, so it comes first and
# is the figure to quote; identical heads (wrk's default) are the second line.
SCENARIOS: dict[str, list[str]] = {
    "varied": ["-s", str(BENCH / "varied.lua")],
    "varied-close": ["-s", str(BENCH / "varied.lua"), "-H", "Connection: close"],
    "keepalive": [],
    "close": ["-H", "Connection: close"],
    # POST bodies, keep-alive (bench/body.lua).
    "post-1k": ["-s", str(BENCH / "body.lua"), "--", "1024"],
    "post-100k": ["-s", str(BENCH / "body.lua"), "--", "102400"],
}
BODY = b"hello\n"

START_TIMEOUT = 15.0  # seconds for a process to start listening
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
HTTP_TIMEOUT = 5.0  # per request of the balancing check
CHECK_REQUESTS = 6  # enough for roundrobin over two servers to show both
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A proxy could not be started or checked; the other proxies still run."""


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclass(frozen=True)
class Ports:
    backend1: int
    backend2: int
    haproxy: int
    nginx: int
    balancer: int
    pyfloor: int = 0  # last and defaulted: bench/tls.py builds Ports from five ports, for the backend
    pyproxy: int = 0


def free_ports(count: int) -> list[int]:
    """Ask the kernel for distinct free loopback ports (all held open at once so they differ)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def find_binary(name: str) -> str:
    # /usr/sbin is not on a normal user's PATH, but that is where Debian puts nginx and haproxy.
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if path is None:
        raise BenchError(f"{name} not found (run `bash scripts/system-deps.sh bench` as root)")
    return path


def start(name: str, argv: Sequence[str], tmp: Path) -> Proc:
    log = tmp / f"{name}.out"
    with log.open("wb") as out:
        # Own session: Ctrl-C on the terminal reaches only us, and we can signal the whole
        # process group (nginx master + worker, balancer workers) when cleaning up.
        popen = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Proc(name, popen, log)


def signal_group(proc: Proc, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.popen.pid, sig)


def stop(proc: Proc) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.popen.poll() is not None:
            break
        signal_group(proc, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(STOP_TIMEOUT)
    # The leader is gone; still sweep stragglers in its group (e.g. a worker orphaned by a crash).
    signal_group(proc, signal.SIGKILL)


def pinned(argv: Sequence[str], role: str, pin: bool) -> list[str]:
    """Prefix argv with taskset when --pin: the proxy gets the first CPU, the load the others."""
    if not pin:
        return list(argv)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise BenchError("--pin needs at least two CPUs")
    chosen = cpus[:1] if role == "proxy" else cpus[1:]
    return [find_binary("taskset"), "-c", ",".join(map(str, chosen)), *argv]


@contextlib.contextmanager
def running(name: str, argv: Sequence[str], tmp: Path) -> Iterator[Proc]:
    proc = start(name, argv, tmp)
    try:
        yield proc
    finally:
        # A second Ctrl-C must not cut the cleanup short and leave the process behind; the
        # cleanup itself is bounded by STOP_TIMEOUT, and a pending signal is delivered after it.
        masked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            stop(proc)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, masked)


@contextlib.contextmanager
def listening(name: str, argv: Sequence[str], tmp: Path, ports: Sequence[int]) -> Iterator[Proc]:
    """A process's life in a bench: started as `running` starts it, handed over once it accepts
    connections on every one of `ports` (BenchError if it exits or is not listening by then),
    stopped on leaving."""
    with running(name, argv, tmp) as proc:
        for port in ports:
            wait_for_port(proc, port)
        yield proc


def check_alive(proc: Proc, what: str) -> None:
    """BenchError, with the end of its log, when `proc` has exited; `what` names it in the message."""
    if proc.popen.poll() is not None:
        raise BenchError(f"{what} died:\n{log_tail(proc)}")


def log_tail(proc: Proc, lines: int = 15) -> str:
    try:
        text = proc.log.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def wait_for_port(proc: Proc, port: int, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.popen.poll()
        if code is not None:
            raise BenchError(f"{proc.name} exited with code {code} before listening:\n{log_tail(proc)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise BenchError(f"{proc.name} not listening on 127.0.0.1:{port} after {timeout:.0f}s:\n{log_tail(proc)}")


# --------------------------------------------------------------------------- configs


def nginx_prelude(prefix: Path) -> str:
    # Everything nginx writes goes under its own prefix so the system nginx is never touched.
    return f"""\
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
"""


def nginx_http_prelude(prefix: Path) -> str:
    # Debian's compiled-in temp paths are under /var/lib/nginx, shared with the system nginx.
    temps = "\n".join(
        f"    {kind}_temp_path {prefix}/{kind}_temp;" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # keepalive_requests: nginx closes a connection after 1000 requests by default; lifted so
    # the keep-alive scenario measures keep-alive for every proxy alike.
    return f"""\
    access_log off;
    keepalive_requests 1000000;
{temps}
"""


def backend_config(prefix: Path, ports: Ports) -> str:
    servers = "".join(
        f"""\
    server {{
        listen 127.0.0.1:{port};
        location / {{
            add_header X-Server {name};
            return 200 "hello\\n";
        }}
    }}
"""
        for name, port in (("s1", ports.backend1), ("s2", ports.backend2))
    )
    return f"{nginx_prelude(prefix)}http {{\n{nginx_http_prelude(prefix)}{servers}}}\n"


def nginx_proxy_config(prefix: Path, ports: Ports) -> str:
    # X-Forwarded-For like `option forwardfor` in HAProxy and `forwardfor = true` in balancer,
    # so all three do the same header work per request.
    return f"""\
{nginx_prelude(prefix)}http {{
{nginx_http_prelude(prefix)}
    upstream web {{
        server 127.0.0.1:{ports.backend1};
        server 127.0.0.1:{ports.backend2};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{ports.nginx};
        location / {{
            proxy_pass http://web;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


def haproxy_config(ports: Ports) -> str:
    # No `log` line anywhere: HAProxy logs nothing. Timeouts only to silence its warnings.
    return f"""\
global
    nbthread 1
    maxconn 4096

defaults
    mode http
    option forwardfor
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend fe
    bind 127.0.0.1:{ports.haproxy}
    default_backend web

backend web
    balance roundrobin
    server s1 127.0.0.1:{ports.backend1}
    server s2 127.0.0.1:{ports.backend2}
"""


def balancer_config(tmp: Path, ports: Ports, workers: int = 1) -> str:
    # The full default path: two rules evaluated (neither matches "/"), forwardfor, access log
    # on. grace is short so stopping between runs stays quick.
    return f"""\
[global]
workers = {workers}
grace = "2s"
log = "file:{tmp}/access.log"

[[frontend]]
name = "bench"
bind = ["127.0.0.1:{ports.balancer}"]
mode = "http"
default_backend = "web"
forwardfor = true

  [[frontend.rule]]
  if = {{ path_beg = ["/api"] }}
  use_backend = "web"

  [[frontend.rule]]
  if = {{ src = ["10.66.0.0/16"] }}
  action = "deny"

[[backend]]
name = "web"
mode = "http"
balance = "roundrobin"

  [[backend.server]]
  name = "s1"
  address = "127.0.0.1:{ports.backend1}"

  [[backend.server]]
  name = "s2"
  address = "127.0.0.1:{ports.backend2}"
"""


@contextlib.contextmanager
def nginx_backend(tmp: Path, ports: Ports, pin: bool = False) -> Iterator[Proc]:
    """The NGINX backend of every bench (servers s1 and s2 on ports.backend1 and ports.backend2),
    listening on both for the life of the block."""
    argv = pinned(nginx_argv(tmp, "nginx-backend", backend_config(tmp / "nginx-backend", ports)), "load", pin)
    progress(f"backend: nginx on 127.0.0.1:{ports.backend1} (s1) and 127.0.0.1:{ports.backend2} (s2)")
    with listening("backend", argv, tmp, (ports.backend1, ports.backend2)) as backend:
        yield backend


def balancer_argv(balancer_cmd: str, conf: Path) -> list[str]:
    """The --balancer-cmd command line (after with_config) with its {config} placeholder set to `conf`."""
    return shlex.split(balancer_cmd.replace("{config}", shlex.quote(str(conf))))


def nginx_argv(tmp: Path, name: str, config: str) -> list[str]:
    prefix = tmp / name
    prefix.mkdir(exist_ok=True)  # reused by every round
    conf = prefix / "nginx.conf"
    conf.write_text(config)
    # -e: the startup error log too, before the config's error_log is read.
    return [find_binary("nginx"), "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "error.log")]


def proxy_argv(proxy: str, tmp: Path, ports: Ports, balancer_cmd: str, workers: int = 1) -> list[str]:
    if proxy == "haproxy":
        conf = tmp / "haproxy.cfg"
        conf.write_text(haproxy_config(ports))
        return [find_binary("haproxy"), "-db", "-f", str(conf)]  # -db: stay in the foreground
    if proxy == "nginx":
        prefix = tmp / "nginx-proxy"
        return nginx_argv(tmp, "nginx-proxy", nginx_proxy_config(prefix, ports))
    if proxy == "pyproxy":
        conf = tmp / "pyproxy.json"
        conf.write_text(peers.pyproxy_config(ports.pyproxy, [ports.backend1, ports.backend2]))
        try:
            return peers.pyproxy_argv(conf)
        except peers.NotInstalled as exc:
            raise BenchError(str(exc)) from exc
    if proxy == "pyfloor":
        # The same interpreter as the bench, i.e. the venv's, with its uvloop and httptools.
        servers = [arg for port in (ports.backend1, ports.backend2) for arg in ("--server", f"127.0.0.1:{port}")]
        return [sys.executable, str(FLOOR_PROXY), "--listen", f"127.0.0.1:{ports.pyfloor}", *servers]
    conf = tmp / "balancer.toml"
    conf.write_text(balancer_config(tmp, ports, workers))
    return balancer_argv(balancer_cmd, conf)


def proxy_port(proxy: str, ports: Ports) -> int:
    port: int = getattr(ports, proxy)
    return port


# --------------------------------------------------------------------------- checks


def check_balancing(proxy: str, port: int) -> list[str]:
    """Fail unless every response is 200 "hello\\n" and both backend servers answered."""
    seen: list[str] = []
    for _ in range(CHECK_REQUESTS):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=HTTP_TIMEOUT) as resp:
                status, body, server = resp.status, resp.read(), resp.headers.get("X-Server", "")
        except (urllib.error.URLError, OSError) as exc:
            raise BenchError(f"{proxy}: request failed: {exc}") from exc
        if status != 200 or body != BODY:
            raise BenchError(f"{proxy}: expected 200 {BODY!r}, got {status} {body[:80]!r}")
        seen.append(server)
    if not {"s1", "s2"} <= set(seen):
        raise BenchError(f"{proxy}: not balancing over both servers, X-Server seen: {seen}")
    return seen


# --------------------------------------------------------------------------- CPU time


def read_stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, utime, stime) in clock ticks, or None if the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rindex(")") + 2 :].split()
    return int(rest[1]), int(rest[11]), int(rest[12])


def tree_cpu(root: int) -> tuple[float, float]:
    """User and system CPU seconds of a process and all its live descendants (all threads)."""
    stats: dict[int, tuple[int, int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := read_stat(int(entry))) is not None:
            stats[int(entry)] = st
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    user = system = 0
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            user += stats[pid][1]
            system += stats[pid][2]
        todo.extend(children.get(pid, []))
    return user / CLK_TCK, system / CLK_TCK


# --------------------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    # wrk prints the line only when there are errors.
    socket_errors: dict[str, int] = field(default_factory=lambda: {"connect": 0, "read": 0, "write": 0, "timeout": 0})
    non_2xx_3xx: int = 0


_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match[1]) * _TIME_UNITS_MS[match[2]]


def parse_wrk(output: str) -> WrkResult:
    result = WrkResult()
    if m := re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output):
        result.requests = int(m[1])
        result.seconds = parse_ms(m[2] + m[3]) / 1000.0
    if m := re.search(r"Requests/sec:\s+([\d.]+)", output):
        result.rps = float(m[1])
    if m := re.search(r"^\s+50%\s+(\S+)", output, re.M):
        result.p50_ms = parse_ms(m[1])
    if m := re.search(r"^\s+99%\s+(\S+)", output, re.M):
        result.p99_ms = parse_ms(m[1])
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        result.socket_errors = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True))
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        result.non_2xx_3xx = int(m[1])
    return result


def wrk_scenario_argv(scenario: str, url: str) -> list[str]:
    """The scenario's wrk options, the URL, then the script's own arguments (after "--")."""
    extra = SCENARIOS[scenario]
    if "--" not in extra:
        return [*extra, url]
    cut = extra.index("--")
    return [*extra[:cut], url, *extra[cut:]]


def run_wrk(args: argparse.Namespace, port: int, scenario: str, seconds: int) -> str:
    wrk = [
        find_binary("wrk"),
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{seconds}s",  # wrk takes whole seconds only
        "--latency",
        *wrk_scenario_argv(scenario, f"http://127.0.0.1:{port}/"),
    ]
    argv = pinned(wrk, "load", args.pin)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish within {seconds + 30:.0f}s") from exc
    if done.returncode != 0:
        first = (done.stderr.strip() or done.stdout.strip()).splitlines()[:3]
        raise BenchError(f"wrk exited with {done.returncode}: {' / '.join(first)}")
    return done.stdout


# --------------------------------------------------------------------------- measuring


@dataclass
class Measurement:
    proxy: str
    scenario: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    socket_errors: dict[str, int]
    non_2xx_3xx: int
    cpu_user_s: float
    cpu_sys_s: float
    cpu_s: float
    user_us_per_req: float | None
    sys_us_per_req: float | None
    cpu_us_per_req: float | None
    rps_per_core: float | None
    host_irq_s: float  # all CPUs; on kernels with IRQ time accounting it is charged to no process
    round: int = 1


def host_irq_seconds() -> float:
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    # "cpu user nice system idle iowait irq softirq steal ..."
    return (int(fields[6]) + int(fields[7])) / CLK_TCK


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def measure(args: argparse.Namespace, proc: Proc, port: int, scenario: str) -> Measurement:
    if args.warmup > 0:
        # Fill connection pools and caches so the measured run starts in steady state.
        run_wrk(args, port, scenario, args.warmup)
    user0, sys0 = tree_cpu(proc.popen.pid)
    irq0 = host_irq_seconds()
    wrk = parse_wrk(run_wrk(args, port, scenario, args.duration))
    irq1 = host_irq_seconds()
    user1, sys1 = tree_cpu(proc.popen.pid)
    if proc.popen.poll() is not None:
        raise BenchError(f"{proc.name} died during the {scenario} run:\n{log_tail(proc)}")
    if wrk.requests == 0:
        raise BenchError(f"{proc.name}: wrk completed no request in the {scenario} run")
    user, system = user1 - user0, sys1 - sys0
    cpu = user + system
    n = wrk.requests
    return Measurement(
        proxy=proc.name,
        scenario=scenario,
        requests=n,
        seconds=wrk.seconds,
        rps=wrk.rps,
        p50_ms=rounded(wrk.p50_ms),
        p99_ms=rounded(wrk.p99_ms),
        socket_errors=wrk.socket_errors,
        non_2xx_3xx=wrk.non_2xx_3xx,
        cpu_user_s=round(user, 3),
        cpu_sys_s=round(system, 3),
        cpu_s=round(cpu, 3),
        user_us_per_req=rounded(user * 1e6 / n),
        sys_us_per_req=rounded(system * 1e6 / n),
        cpu_us_per_req=rounded(cpu * 1e6 / n),
        rps_per_core=rounded(n / cpu, 1) if cpu > 0 else None,
        host_irq_s=round(irq1 - irq0, 3),
    )


@dataclass
class Results:
    runs: list[Measurement] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    notes: dict[str, object] = field(default_factory=dict)

    def summary(self) -> list[Measurement]:
        """One row per proxy and scenario: the median run when there are several."""
        keys = dict.fromkeys((m.proxy, m.scenario) for m in self.runs)
        return [median_run([m for m in self.runs if (m.proxy, m.scenario) == key]) for key in keys]


class PerCore(Protocol):
    @property
    def rps_per_core(self) -> float | None: ...


Run = TypeVar("Run", bound=PerCore)


def median_run(runs: Sequence[Run]) -> Run:
    """The median of `runs` by req/s per core (this script's rounds, h2.py's): a whole run
    rather than per-column medians, so the figures in one row stay consistent."""
    ordered = sorted(runs, key=lambda m: m.rps_per_core or 0.0)
    return ordered[len(ordered) // 2]


Round = TypeVar("Round")


def median_rounds(
    rounds: Sequence[Round], group: Callable[[Round], object], figure: Callable[[Round], float | None]
) -> list[Round]:
    """Per group of `rounds` (a proxy, or a proxy and a kind), the round with the median
    `figure` (a figure per proxy core): a whole round, so the figures of one row stay
    consistent. Groups in the order they first come."""
    grouped: dict[object, list[Round]] = {}
    for measured in rounds:
        grouped.setdefault(group(measured), []).append(measured)
    return [sorted(each, key=lambda m: figure(m) or 0.0)[len(each) // 2] for each in grouped.values()]


def run_rounds(
    args: argparse.Namespace, proxies: Sequence[str], failures: dict[str, str], bench_round: Callable[[str, int], None]
) -> None:
    """`args.repeat` rounds, each `bench_round(proxy, round)` for every proxy of `proxies` in
    `args.only`, interleaved so that a slow spell of a shared machine hits them all alike. A
    BenchError is that proxy's failure: kept in `failures`, reported, and its later rounds
    are not run."""
    for rnd in range(1, args.repeat + 1):
        for proxy in (p for p in proxies if p in args.only and p not in failures):
            try:
                bench_round(proxy, rnd)
            except BenchError as exc:
                failures[proxy] = str(exc)
                progress(f"{proxy}: FAILED: {exc}")


def bench_proxy(args: argparse.Namespace, proxy: str, tmp: Path, ports: Ports, out: Results, rnd: int) -> None:
    port = proxy_port(proxy, ports)
    argv = pinned(proxy_argv(proxy, tmp, ports, args.balancer_cmd, args.balancer_workers), "proxy", args.pin)
    label = f"{proxy} [round {rnd}/{args.repeat}]" if args.repeat > 1 else proxy
    progress(f"{label}: starting on 127.0.0.1:{port}: {shlex.join(argv)}")
    with listening(proxy, argv, tmp, (port,)) as proc:
        seen = check_balancing(proxy, port)
        progress(f"{label}: balancing ok, X-Server: {' '.join(seen)}")
        for scenario in args.scenarios:
            m = measure(args, proc, port, scenario)
            m.round = rnd
            out.runs.append(m)
            progress(
                f"{label}: {scenario}: {m.rps:,.0f} req/s, proxy CPU {m.cpu_s:.2f}s, "
                f"{fmt(m.rps_per_core, '{:,.0f}')} req/s per proxy core"
            )
    if proxy == "balancer":
        # Evidence that the measured path really wrote its access log.
        log = tmp / "access.log"
        out.notes["balancer_access_log_bytes"] = log.stat().st_size if log.exists() else None


# --------------------------------------------------------------------------- report


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else spec.format(value)


def errors_text(m: Measurement) -> str:
    sock = sum(m.socket_errors.values())
    return "0" if sock == 0 and m.non_2xx_3xx == 0 else f"sock {sock}, non-2xx {m.non_2xx_3xx}"


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, the first left-aligned, the others right-aligned,
    a rule under the header. Every bench script prints its tables with it."""
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def table(results: list[Measurement]) -> str:
    header = (
        "proxy",
        "scenario",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "proxy CPU s",
        "CPU µs/req usr+sys",
        "req/s per proxy core",
    )
    rows = [
        (
            m.proxy,
            m.scenario,
            f"{m.rps:,.0f}",
            fmt(m.p50_ms, "{:.2f}"),
            fmt(m.p99_ms, "{:.2f}"),
            errors_text(m),
            f"{m.cpu_s:.2f}",
            f"{fmt(m.cpu_us_per_req, '{:.1f}')} ({fmt(m.user_us_per_req, '{:.1f}')}+{fmt(m.sys_us_per_req, '{:.1f}')})",
            fmt(m.rps_per_core, "{:,.0f}"),
        )
        for m in results
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def ratios(results: list[Measurement]) -> dict[str, dict[str, float | None]]:
    """The RATIOS pairs of req/s per proxy core, per scenario, for the pairs measured."""
    by_key = {(m.proxy, m.scenario): m.rps_per_core for m in results}
    out: dict[str, dict[str, float | None]] = {}
    for scenario in SCENARIOS:
        pairs = {
            f"{mine}/{peer}": (by_key[(mine, scenario)], by_key[(peer, scenario)])
            for mine, peer in RATIOS
            if (mine, scenario) in by_key and (peer, scenario) in by_key
        }
        if pairs:
            out[scenario] = {name: round(a / b, 3) if a is not None and b else None for name, (a, b) in pairs.items()}
    return out


def round_ratios(runs: list[Measurement]) -> dict[str, dict[str, list[float]]]:
    """The RATIOS pairs of req/s per proxy core within each round (the two proxies measured
    back to back), per scenario: how far one round's ratio strays from the next. On a shared
    machine the rounds spread by several percent; a ratio of medians inside that spread is
    parity, not a lead."""
    by_key = {(m.proxy, m.scenario, m.round): m.rps_per_core for m in runs}
    rounds = sorted({m.round for m in runs})
    out: dict[str, dict[str, list[float]]] = {}
    for scenario in SCENARIOS:
        pairs: dict[str, list[float]] = {}
        for mine, peer in RATIOS:
            values = [by_key.get((mine, scenario, r)) for r in rounds]
            peers = [by_key.get((peer, scenario, r)) for r in rounds]
            paired = [a / b for a, b in zip(values, peers, strict=True) if a is not None and b]
            if paired:
                pairs[f"{mine}/{peer}"] = [round(x, 3) for x in paired]
        if pairs:
            out[scenario] = pairs
    return out


def ratios_text(rat: dict[str, dict[str, float | None]], per_round: dict[str, dict[str, list[float]]]) -> str:
    """The ratio of medians per pair; with several rounds, the spread of the per-round ratios
    beside it (their lowest, median and highest)."""
    lines = ["req/s per proxy core, ratio:"]
    for scenario, pairs in rat.items():
        cells = []
        for name, value in pairs.items():
            cell = f"{name} {fmt(value, '{:.2f}x')}"
            spread = sorted(per_round.get(scenario, {}).get(name, []))
            if len(spread) > 1:
                cell += f" (rounds {spread[0]:.2f}-{spread[-1]:.2f}x, median {spread[len(spread) // 2]:.2f}x)"
            cells.append(cell)
        lines.append(f"  {scenario}: {', '.join(cells)}")
    return "\n".join(lines)


def version_of(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    # nginx prints its version on stderr; wrk -v prints it and exits 1.
    text = (done.stdout + done.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def metadata(args: argparse.Namespace) -> dict[str, object]:
    def version(name: str, flag: str) -> str:
        try:
            return version_of([find_binary(name), flag])
        except BenchError:
            return "missing"

    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": {
            "cpus": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)),
            "cpu_model": cpu_model(),
            "kernel": platform.release(),
            "loadavg_before": os.getloadavg(),
        },
        "versions": {
            "haproxy": version("haproxy", "-v"),
            "nginx": version("nginx", "-v"),
            "wrk": version("wrk", "-v"),
            "python": platform.python_version(),
            # What pyfloor runs on (balancer too).
            **{name: package_version(name) for name in ("uvloop", "httptools")},
            "python-pyproxy": peers.version("python-pyproxy"),
        },
        "wrk": {"threads": args.threads, "connections": args.connections, "duration_s": args.duration},
        "warmup_s": args.warmup,
        "repeat": args.repeat,
        "pinned": args.pin,
        "balancer_cmd": args.balancer_cmd,
    }


def write_json(path: Path, report: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)  # never leave a half-written latest.json


def conclude(output: Path, data: dict[str, object], failures: dict[str, str]) -> int:
    """The end of a part's report: each proxy's failure printed, `data` written to `output` as
    JSON; returns the part's exit status, 1 when a proxy failed."""
    for proxy, message in failures.items():
        print(f"\n{proxy} FAILED: {message}")
    write_json(output, data)
    progress(f"\nJSON written to {output}")
    return 1 if failures else 0


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- main


def add_part_options(
    p: argparse.ArgumentParser,
    proxies: Sequence[str],
    output: Path,
    keep: str,
    *,
    duration: int,
    duration_of: str,
    only_help: str = "e.g. haproxy,balancer",
    balancer_cmd_help: str = "as in bench/run.py",
) -> None:
    """The options every part of the bench shares: --duration (seconds per `duration_of`, default
    `duration`), --only (a comma-separated subset of `proxies`), --balancer-cmd, --output (default
    `output`) and --keep-tmp (`keep`: what it keeps). parse_part_args reads them."""
    p.add_argument("--duration", type=int, default=duration, help=f"seconds per {duration_of} (default {duration})")
    p.add_argument("--only", type=csv_choice(proxies), default=list(proxies), help=only_help)
    p.add_argument("--balancer-cmd", default=DEFAULT_BALANCER_CMD, help=balancer_cmd_help)
    p.add_argument("--output", type=Path, default=output, help="JSON results (default: %(default)s)")
    p.add_argument("--keep-tmp", action="store_true", help=keep)


def parse_part_args(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse with the options of add_part_options: --balancer-cmd gets its {config} placeholder,
    and a part that has no --threads, --pin or --repeat of its own reads one wrk thread, no
    pinning and one round (what measure and metadata read)."""
    args = p.parse_args(argv)
    args.balancer_cmd = with_config(args.balancer_cmd)
    for name, default in (("threads", 1), ("pin", False), ("repeat", 1)):
        if not hasattr(args, name):
            setattr(args, name, default)
    return args


def with_config(balancer_cmd: str) -> str:
    """`balancer_cmd` with its {config} placeholder (appended as `-c {config}` when absent)."""
    return balancer_cmd if "{config}" in balancer_cmd else balancer_cmd + " -c {config}"


def csv_choice(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        bad = [item for item in items if item not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)} (comma-separated)")
        return items

    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_part_options(
        p,
        PROXIES,
        DEFAULT_OUTPUT,
        "keep configs and logs for inspection",
        duration=10,
        duration_of="wrk run",
        only_help="e.g. haproxy,nginx",
        balancer_cmd_help="command line starting balancer; {config} is replaced by the TOML path, "
        "else `-c PATH` is appended (default: %(default)s)",
    )
    p.add_argument("--connections", type=int, default=64, help="wrk -c (default 64)")
    p.add_argument("--threads", type=int, default=1, help="wrk -t (default 1)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of unmeasured wrk before each run, 0: none")
    p.add_argument("--scenarios", type=csv_choice(tuple(SCENARIOS)), default=list(SCENARIOS))
    p.add_argument("--repeat", type=int, default=1, help="rounds over all proxies; the median is reported")
    p.add_argument(
        "--pin",
        action="store_true",
        help="pin the proxy to the first CPU and backend + wrk to the others (steadier figures)",
    )
    p.add_argument(
        "--balancer-workers",
        type=int,
        default=1,
        help="balancer worker processes (default 1; run with 2 to compare, as issue 3 asks)",
    )
    args = parse_part_args(p, argv)
    if args.warmup < 0 or args.duration <= 0 or args.connections < 1 or args.threads < 1 or args.repeat < 1:
        p.error("--duration, --connections, --threads and --repeat must be positive")
    return args


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into an exception so the finally blocks stop every process we started.
    raise SystemExit(128 + signum)


Measured = TypeVar("Measured")


def bench_main(
    tmp_prefix: str, keep_tmp: bool, measure: Callable[[Path], Measured], finish: Callable[[Measured], int]
) -> int:
    """The main() of every bench script: SIGTERM and Ctrl-C become exceptions, so the `running`
    blocks stop every process started; `measure` runs with a fresh temporary directory for
    configs and logs (removed after it, kept when `keep_tmp`); `finish` then reports what it
    returned. Returns the exit status: 1 when measure raised BenchError, 130 on Ctrl-C, else
    finish's."""
    signal.signal(signal.SIGTERM, on_sigterm)
    # Ctrl-C must clean up even when started from a shell that ignores SIGINT in background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix))
    # nginx workers drop to `nobody` when started as root; they must be able to reach the prefix.
    tmp.chmod(0o755)
    try:
        measured = measure(tmp)
    except BenchError as exc:
        progress(f"FAILED: {exc}")
        return 1
    except KeyboardInterrupt:
        progress("interrupted")
        return 130
    finally:
        if keep_tmp:
            progress(f"configs and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return finish(measured)


def run_all(args: argparse.Namespace, tmp: Path) -> Results:
    ports = Ports(*free_ports(7))
    out = Results()
    out.notes["unable"] = dict(UNABLE)
    with nginx_backend(tmp, ports, args.pin) as backend:

        def bench_round(proxy: str, rnd: int) -> None:
            bench_proxy(args, proxy, tmp, ports, out, rnd)
            check_alive(backend, "backend nginx")

        run_rounds(args, PROXIES, out.failures, bench_round)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    meta = metadata(args)

    def finish(out: Results) -> int:
        report(args, meta, out)
        return 1 if out.failures else 0

    return bench_main("balancer-bench-", args.keep_tmp, lambda tmp: run_all(args, tmp), finish)


def report(args: argparse.Namespace, meta: dict[str, object], out: Results) -> None:
    summary = out.summary()
    rat = ratios(summary)
    per_round = round_ratios(out.runs) if args.repeat > 1 else {}
    data: dict[str, object] = {
        **meta,
        "results": [asdict(m) for m in summary],
        "ratios_rps_per_core": rat,
        "round_ratios_rps_per_core": per_round,
        "failures": out.failures,
        "notes": out.notes,
    }
    if args.repeat > 1:
        data["runs"] = [asdict(m) for m in out.runs]
    write_json(args.output, data)
    if summary:
        suffix = f", median of {args.repeat} rounds by req/s per proxy core" if args.repeat > 1 else ""
        print(f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration}s{suffix}")
        print(table(summary))
    if rat:
        print()
        print(ratios_text(rat, per_round))
    for proxy, message in out.failures.items():
        print(f"\n{proxy} FAILED: {message}")
    for proxy, message in UNABLE.items():
        print(f"\n{proxy}: not measured: {message}")
    progress(f"\nJSON written to {args.output}")


if __name__ == "__main__":
    sys.exit(main())
