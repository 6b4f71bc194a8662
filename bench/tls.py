#!/usr/bin/env python3
"""Benchmark TLS termination and idle connections: balancer vs HAProxy on this machine.

In one run, for HAProxy (1 thread, `bind ... ssl crt PEM`) and balancer (1 worker, `tls = {...}`),
each in front of the same NGINX backend (as bench/run.py starts it):

1. Full TLS handshakes/s, ECDSA P-256 and RSA-2048 certificates: `openssl s_time -new` (a new
   connection and a full handshake each time, no resumption), `--clients` of them in parallel for
   `--duration` seconds. Proxy CPU time is read from /proc before and after, so the comparable
   figure is handshakes per proxy CPU second ("per proxy core"), as in bench/run.py.
2. TLS keep-alive req/s: `wrk -t1 -c64 https://...` (ECDSA certificate), req/s and req/s per
   proxy core; every head different (bench/varied.lua) first, identical heads second.
3. Idle keep-alive connections at scale: a fresh proxy, `--idle-plain` (120,000) or
   `--idle-tls` (40,000) connections opened by asyncio clients (uvloop when installed) that
   send one request on each and keep it open, spread over source addresses 127.0.0.2, .3, ...
   (SOURCE_SPAN connections each: one source address has about 28k ephemeral ports); the
   proxy's RSS (all its processes) before and after, RSS per idle connection and the time to
   open them. The open-files limit (soft and hard, as root) is raised for this process and so
   for the proxies it starts; HAProxy gets `maxconn` (it sizes its ulimit-n from it), balancer
   `[global] maxconn` (it raises its soft limit from it, src/balancer/limits.py).
   Where the hard limit cannot be raised (no CAP_SYS_RESOURCE, as in some containers), one
   process holds at most the limit's worth of sockets: the crowd is then opened by several
   client processes, and balancer runs as many workers as it takes to hold it (a node's
   workers share the listening sockets), so the whole crowd is still held by one node and its
   RSS is the sum over the master and every worker (PSS beside it: shared pages once). HAProxy
   (`nbthread 1`, one process) holds what one process can, and its figure at the requested
   count is extrapolated.

Parts 1 and 2 run in `--repeat` rounds, the proxies interleaved (a fresh process each round),
and report each figure's median round by per proxy core; part 3 runs once.

Usage: .venv/bin/python bench/tls.py [--duration 10] [--clients 2] [--repeat 1] [--idle-plain 120000] [--idle-tls 40000]
Prints tables and balancer/HAProxy ratios; writes JSON to bench/results/tls-latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import platform
import re
import resource
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # bench/run.py: process handling, the nginx backend, wrk parsing, CPU time

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO / "bench" / "results" / "tls-latest.json"
PROXIES = ("haproxy", "balancer")
KEYS = ("ecdsa", "rsa")
BODY = b"hello\n"
IDLE_CONCURRENCY = 200  # connections being opened at once by the idle client
SOURCE_SPAN = 20_000  # idle connections per client source address (127.0.0.2, .3, ...)
# Descriptors kept free under the open-files limit when it caps the idle count: the proxy's
# listeners, log, pooled server connections; the client's /proc reads.
FD_HEADROOM = 1500
HEADS = {"varied": ["-s", str(Path(__file__).resolve().parent / "varied.lua")], "identical": []}
IDLE_SETTLE = 2.0  # seconds between the last connection opened and reading RSS
# Linux's IP_BIND_ADDRESS_NO_PORT (socket.h; Python names it only from 3.12): a socket bound
# to a source address gets its port at connect(), where the whole 4-tuple is known.
IP_BIND_ADDRESS_NO_PORT = 24


class BenchError(harness.BenchError):
    """A TLS part failed (certificate, handshake, answer); a proxy's failure like the harness's."""


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- certificates


def make_pem(tmp: Path, key: str) -> Path:
    """A self-signed certificate + key in one PEM (what both proxies take)."""
    key_args = (
        ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"] if key == "ecdsa" else ["-newkey", "rsa:2048"]
    )
    crt, key_file, pem = tmp / f"{key}.crt", tmp / f"{key}.key", tmp / f"{key}.pem"
    command = [
        harness.find_binary("openssl"),
        "req",
        "-x509",
        *key_args,
        "-nodes",
        "-keyout",
        str(key_file),
        "-out",
        str(crt),
        "-days",
        "7",
        "-subj",
        "/CN=bench.example.test",
        "-addext",
        "subjectAltName=DNS:bench.example.test",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise BenchError(f"openssl req failed: {done.stderr.strip()}")
    pem.write_bytes(crt.read_bytes() + key_file.read_bytes())
    return pem


# --------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class ProxyPorts:
    ecdsa: int
    rsa: int
    plain: int

    def of(self, kind: str) -> int:
        port: int = getattr(self, kind)
        return port


def haproxy_config(ports: ProxyPorts, pems: dict[str, Path], backend: int, maxconn: int) -> str:
    # Idle timeouts long enough to hold the idle connections; no logging (as in bench/run.py).
    return f"""\
global
    nbthread 1
    maxconn {maxconn}
    ulimit-n {2 * maxconn + FD_HEADROOM}

defaults
    mode http
    option forwardfor
    http-reuse always
    timeout connect 5s
    timeout client 30m
    timeout server 30s
    timeout http-keep-alive 30m
    timeout http-request 30m

frontend fe_ecdsa
    bind 127.0.0.1:{ports.ecdsa} ssl crt {pems["ecdsa"]} alpn http/1.1
    default_backend web

frontend fe_rsa
    bind 127.0.0.1:{ports.rsa} ssl crt {pems["rsa"]} alpn http/1.1
    default_backend web

frontend fe_plain
    bind 127.0.0.1:{ports.plain}
    default_backend web

backend web
    server s1 127.0.0.1:{backend}
"""


def balancer_config(
    tmp: Path, ports: ProxyPorts, pems: dict[str, Path], backend: int, maxconn: int, workers: int = 1
) -> str:
    # Access log on, as in bench/run.py (the full default path); ALPN http/1.1 is the default.
    frontends = ""
    for kind in ("ecdsa", "rsa", "plain"):
        tls = f'tls = {{ cert = ["{pems[kind]}"] }}\n' if kind in pems else ""
        frontends += f"""
[[frontend]]
name = "fe_{kind}"
bind = ["127.0.0.1:{ports.of(kind)}"]
mode = "http"
default_backend = "web"
forwardfor = true
timeouts = {{ client = "30m", http_request = "30m", http_keep_alive = "30m" }}
{tls}"""
    return f"""\
[global]
workers = {workers}
grace = "1s"
maxconn = {maxconn}
log = "file:{tmp}/access.log"
{frontends}
[[backend]]
name = "web"
mode = "http"

  [[backend.server]]
  name = "s1"
  address = "127.0.0.1:{backend}"
"""


def proxy_argv(
    args: argparse.Namespace, proxy: str, tmp: Path, ports: ProxyPorts, pems: dict[str, Path], workers: int = 1
) -> list[str]:
    """The command that starts `proxy`; balancer with `workers` worker processes."""
    backend = args.backend_port
    if proxy == "haproxy":
        conf = tmp / "haproxy-tls.cfg"
        conf.write_text(haproxy_config(ports, pems, backend, maxconn(args)))
        return [harness.find_binary("haproxy"), "-db", "-f", str(conf)]
    conf = tmp / f"balancer-tls-{workers}.toml"
    conf.write_text(balancer_config(tmp, ports, pems, backend, idle_wanted(args) + 1000, workers))
    return harness.balancer_argv(args.balancer_cmd, conf)


def maxconn(args: argparse.Namespace) -> int:
    """Client connections one proxy process must accept: the idle crowd plus the load clients,
    at most what the open-files limit leaves. HAProxy plans two descriptors per connection and
    refuses to start when `ulimit-n` is below that, so its cap is half the limit."""
    return min(idle_wanted(args) + 1000, (args.fd_limit - FD_HEADROOM) // 2)


def idle_wanted(args: argparse.Namespace) -> int:
    return max(args.idle_plain, args.idle_tls, 8000)


def per_process(args: argparse.Namespace) -> int:
    """Sockets one process (a client, a balancer worker) may hold under the open-files limit."""
    return args.fd_limit - FD_HEADROOM


def insecure_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def check_answers(proxy: str, ports: ProxyPorts) -> None:
    """Every frontend answers 200 hello (over TLS where it is TLS)."""
    for kind in ("ecdsa", "rsa", "plain"):
        scheme = "http" if kind == "plain" else "https"
        url = f"{scheme}://127.0.0.1:{ports.of(kind)}/"
        try:
            context = insecure_context() if scheme == "https" else None
            with urllib.request.urlopen(url, timeout=5, context=context) as resp:
                status, body = resp.status, resp.read()
        except OSError as exc:
            raise BenchError(f"{proxy}: {url} failed: {exc}") from exc
        if (status, body) != (200, BODY):
            raise BenchError(f"{proxy}: {url}: expected 200 {BODY!r}, got {status} {body[:80]!r}")


# --------------------------------------------------------------------------- handshakes


@dataclass
class Handshakes:
    proxy: str
    key: str
    handshakes: int
    seconds: float
    per_s: float
    cpu_s: float
    per_core: float | None


def run_handshakes(args: argparse.Namespace, proc: harness.Proc, port: int, key: str) -> Handshakes:
    openssl = harness.find_binary("openssl")
    argv = [openssl, "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time", str(args.duration)]
    argv = harness.pinned(argv, "load", args.pin)
    user0, sys0 = harness.tree_cpu(proc.popen.pid)
    clients = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
        for _ in range(args.clients)
    ]
    outputs = []
    try:
        for client in clients:
            outputs.append(client.communicate(timeout=args.duration + 60)[0])
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait(5)
    user1, sys1 = harness.tree_cpu(proc.popen.pid)
    total, seconds = 0, 0.0
    for output in outputs:
        match = re.search(r"(\d+) connections in (\d+) real seconds", output)
        if match is None:
            raise BenchError(f"{proc.name}: s_time gave no figures:\n{output[-800:]}")
        total += int(match[1])
        seconds = max(seconds, float(match[2]))
    if total == 0 or seconds == 0:
        raise BenchError(f"{proc.name}: no handshake completed ({key})")
    cpu = (user1 - user0) + (sys1 - sys0)
    return Handshakes(
        proxy=proc.name,
        key=key,
        handshakes=total,
        seconds=seconds,
        per_s=round(total / seconds, 1),
        cpu_s=round(cpu, 2),
        per_core=round(total / cpu, 1) if cpu > 0 else None,
    )


# --------------------------------------------------------------------------- wrk over TLS


@dataclass
class KeepAlive:
    proxy: str
    heads: str  # "varied" (every head different) or "identical"
    requests: int
    rps: float
    p99_ms: float | None
    errors: int
    cpu_s: float
    per_core: float | None


def run_wrk_tls(args: argparse.Namespace, proc: harness.Proc, port: int, heads: str) -> KeepAlive:
    wrk = harness.find_binary("wrk")
    url = f"https://127.0.0.1:{port}/"

    def once(seconds: int) -> str:
        argv = [wrk, "-t1", f"-c{args.connections}", f"-d{seconds}s", "--latency", *HEADS[heads], url]
        argv = harness.pinned(argv, "load", args.pin)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
        if done.returncode != 0:
            raise BenchError(f"wrk exited with {done.returncode}: {(done.stderr or done.stdout).strip()[:300]}")
        return done.stdout

    once(1)  # warm-up: pools filled, handshakes done
    user0, sys0 = harness.tree_cpu(proc.popen.pid)
    result = harness.parse_wrk(once(args.duration))
    user1, sys1 = harness.tree_cpu(proc.popen.pid)
    if result.requests == 0:
        raise BenchError(f"{proc.name}: wrk completed no request over TLS")
    cpu = (user1 - user0) + (sys1 - sys0)
    return KeepAlive(
        proxy=proc.name,
        heads=heads,
        requests=result.requests,
        rps=result.rps,
        p99_ms=result.p99_ms,
        errors=sum(result.socket_errors.values()) + result.non_2xx_3xx,
        cpu_s=round(cpu, 2),
        per_core=round(result.requests / cpu, 1) if cpu > 0 else None,
    )


# --------------------------------------------------------------------------- idle connections


def descendants(root: int) -> list[int]:
    """The live descendants of a process."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := harness.read_stat(int(entry))) is not None:
            parents[int(entry)] = stat[0]
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        found += children
        todo += children
    return found


@dataclass
class Idle:
    proxy: str
    kind: str  # "tls" or "plain"
    wanted: int
    held: int
    rss_before: int
    rss_after: int
    per_connection: float | None
    open_seconds: float
    pss_after: int = 0  # shared pages counted once (RSS counts them in every process)
    processes: int = 1  # the proxy's: master and workers
    clients: int = 1  # client processes that held the crowd
    requested: int = 0  # asked for; more than `wanted` when the open-files limit capped it
    rss_at_requested: int | None = None  # rss_before + per_connection * requested when capped


async def hold_idle(port: int, count: int, tls: bool, first: int = 0) -> tuple[list[asyncio.StreamWriter], list[str]]:
    """Open `count` connections, one keep-alive request on each, and keep them open; `first`:
    the crowd-wide number of the first (it picks the source addresses)."""
    context = insecure_context() if tls else None
    gate = asyncio.Semaphore(IDLE_CONCURRENCY)
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"

    async def connected(source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # Bound to `source` with its port left to connect(): a port bound first must be free
        # of every socket on the address, including the TIME_WAIT ones an earlier crowd left
        # (the client closes first), and the kernel's search for one grew to seconds per
        # thousand connections, timing the machine's leftovers rather than the proxy.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        hostname = "127.0.0.1" if context is not None else None  # an address: no SNI is sent
        return await asyncio.open_connection(sock=sock, ssl=context, server_hostname=hostname)

    async def one(index: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        source = f"127.0.0.{2 + (first + index) // SOURCE_SPAN}"
        async with gate:
            reader, writer = await asyncio.wait_for(connected(source), 30)
            writer.write(request)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            if not head.startswith(b"HTTP/1.1 200"):
                raise OSError(f"answer {head[:40]!r}")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            await reader.readexactly(int(length[1]) if length else 0)
            return reader, writer

    results = await asyncio.gather(*(one(index) for index in range(count)), return_exceptions=True)
    pairs = [r for r in results if isinstance(r, tuple)]
    errors = sorted({f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)})
    await asyncio.sleep(IDLE_SETTLE)
    open_pairs = [(r, w) for r, w in pairs if not r.at_eof()]
    return [w for _, w in open_pairs], errors


def hold_in_child(spec: str) -> int:
    """`--hold PORT,COUNT,FIRST,TLS` (a client process of the idle crowd): open the connections,
    print one JSON line ({"held": n, "errors": [...]}), keep them until stdin closes."""
    port, count, first, tls = (int(part) for part in spec.split(","))

    async def hold() -> None:
        writers, errors = await hold_idle(port, count, bool(tls), first)
        print(json.dumps({"held": len(writers), "errors": errors[:3]}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        for writer in writers:
            writer.close()

    raise_fd_limit(count + FD_HEADROOM)
    asyncio.run(hold())
    return 0


def memory_of(root: int) -> tuple[int, int]:
    """RSS and PSS bytes of a process and its live descendants (PSS: shared pages divided
    among the processes sharing them)."""
    rss = pss = 0
    for pid in [root, *descendants(root)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
    return rss, pss


def measure_idle(args: argparse.Namespace, proc: harness.Proc, port: int, count: int, tls: bool) -> Idle:
    """Hold `count` idle connections to `port`, opened by as many client processes as the
    open-files limit needs, and read the proxy's memory before and after."""
    # A few requests first, so that start-up allocations are not counted per connection.
    asyncio.run(hold_idle_briefly(port, tls))
    time.sleep(0.5)
    before, _ = memory_of(proc.popen.pid)
    clients_needed = math.ceil(count / (per_process(args) - 500))
    share = math.ceil(count / clients_needed)  # even shares, each under the limit
    started = time.monotonic()
    clients = [
        subprocess.Popen(
            [sys.executable, __file__, "--hold", f"{port},{min(share, count - first)},{first},{int(tls)}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for first in range(0, count, share)
    ]
    held, errors = 0, []
    try:
        for client in clients:
            assert client.stdout is not None
            line = client.stdout.readline()
            if not line:
                raise BenchError(f"{proc.name}: an idle client ended early (exit {client.wait(10)})")
            answer = json.loads(line)
            held += answer["held"]
            errors += answer["errors"]
        opened = time.monotonic() - started - IDLE_SETTLE
        after, pss_after = memory_of(proc.popen.pid)
        processes = 1 + len(descendants(proc.popen.pid))
    finally:
        for client in clients:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                client.communicate(timeout=60)
    if errors:
        progress(f"{proc.name}: {count - held} idle connections failed: {'; '.join(errors[:3])}")
    time.sleep(0.5)
    return Idle(
        proxy=proc.name,
        kind="tls" if tls else "plain",
        wanted=count,
        held=held,
        rss_before=before,
        rss_after=after,
        pss_after=pss_after,
        per_connection=round((after - before) / held, 1) if held else None,
        open_seconds=round(opened, 2),
        processes=processes,
        clients=len(clients),
    )


async def hold_idle_briefly(port: int, tls: bool) -> None:
    writers, _ = await hold_idle(port, 20, tls)
    for writer in writers:
        writer.close()


def raise_fd_limit(needed: int) -> int:
    """Raise this process's open-files limit to `needed`, the hard one too when allowed (root
    with CAP_SYS_RESOURCE), so the client and the proxies it starts (they inherit it) can hold
    the idle crowd. Returns the soft limit in force: idle counts are capped below it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return needed
        except (ValueError, OSError) as exc:
            progress(f"cannot raise the open-files hard limit {hard} to {needed} ({exc}): idle counts are capped")
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --------------------------------------------------------------------------- report


@dataclass
class Results:
    handshakes: list[Handshakes] = field(default_factory=list)  # the median rounds
    keepalive: list[KeepAlive] = field(default_factory=list)
    handshake_rounds: list[Handshakes] = field(default_factory=list)  # every round
    keepalive_rounds: list[KeepAlive] = field(default_factory=list)
    idle: list[Idle] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else spec.format(value)


def ratio(mine: float | None, theirs: float | None) -> float | None:
    return round(mine / theirs, 3) if mine and theirs else None


def ratios(out: Results) -> dict[str, float | None]:
    found: dict[str, float | None] = {}
    by = {(h.proxy, h.key): h for h in out.handshakes}
    for key in KEYS:
        mine, theirs = by.get(("balancer", key)), by.get(("haproxy", key))
        if mine and theirs:
            found[f"handshakes_{key}_per_s"] = ratio(mine.per_s, theirs.per_s)
            found[f"handshakes_{key}_per_core"] = ratio(mine.per_core, theirs.per_core)
    ka = {(k.proxy, k.heads): k for k in out.keepalive}
    for heads in HEADS:
        mine_ka, theirs_ka = ka.get(("balancer", heads)), ka.get(("haproxy", heads))
        if mine_ka and theirs_ka:
            found[f"tls_keepalive_{heads}_rps"] = ratio(mine_ka.rps, theirs_ka.rps)
            found[f"tls_keepalive_{heads}_per_core"] = ratio(mine_ka.per_core, theirs_ka.per_core)
    idle = {(i.proxy, i.kind): i for i in out.idle}
    for kind in ("tls", "plain"):
        mine_idle, theirs_idle = idle.get(("balancer", kind)), idle.get(("haproxy", kind))
        if mine_idle and theirs_idle:
            found[f"idle_{kind}_open_seconds"] = ratio(mine_idle.open_seconds, theirs_idle.open_seconds)
            found[f"idle_{kind}_rss_per_connection"] = ratio(mine_idle.per_connection, theirs_idle.per_connection)
    return found


def report(args: argparse.Namespace, out: Results, meta: dict[str, object]) -> int:
    if out.handshakes:
        rounds = f", median of {args.repeat} interleaved rounds by per proxy core" if args.repeat > 1 else ""
        print(f"\nFull TLS handshakes (openssl s_time -new, {args.clients} clients, {args.duration}s{rounds})")
        print(
            harness.text_table(
                ("proxy", "key", "handshakes", "handshakes/s", "proxy CPU s", "per proxy core"),
                [
                    (h.proxy, h.key, str(h.handshakes), f"{h.per_s:,.0f}", f"{h.cpu_s:.2f}", fmt(h.per_core, "{:,.0f}"))
                    for h in out.handshakes
                ],
            )
        )
    if out.keepalive:
        rounds = f", median of {args.repeat} rounds" if args.repeat > 1 else ""
        print(f"\nTLS keep-alive (wrk -t1 -c{args.connections} -d{args.duration}s https://..., ECDSA{rounds})")
        print(
            harness.text_table(
                ("proxy", "heads", "req/s", "p99 ms", "errors", "proxy CPU s", "req/s per proxy core"),
                [
                    (
                        k.proxy,
                        k.heads,
                        f"{k.rps:,.0f}",
                        fmt(k.p99_ms, "{:.2f}"),
                        str(k.errors),
                        f"{k.cpu_s:.2f}",
                        fmt(k.per_core, "{:,.0f}"),
                    )
                    for k in out.keepalive
                ],
            )
        )
    if out.idle:
        print("\nIdle keep-alive connections (one request each, then held; RSS of all the proxy's processes)")
        print(
            harness.text_table(
                (
                    "proxy",
                    "kind",
                    "held",
                    "processes",
                    "RSS before MiB",
                    "RSS after MiB",
                    "PSS after MiB",
                    "RSS per connection KiB",
                    "opened in s",
                    "RSS MiB at requested (extrapolated)",
                ),
                [
                    (
                        i.proxy,
                        i.kind,
                        f"{i.held}/{i.wanted}",
                        f"{i.processes} ({i.clients} clients)",
                        f"{i.rss_before / 2**20:.1f}",
                        f"{i.rss_after / 2**20:.1f}",
                        f"{i.pss_after / 2**20:.1f}",
                        fmt(None if i.per_connection is None else i.per_connection / 1024, "{:.1f}"),
                        f"{i.open_seconds:.1f}",
                        fmt(None if i.rss_at_requested is None else i.rss_at_requested / 2**20, "{:.0f}")
                        + (f" at {i.requested}" if i.rss_at_requested is not None else ""),
                    )
                    for i in out.idle
                ],
            )
        )
    rat = ratios(out)
    if rat:
        print("\nbalancer / HAProxy:")
        for name, value in rat.items():
            print(f"  {name}: {fmt(value, '{:.2f}x')}")
    data = {
        **meta,
        "handshakes": [h.__dict__ for h in out.handshakes],
        "keepalive": [k.__dict__ for k in out.keepalive],
        "rounds": args.repeat,
        "handshake_rounds": [h.__dict__ for h in out.handshake_rounds],
        "keepalive_rounds": [k.__dict__ for k in out.keepalive_rounds],
        "idle": [i.__dict__ for i in out.idle],
        "ratios_balancer_to_haproxy": rat,
        "failures": out.failures,
    }
    return harness.conclude(args.output, data, out.failures)


# --------------------------------------------------------------------------- main


def bench_idle(args: argparse.Namespace, proxy: str, tmp: Path, pems: dict[str, Path], out: Results) -> None:
    """Part 3: the idle crowds, once per proxy, each on a fresh process."""
    ports = ProxyPorts(*harness.free_ports(3))
    for kind, requested in (("plain", args.idle_plain), ("tls", args.idle_tls)):
        workers = 1
        if proxy == "balancer":  # as many workers as the limit needs (module docstring, 3.)
            workers = max(1, math.ceil(requested / (per_process(args) - 2000)))
            count = requested
        else:
            count = min(requested, maxconn(args) - 100)
        if count < requested:
            progress(f"{proxy}: {kind}: holding {count} idle connections, not {requested}: open-files limit")
        if count > 0:
            # A fresh process for each, so memory freed by earlier connections is not reused.
            idle_argv = proxy_argv(args, proxy, tmp, ports, pems, workers)
            with harness.listening(proxy, idle_argv, tmp, (ports.ecdsa, ports.plain)) as proc:
                port = ports.plain if kind == "plain" else ports.ecdsa
                idle = measure_idle(args, proc, port, count, kind == "tls")
                idle.requested = requested
                if count < requested and idle.per_connection is not None:
                    idle.rss_at_requested = round(idle.rss_before + idle.per_connection * requested)
                out.idle.append(idle)
                per = fmt(None if idle.per_connection is None else idle.per_connection / 1024, "{:.1f}")
                progress(f"{proxy}: {idle.held} idle {kind} connections, {per} KiB RSS each")


def bench_load(args: argparse.Namespace, proxy: str, tmp: Path, pems: dict[str, Path], out: Results, rnd: int) -> None:
    """Parts 1 and 2, one round: handshakes with each key, then TLS keep-alive."""
    ports = ProxyPorts(*harness.free_ports(3))
    argv = harness.pinned(proxy_argv(args, proxy, tmp, ports, pems), "proxy", args.pin)
    label = f"{proxy} [round {rnd}/{args.repeat}]" if args.repeat > 1 else proxy
    progress(f"{label}: {shlex.join(argv)}")
    with harness.listening(proxy, argv, tmp, (ports.ecdsa, ports.rsa, ports.plain)) as proc:
        check_answers(proxy, ports)
        for key in KEYS:
            result = run_handshakes(args, proc, ports.of(key), key)
            out.handshake_rounds.append(result)
            progress(
                f"{label}: {key}: {result.per_s:,.0f} handshakes/s, {fmt(result.per_core, '{:,.0f}')} per proxy core"
            )
        for heads in HEADS:
            keepalive = run_wrk_tls(args, proc, ports.ecdsa, heads)
            out.keepalive_rounds.append(keepalive)
            per_core = fmt(keepalive.per_core, "{:,.0f}")
            progress(f"{label}: TLS keep-alive, {heads} heads: {keepalive.rps:,.0f} req/s, {per_core} per proxy core")
        harness.check_alive(proc, proxy)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_part_options(
        p,
        PROXIES,
        DEFAULT_OUTPUT,
        "keep configs, certificates and logs",
        duration=10,
        duration_of="handshake and wrk run",
    )
    p.add_argument("--clients", type=int, default=2, help="parallel `openssl s_time` clients (default 2)")
    p.add_argument(
        "--repeat", type=int, default=1, help="rounds of parts 1 and 2 over all proxies; the median is reported"
    )
    p.add_argument("--connections", type=int, default=64, help="wrk -c (default 64)")
    p.add_argument(
        "--pin",
        action="store_true",
        help="parts 1 and 2: the proxy on the first CPU, backend and clients on the others (as run.py --pin)",
    )
    p.add_argument("--idle-plain", type=int, default=120_000, help="idle plain connections, 0: skip (default 120000)")
    p.add_argument("--idle-tls", type=int, default=40_000, help="idle TLS connections, 0: skip (default 40000)")
    args = harness.parse_part_args(p, argv)
    if (
        args.duration <= 0
        or min(args.clients, args.connections, args.repeat) < 1
        or min(args.idle_plain, args.idle_tls) < 0
    ):
        p.error("--duration, --clients, --connections and --repeat must be positive, --idle-* at least 0")
    return args


def measure_all(args: argparse.Namespace, tmp: Path) -> Results:
    out = Results()
    pems = {key: make_pem(tmp, key) for key in KEYS}
    backend_ports = harness.Ports(*harness.free_ports(5))
    args.backend_port = backend_ports.backend1
    with harness.nginx_backend(tmp, backend_ports, args.pin):
        for proxy in (p for p in PROXIES if p in args.only):
            try:
                bench_idle(args, proxy, tmp, pems, out)
            except harness.BenchError as exc:
                out.failures[proxy] = str(exc)
                progress(f"{proxy}: FAILED: {exc}")
        harness.run_rounds(args, PROXIES, out.failures, lambda proxy, rnd: bench_load(args, proxy, tmp, pems, out, rnd))
    out.handshakes = harness.median_rounds(out.handshake_rounds, lambda h: (h.proxy, h.key), lambda h: h.per_core)
    out.keepalive = harness.median_rounds(out.keepalive_rounds, lambda k: (k.proxy, k.heads), lambda k: k.per_core)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--hold"]:  # one client process of the idle crowd (measure_idle)
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return hold_in_child(argv[1])
    args = parse_args(argv)
    # Client: one descriptor per idle connection; proxies: two (client + server side) and spare.
    args.fd_limit = 1 << 30  # maxconn() below: the idle counts alone
    args.fd_limit = raise_fd_limit(2 * maxconn(args) + 50_000)
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    meta: dict[str, object] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "cpu_model": harness.cpu_model(), "kernel": platform.release()},
        "versions": {
            "haproxy": harness.version_of([shutil.which("haproxy", path="/usr/sbin:/usr/bin") or "haproxy", "-v"]),
            "openssl": harness.version_of(["openssl", "version"]),
            "python": platform.python_version(),
        },
        "duration_s": args.duration,
        "pinned": args.pin,
        "s_time_clients": args.clients,
        "wrk_connections": args.connections,
        "idle_connections": {"plain": args.idle_plain, "tls": args.idle_tls},
        "idle_source_span": SOURCE_SPAN,
    }
    return harness.bench_main(
        "balancer-bench-tls-", args.keep_tmp, lambda tmp: measure_all(args, tmp), lambda out: report(args, out, meta)
    )


if __name__ == "__main__":
    sys.exit(main())
