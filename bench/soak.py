#!/usr/bin/env python3
"""Soak: balancer at half of its peak load for a long time, reloaded every minute.

One NGINX backend (started as bench/run.py starts it) behind `balancer run -c FILE` with two
workers and the full default path of bench/run.py (rules, forwardfor, access log to a file),
plus an admin listener for reloads. In order:

1. Peak: `wrk` with varied heads (bench/varied.lua) for `--peak-seconds`; the load is
   `--load` (default 0.5) of that, unless `--rate` gives it.
2. Load for `--duration` seconds from a paced client in this process (asyncio + uvloop): a fixed
   request rate spread over `--connections` connections, every request head different and
   browser-like (as varied.lua), each connection closed by the client after 1, 10, 100 or 1000
   requests (so keep-alive and new connections both) and whenever balancer answers
   `Connection: close` (which it does on each connection of a reloaded generation). Every
   request must get 200 `hello\\n` within `--timeout`; anything else is a failed request, by kind.
3. Every `--reload-every` seconds a reload through the admin API (`POST /api/reload`, what
   `balancer ctl reload` sends), which waits for the new generation to serve.
4. Every `--sample-every` seconds: RSS and open fds (/proc/PID/status, /proc/PID/fd) of the
   master, of the current generation's workers (summed) and of older ones still draining, the
   fds split into connections with clients, with servers, and the rest (which must stay flat:
   the connections follow the load); req/s, p50/p99/max latency and failed requests of the
   interval; balancer's CPU per request and the machine's load average (on a shared machine
   latency follows the other work; CPU per request says whether balancer itself got slower).

At the end it prints RSS after warm-up vs at the end (growth %), fd min/max after warm-up, p99
of the first vs the last window, failed requests and reloads, and writes
bench/results/soak-DATE.json and, with matplotlib (the `bench` extra), a PNG beside it. Every
process started is stopped on exit, Ctrl-C or SIGTERM.

Usage: python bench/soak.py [--duration 1800] [--reload-every 60] [--sample-every 5]
Short run (tests): python bench/soak.py --duration 20 --reload-every 5 --sample-every 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import re
import shlex
import sys
import time
import urllib.error
import urllib.request
from array import array
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # bench/run.py: process handling, the nginx backend, balancer's config, wrk
from varied_heads import request_head

RESULTS = harness.REPO / "bench" / "results"
DEFAULT_BALANCER_CMD = f"{shlex.quote(sys.executable)} -m balancer run -c {{config}}"
BODY = harness.BODY
# Requests per connection, by connection index: the client closes after so many (Connection:
# close on the last request), so new connections keep coming as well as long keep-alive ones.
REQUESTS_PER_CONNECTION = (1, 10, 100, 1000)
RELOAD_TIMEOUT = 60.0  # seconds for POST /api/reload to answer (it waits for the new workers)
DRAIN_TIMEOUT = 15.0  # seconds for requests in flight at the end of the load to finish
# Latency histogram: bucket i holds latencies in [exp(i/K), exp((i+1)/K)) microseconds, so a
# percentile read from it is within about 2% (K = 50); up to exp(MAX/K) us, about 22 s.
BUCKETS_PER_E = 50
BUCKETS = 850

# --------------------------------------------------------------------------- latency record


class Histogram:
    """Latency counts in log buckets (see BUCKETS_PER_E): percentiles of many requests, small."""

    def __init__(self) -> None:
        self.counts = array("q", bytes(8 * BUCKETS))
        self.total = 0

    def add(self, seconds: float) -> None:
        us = seconds * 1e6
        index = int(math.log(us) * BUCKETS_PER_E) if us > 1.0 else 0
        self.counts[min(index, BUCKETS - 1)] += 1
        self.total += 1

    def merge(self, other: Histogram) -> None:
        for i, n in enumerate(other.counts):
            if n:
                self.counts[i] += n
        self.total += other.total

    def percentile_ms(self, fraction: float) -> float | None:
        """The bucket's middle in ms, or None when empty."""
        if self.total == 0:
            return None
        rank = math.ceil(fraction * self.total)
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return math.exp((i + 0.5) / BUCKETS_PER_E) / 1000.0
        return math.exp(BUCKETS / BUCKETS_PER_E) / 1000.0


@dataclass
class Interval:
    """What the client saw between two samples."""

    ok: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    latencies: array[float] = field(default_factory=lambda: array("d"))
    connections: int = 0

    def fail(self, kind: str) -> None:
        self.failed[kind] = self.failed.get(kind, 0) + 1


# --------------------------------------------------------------------------- client


class ResponseError(Exception):
    """A request that did not get 200 "hello\\n"; `kind` names what went wrong."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class ClientConnection(asyncio.Protocol):
    """One keep-alive client connection: one request at a time, the response read whole."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[bool] | None = None
        self.sent_at = 0.0
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, though they are one in all but name.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, head: bytes, now: float) -> asyncio.Future[bool]:
        """Send a request; the future is True when the response asks to close the connection."""
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.sent_at = now
        self.buffer.clear()
        self.transport.write(head)
        return self.waiter

    def expire(self, now: float, timeout: float) -> None:
        """Fail the request in flight if it was sent more than `timeout` seconds ago."""
        if self.waiter is not None and not self.waiter.done() and now - self.sent_at > timeout:
            self._finish(ResponseError("timeout"))
            if self.transport is not None:
                self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            if waiter is None:
                self._finish(ResponseError("unsolicited_bytes"))
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        length = int(headers.get("content-length", "-1"))
        if length < 0:
            self._finish(ResponseError("no_content_length"))
            return
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        extra = len(self.buffer) - (end + 4 + length)
        if len(parts) < 2 or parts[1] != "200":
            self._finish(ResponseError(f"status_{parts[1] if len(parts) > 1 else 'none'}"))
        elif body != BODY or extra:
            self._finish(ResponseError("body_mismatch"))
        else:
            self._finish(headers.get("connection") == "close")

    def _finish(self, outcome: bool | ResponseError) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            if isinstance(outcome, ResponseError):
                waiter.set_exception(outcome)
            else:
                waiter.set_result(outcome)
        elif isinstance(outcome, ResponseError) and self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            # No byte of the response: the connection was closed under a request sent on it.
            self._finish(ResponseError("closed_before_response" if not self.buffer else "closed_mid_response"))


class PacedClient:
    """`rate` requests per second in total over `connections` connections, on a fixed schedule:
    each connection sends its next request at its next slot (at once when it is late), so the
    rate holds whatever the latency, up to what this process can send."""

    def __init__(self, port: int, rate: float, connections: int, timeout: float) -> None:
        self.port = port
        self.rate = rate
        self.connections = connections
        self.timeout = timeout
        self.interval = Interval()
        self.counter = 0
        self.late = 0  # requests sent more than 10 ms after their slot: the client fell behind
        self.open: set[ClientConnection] = set()

    def take_interval(self) -> Interval:
        interval, self.interval = self.interval, Interval()
        return interval

    async def run(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        end = start + seconds
        tasks = [loop.create_task(self._connection(i, start, end)) for i in range(self.connections)]
        watchdog = loop.create_task(self._expire_stuck())
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in (*tasks, watchdog):
                task.cancel()
            await asyncio.gather(*tasks, watchdog, return_exceptions=True)

    async def _expire_stuck(self) -> None:
        # One timer for every connection rather than one per request (wait_for makes a task each).
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(0.5, self.timeout / 4))
            now = loop.time()
            for conn in list(self.open):
                conn.expire(now, self.timeout)

    async def _connection(self, index: int, start: float, end: float) -> None:
        loop = asyncio.get_running_loop()
        period = self.connections / self.rate
        slot = start + period * index / self.connections  # staggered over the first period
        per_connection = REQUESTS_PER_CONNECTION[index % len(REQUESTS_PER_CONNECTION)]
        while slot < end and loop.time() < end:
            if slot > loop.time():
                await asyncio.sleep(slot - loop.time())
            try:
                _, conn = await asyncio.wait_for(
                    loop.create_connection(ClientConnection, "127.0.0.1", self.port), self.timeout
                )
            except (OSError, TimeoutError):
                self.interval.fail("connect")
                slot += period
                continue
            self.interval.connections += 1
            self.open.add(conn)
            try:
                slot = await self._requests(conn, slot, end, period, per_connection)
            finally:
                self.open.discard(conn)
                if conn.transport is not None:
                    conn.transport.close()

    async def _requests(self, conn: ClientConnection, slot: float, end: float, period: float, count: int) -> float:
        """Send up to `count` requests on one connection; returns the next slot."""
        loop = asyncio.get_running_loop()
        for n in range(count):
            now = loop.time()
            if slot >= end or now >= end:
                break
            if slot > now:
                await asyncio.sleep(slot - now)
            elif now - slot > 0.010:
                self.late += 1
            slot += period
            if conn.lost:
                self.interval.fail("closed_before_request")
                break
            self.counter += 1
            sent = time.perf_counter()
            try:
                close = await conn.send(request_head(self.counter, n == count - 1), loop.time())
            except ResponseError as exc:
                self.interval.fail(exc.kind)
                return slot
            self.interval.latencies.append(time.perf_counter() - sent)
            self.interval.ok += 1
            if close:
                break
        return slot


# --------------------------------------------------------------------------- processes


@dataclass
class Usage:
    """RSS (KiB), open fds and CPU of a set of processes. The fds are split into TCP
    connections with clients, TCP connections with servers, and the rest (listeners, pipes,
    files, shared memory...): the connections follow the load, the rest must stay flat."""

    processes: int = 0
    rss_kib: int = 0
    fds: int = 0
    client_sockets: int = 0
    server_sockets: int = 0
    cpu_s: float = 0.0  # CPU seconds used since the previous sample

    @property
    def other_fds(self) -> int:
        return self.fds - self.client_sockets - self.server_sockets

    def add(self, pid: int, peers: Peers, cpu_seen: dict[int, float]) -> None:
        rss = read_rss_kib(pid)
        links = fd_links(pid)
        stat = harness.read_stat(pid)
        if rss is None or links is None or stat is None:
            return
        self.processes += 1
        self.rss_kib += rss
        self.fds += len(links)
        for link in links:
            kind = peers.kind(link)
            if kind == "client":
                self.client_sockets += 1
            elif kind == "server":
                self.server_sockets += 1
        cpu = (stat[1] + stat[2]) / harness.CLK_TCK
        self.cpu_s += cpu - cpu_seen.get(pid, 0.0)  # a process born since the last sample: all of it
        cpu_seen[pid] = cpu


class Peers:
    """Which TCP connection an fd is, from /proc/net/tcp{,6}: with a client (our local port is
    the frontend's) or with a server (the remote port is a backend's)."""

    def __init__(self, frontend_port: int, server_ports: set[int]) -> None:
        self.by_inode: dict[str, str] = {}
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if len(fields) < 10 or fields[3] == "0A":  # 0A: listening, counted with the rest
                    continue
                local = int(fields[1].rsplit(":", 1)[1], 16)
                remote = int(fields[2].rsplit(":", 1)[1], 16)
                if local == frontend_port:
                    self.by_inode[f"socket:[{fields[9]}]"] = "client"
                elif remote in server_ports:
                    self.by_inode[f"socket:[{fields[9]}]"] = "server"

    def kind(self, link: str) -> str:
        return self.by_inode.get(link, "other")


def read_rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def fd_links(pid: int) -> list[str] | None:
    """What each open fd of `pid` points to (`socket:[INODE]`, a path, `pipe:[...]`...)."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    links = []
    for name in names:
        with contextlib.suppress(OSError):  # closed meanwhile
            links.append(os.readlink(f"/proc/{pid}/fd/{name}"))
    return links


def workers_of(master: int) -> dict[int, int]:
    """{pid: generation} of the master's `balancer worker` children, from /proc."""
    found: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = harness.read_stat(int(entry))
        if stat is None or stat[0] != master:
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"worker" in argv and b"--generation" in argv:
            with contextlib.suppress(IndexError, ValueError):
                found[int(entry)] = int(argv[argv.index(b"--generation") + 1])
    return found


@dataclass
class Sample:
    t: float  # seconds since the load started
    generation: int
    master: Usage
    current: Usage  # the newest generation's workers
    old: Usage  # older generations' workers, while they drain
    rps: float
    ok: int
    failed: dict[str, int]
    connections: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    cpu_us_per_req: float | None  # balancer's processes (master and workers), this interval
    loadavg_1m: float  # the machine's: other work on it shows here

    @property
    def serving_rss_kib(self) -> int:
        return self.master.rss_kib + self.current.rss_kib

    @property
    def serving_fds(self) -> int:
        return self.master.fds + self.current.fds

    @property
    def serving_other_fds(self) -> int:
        return self.master.other_fds + self.current.other_fds


def percentile_ms(ordered: Sequence[float], fraction: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)] * 1000.0


@dataclass
class Reload:
    t: float
    ok: bool
    seconds: float
    generation: int | None
    detail: str = ""


def reload_balancer(admin_port: int) -> tuple[bool, int | None, str]:
    """POST /api/reload (what `balancer ctl reload` sends); it answers once the reload is done."""
    request = urllib.request.Request(f"http://127.0.0.1:{admin_port}/api/reload", data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=RELOAD_TIMEOUT) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return False, None, f"{exc.code}: {exc.read()[:300]!r}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return False, None, str(exc)
    return bool(answer.get("reloaded")), answer.get("generation"), "" if answer.get("reloaded") else str(answer)


# --------------------------------------------------------------------------- the soak


@dataclass
class Soak:
    args: argparse.Namespace
    master: int
    admin_port: int
    client: PacedClient
    frontend_port: int
    server_ports: set[int]
    samples: list[Sample] = field(default_factory=list)
    reloads: list[Reload] = field(default_factory=list)
    windows: dict[str, Histogram] = field(default_factory=dict)
    worker_pids: dict[int, set[int]] = field(default_factory=dict)  # generation -> pids seen
    all_latency: Histogram = field(default_factory=Histogram)
    cpu_seen: dict[int, float] = field(default_factory=dict)  # pid -> CPU seconds at the last sample

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.t0 = loop.time()
        load = loop.create_task(self.client.run(self.args.duration))
        sampler = loop.create_task(self._sampler(load))
        reloader = loop.create_task(self._reloader())
        try:
            await load
            sampler.cancel()
            self.sample(loop.time() - self.t0)  # what the last requests did
            # A reload under way at the end is seen through (RELOAD_TIMEOUT bounds it).
            await reloader
        finally:
            for task in (sampler, reloader):
                task.cancel()
            await asyncio.gather(sampler, reloader, return_exceptions=True)

    def window_of(self, t: float) -> str | None:
        """'first' or 'last' when a sample at `t` closes an interval inside that window."""
        start = self.args.warmup
        if start < t <= start + self.args.window:
            return "first"
        if t > self.args.duration - self.args.window:
            return "last"
        return None

    def sample(self, t: float) -> None:
        interval = self.client.take_interval()
        pids = workers_of(self.master)
        generation = max(pids.values(), default=0)
        master, current, old = Usage(), Usage(), Usage()
        peers = Peers(self.frontend_port, self.server_ports)
        master.add(self.master, peers, self.cpu_seen)
        for pid, gen in pids.items():
            self.worker_pids.setdefault(gen, set()).add(pid)
            (current if gen == generation else old).add(pid, peers, self.cpu_seen)
        cpu = master.cpu_s + current.cpu_s + old.cpu_s
        ordered = sorted(interval.latencies)
        previous = self.samples[-1].t if self.samples else 0.0
        elapsed = max(t - previous, 1e-9)
        which = self.window_of(t)
        hist = Histogram()
        for seconds in interval.latencies:
            hist.add(seconds)
        self.all_latency.merge(hist)
        if which is not None:
            self.windows.setdefault(which, Histogram()).merge(hist)
        s = Sample(
            t=round(t, 3),
            generation=generation,
            master=master,
            current=current,
            old=old,
            rps=round(interval.ok / elapsed, 1),
            ok=interval.ok,
            failed=interval.failed,
            connections=interval.connections,
            p50_ms=rounded(percentile_ms(ordered, 0.50)),
            p99_ms=rounded(percentile_ms(ordered, 0.99)),
            max_ms=rounded(ordered[-1] * 1000.0 if ordered else None),
            cpu_us_per_req=rounded(cpu * 1e6 / interval.ok if interval.ok and self.samples else None, 1),
            loadavg_1m=os.getloadavg()[0],
        )
        self.samples.append(s)
        failed = sum(s.failed.values())
        harness.progress(
            f"{s.t:7.1f}s gen {s.generation:3d}  {s.rps:8,.0f} req/s  p50 {fmt_ms(s.p50_ms)} p99 {fmt_ms(s.p99_ms)}  "
            f"RSS master {master.rss_kib / 1024:.1f} MiB + workers {current.rss_kib / 1024:.1f} MiB"
            f"{f' (+{old.rss_kib / 1024:.1f} draining)' if old.processes else ''}  "
            f"fds {master.fds}+{current.fds}{f'+{old.fds}' if old.processes else ''}"
            f" (not connections: {s.serving_other_fds})  CPU {s.cpu_us_per_req} us/req"
            f"  load {s.loadavg_1m:.1f}  failed {failed}"
        )

    async def _sampler(self, load: asyncio.Task[None]) -> None:
        loop = asyncio.get_running_loop()
        next_at = self.t0 + self.args.sample_every
        while not load.done():
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += self.args.sample_every
            if not load.done():
                self.sample(loop.time() - self.t0)

    async def _reloader(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = self.t0 + self.args.reload_every
        # None in the last half period, so that the run ends on a generation that has served a while.
        last = self.t0 + self.args.duration - self.args.reload_every / 2
        while next_at <= last:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += self.args.reload_every
            started = loop.time()
            ok, generation, detail = await loop.run_in_executor(None, reload_balancer, self.admin_port)
            done = Reload(round(started - self.t0, 3), ok, round(loop.time() - started, 3), generation, detail)
            self.reloads.append(done)
            harness.progress(
                f"{done.t:7.1f}s reload {'ok' if ok else 'REFUSED'} in {done.seconds:.2f}s, generation {generation}"
                f"{': ' + detail if detail else ''}"
            )


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def fmt_ms(value: float | None) -> str:
    return "    -   " if value is None else f"{value:6.2f}ms"


def median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def growth_pct(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None or start == 0 else round((end - start) * 100.0 / start, 2)


def summarize(soak: Soak) -> dict[str, object]:
    """The figures the soak is judged by (issue 18: RSS growth <= 5%, fds flat, p99 flat, 0 failed)."""
    args = soak.args
    after = [s for s in soak.samples if s.t > args.warmup]
    first = [s for s in after if soak.window_of(s.t) == "first"]
    last = [s for s in after if soak.window_of(s.t) == "last"]

    def kib_median(samples: list[Sample], pick: str) -> float | None:
        values = [
            float(
                s.serving_rss_kib if pick == "serving" else s.master.rss_kib if pick == "master" else s.current.rss_kib
            )
            for s in samples
        ]
        return median(values)

    rss: dict[str, object] = {}
    for pick in ("serving", "master", "workers"):
        start, end = kib_median(first, pick), kib_median(last, pick)
        rss[pick] = {
            "start_mib": rounded(start / 1024 if start else None, 2),
            "end_mib": rounded(end / 1024 if end else None, 2),
            "growth_pct": growth_pct(start, end),
        }
    failed: dict[str, int] = {}
    for s in soak.samples:
        for kind, n in s.failed.items():
            failed[kind] = failed.get(kind, 0) + n
    restarts = {gen: len(pids) - args.workers for gen, pids in soak.worker_pids.items() if len(pids) > args.workers}
    first_hist, last_hist = soak.windows.get("first", Histogram()), soak.windows.get("last", Histogram())
    ok = sum(s.ok for s in soak.samples)
    return {
        "requests_ok": ok,
        "requests_failed": sum(failed.values()),
        "failed_by_kind": failed,
        "achieved_rps": round(ok / args.duration, 1),
        "client_late_requests": soak.client.late,
        "reloads": len(soak.reloads),
        "reloads_refused": sum(not r.ok for r in soak.reloads),
        "generations": max((s.generation for s in soak.samples), default=0),
        "worker_restarts_by_generation": restarts,
        "windows_s": {
            "warmup": args.warmup,
            "first": [args.warmup, args.warmup + args.window],
            "last": [args.duration - args.window, args.duration],
        },
        "rss": rss,
        "fds": {
            "serving_min": min((s.serving_fds for s in after), default=None),
            "serving_max": max((s.serving_fds for s in after), default=None),
            "master_min": min((s.master.fds for s in after), default=None),
            "master_max": max((s.master.fds for s in after), default=None),
            "serving_first_window_max": max((s.serving_fds for s in first), default=None),
            "serving_last_window_max": max((s.serving_fds for s in last), default=None),
            # Without the connections with clients and servers, which follow the load.
            "serving_other_min": min((s.serving_other_fds for s in after), default=None),
            "serving_other_max": max((s.serving_other_fds for s in after), default=None),
            "serving_server_sockets_max": max(
                (s.master.server_sockets + s.current.server_sockets for s in after), default=None
            ),
        },
        "cpu_us_per_req_median": {
            "first_window": rounded(median([s.cpu_us_per_req for s in first if s.cpu_us_per_req is not None]), 1),
            "last_window": rounded(median([s.cpu_us_per_req for s in last if s.cpu_us_per_req is not None]), 1),
        },
        "loadavg_1m_median": {
            "first_window": rounded(median([s.loadavg_1m for s in first]), 2),
            "last_window": rounded(median([s.loadavg_1m for s in last]), 2),
        },
        "p99_ms": {
            "first_window": rounded(first_hist.percentile_ms(0.99)),
            "last_window": rounded(last_hist.percentile_ms(0.99)),
            "whole_run": rounded(soak.all_latency.percentile_ms(0.99)),
        },
        "p50_ms": {
            "first_window": rounded(first_hist.percentile_ms(0.50)),
            "last_window": rounded(last_hist.percentile_ms(0.50)),
            "whole_run": rounded(soak.all_latency.percentile_ms(0.50)),
        },
    }


def summary_text(summary: dict[str, object]) -> str:
    rss = summary["rss"]
    fds = summary["fds"]
    p99 = summary["p99_ms"]
    assert isinstance(rss, dict) and isinstance(fds, dict) and isinstance(p99, dict)
    lines = [
        f"requests: {summary['requests_ok']:,} ok, {summary['requests_failed']} failed "
        f"{summary['failed_by_kind'] or ''}"
        f" ({summary['achieved_rps']:,} req/s; {summary['client_late_requests']:,} sent >10 ms late by the client)",
        f"reloads: {summary['reloads']} ({summary['reloads_refused']} refused), last generation "
        f"{summary['generations']}, worker restarts {summary['worker_restarts_by_generation'] or 0}",
    ]
    for pick, label in (("serving", "master + workers"), ("master", "master"), ("workers", "workers")):
        r = rss[pick]
        growth = "-" if r["growth_pct"] is None else f"{r['growth_pct']:+.2f}%"
        lines.append(f"RSS {label}: {r['start_mib']} MiB after warm-up -> {r['end_mib']} MiB at the end ({growth})")
    lines.append(
        f"fds after warm-up: master + workers {fds['serving_min']}..{fds['serving_max']} "
        f"(first window max {fds['serving_first_window_max']}, last {fds['serving_last_window_max']}; "
        f"up to {fds['serving_server_sockets_max']} connections with servers), "
        f"master {fds['master_min']}..{fds['master_max']}; "
        f"not connections: {fds['serving_other_min']}..{fds['serving_other_max']}"
    )
    cpu, load = summary["cpu_us_per_req_median"], summary["loadavg_1m_median"]
    assert isinstance(cpu, dict) and isinstance(load, dict)
    lines.append(
        f"balancer CPU per request: {cpu['first_window']} us first window, {cpu['last_window']} us last; "
        f"machine load average {load['first_window']} -> {load['last_window']}"
    )
    lines.append(
        f"p99: first window {p99['first_window']} ms, last window {p99['last_window']} ms "
        f"(whole run {p99['whole_run']} ms)"
    )
    return "\n".join(lines)


def plot(path: Path, soak: Soak, title: str) -> bool:
    """RSS, fds, latency and req/s over time in one PNG; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    t = [s.t / 60.0 for s in soak.samples]
    fig, axes = plt.subplots(5, 1, figsize=(11, 15), sharex=True)
    ax = axes[0]
    ax.plot(t, [s.master.rss_kib / 1024 for s in soak.samples], label="master")
    ax.plot(t, [s.current.rss_kib / 1024 for s in soak.samples], label="current workers (sum)")
    ax.plot(t, [s.serving_rss_kib / 1024 for s in soak.samples], label="master + current workers")
    ax.plot(t, [s.old.rss_kib / 1024 for s in soak.samples], label="draining workers", alpha=0.5)
    ax.set_ylabel("RSS MiB")
    ax.legend(loc="center right", fontsize="small")
    ax = axes[1]
    ax.plot(t, [s.master.fds for s in soak.samples], label="master")
    ax.plot(t, [s.current.fds for s in soak.samples], label="current workers (sum)")
    ax.plot(t, [s.old.fds for s in soak.samples], label="draining workers", alpha=0.5)
    ax.plot(t, [s.serving_other_fds for s in soak.samples], label="master + current, not connections")
    ax.set_ylabel("open fds")
    ax.legend(loc="center right", fontsize="small")
    ax = axes[2]
    ax.plot(t, [s.p50_ms for s in soak.samples], label="p50")
    ax.plot(t, [s.p99_ms for s in soak.samples], label="p99")
    ax.set_yscale("log")
    ax.set_ylabel("latency ms")
    ax.legend(loc="center right", fontsize="small")
    ax = axes[3]
    ax.plot(t, [s.rps for s in soak.samples], label="req/s")
    ax.set_ylabel("req/s")
    failures = [(s.t / 60.0, sum(s.failed.values())) for s in soak.samples if s.failed]
    if failures:
        ax.scatter([x for x, _ in failures], [0 for _ in failures], color="red", marker="x", label="failed requests")
        ax.legend(loc="center right", fontsize="small")
    ax = axes[4]
    ax.plot(t, [s.cpu_us_per_req for s in soak.samples], label="balancer CPU us/request")
    ax.set_ylabel("CPU us/request")
    twin = ax.twinx()
    twin.plot(t, [s.loadavg_1m for s in soak.samples], color="grey", alpha=0.6, label="load average 1 min")
    twin.set_ylabel("load average")
    ax.legend(loc="upper left", fontsize="small")
    twin.legend(loc="upper right", fontsize="small")
    ax.set_xlabel("minutes")
    for ax in axes:
        for r in soak.reloads:
            ax.axvline(r.t / 60.0, color="grey", alpha=0.25, linewidth=0.8)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------- setup


LOG_LEVEL = re.compile(r"^\S+ \S+ \S+ (WARNING|ERROR|CRITICAL):")


def log_findings(text: str) -> dict[str, object]:
    """Tracebacks and warning-or-worse lines in balancer's output (master and workers log there)."""
    bad = [line for line in text.splitlines() if LOG_LEVEL.match(line)]
    return {"tracebacks": text.count("Traceback"), "warnings_or_errors": len(bad), "first_lines": bad[:20]}


def soak_config(tmp: Path, ports: harness.Ports, workers: int, admin_port: int) -> str:
    # bench/run.py's balancer (rules, forwardfor, access log), with an admin listener to reload.
    return harness.balancer_config(tmp, ports, workers) + f'\n[admin]\nbind = "127.0.0.1:{admin_port}"\n'


def measure_peak(args: argparse.Namespace, port: int) -> float:
    wrk_args = argparse.Namespace(threads=1, connections=args.peak_connections, pin=False)
    harness.run_wrk(wrk_args, port, "varied", 1)  # pools and caches filled before measuring
    result = harness.parse_wrk(harness.run_wrk(wrk_args, port, "varied", args.peak_seconds))
    if result.rps <= 0:
        raise harness.BenchError("wrk measured no request for the peak")
    return result.rps


def drive(soak: Soak) -> None:
    """Run the soak on uvloop when there is one (balancer's own loop), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(soak.run())
    else:
        uvloop.run(soak.run())


def run_soak(args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    b1, b2, lb, admin = harness.free_ports(4)
    ports = harness.Ports(b1, b2, 0, 0, lb)
    with harness.nginx_backend(tmp, ports) as backend:
        conf = tmp / "balancer.toml"
        conf.write_text(soak_config(tmp, ports, args.workers, admin))
        argv = harness.balancer_argv(args.balancer_cmd, conf)
        harness.progress(f"balancer: {shlex.join(argv)} on 127.0.0.1:{lb}, admin 127.0.0.1:{admin}")
        with harness.listening("balancer", argv, tmp, (lb, admin)) as proc:
            harness.check_balancing("balancer", lb)
            peak = None
            rate = args.rate
            if rate is None:
                peak = measure_peak(args, lb)
                rate = peak * args.load
                harness.progress(
                    f"peak {peak:,.0f} req/s (wrk varied, {args.peak_seconds}s): driving {rate:,.0f} req/s"
                )
            client = PacedClient(lb, rate, args.connections, args.timeout)
            soak = Soak(args, proc.popen.pid, admin, client, lb, {b1, b2})
            start_date = datetime.datetime.now(datetime.UTC)
            cpu0 = time.process_time()
            drive(soak)
            client_cpu = time.process_time() - cpu0  # this process: the client and the sampling
            if proc.popen.poll() is not None:
                raise harness.BenchError(f"balancer died during the soak:\n{harness.log_tail(proc)}")
            master_log = proc.log.read_text(errors="replace")
            harness.check_alive(backend, "backend nginx")
        access_log = tmp / "access.log"
        return {
            "date": start_date.isoformat(timespec="seconds"),
            "host": {"cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg()},
            "params": {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()},
            "peak_rps": peak,
            "target_rps": round(rate, 1),
            "summary": summarize(soak),
            "master_log": log_findings(master_log),
            "client_cpu_s": round(client_cpu, 2),
            "access_log_bytes": access_log.stat().st_size if access_log.exists() else None,
            "reloads": [asdict(r) for r in soak.reloads],
            "samples": [
                {
                    **asdict(s),
                    "serving_rss_kib": s.serving_rss_kib,
                    "serving_fds": s.serving_fds,
                    "serving_other_fds": s.serving_other_fds,
                }
                for s in soak.samples
            ],
            "_soak": soak,
        }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=1800.0, help="seconds of load (default 1800)")
    p.add_argument("--reload-every", type=float, default=60.0, help="seconds between reloads (default 60)")
    p.add_argument("--sample-every", type=float, default=5.0, help="seconds between samples (default 5)")
    p.add_argument("--warmup", type=float, help="seconds before the baseline (default: 60, or a tenth of the run)")
    p.add_argument("--window", type=float, help="first/last window compared (default: 300 s, or a quarter of the run)")
    p.add_argument("--load", type=float, default=0.5, help="fraction of the peak driven (default 0.5)")
    p.add_argument("--rate", type=float, help="requests per second driven, instead of measuring the peak")
    p.add_argument("--peak-seconds", type=int, default=5, help="wrk seconds measuring the peak (default 5)")
    p.add_argument("--peak-connections", type=int, default=64, help="wrk -c for the peak (default 64)")
    p.add_argument("--connections", type=int, default=128, help="client connections of the paced load (default 128)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds a request may take before it fails")
    p.add_argument("--workers", type=int, default=2, help="balancer workers (default 2)")
    p.add_argument("--balancer-cmd", default=DEFAULT_BALANCER_CMD, help="as in bench/run.py (default: %(default)s)")
    p.add_argument("--output", type=Path, help="JSON path (default bench/results/soak-DATE.json; the PNG beside it)")
    p.add_argument("--keep-tmp", action="store_true", help="keep configs and logs for inspection")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.reload_every <= 0 or args.sample_every <= 0 or args.connections < 1:
        p.error("--duration, --reload-every, --sample-every and --connections must be positive")
    if args.rate is not None and args.rate <= 0:
        p.error("--rate must be positive")
    if args.warmup is None:
        args.warmup = min(60.0, args.duration / 10)
    if args.window is None:
        args.window = min(300.0, (args.duration - args.warmup) / 4)
    if args.warmup + 2 * args.window > args.duration:
        p.error("--warmup plus twice --window must fit in --duration")
    args.balancer_cmd = harness.with_config(args.balancer_cmd)
    if args.output is None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
        args.output = RESULTS / f"soak-{stamp}.json"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return harness.bench_main(
        "balancer-soak-", args.keep_tmp, lambda tmp: run_soak(args, tmp), lambda r: report_soak(args, r)
    )


def report_soak(args: argparse.Namespace, report: dict[str, object]) -> int:
    """Write the JSON and the plot, print the summary; 1 if a request failed, a reload was
    refused or balancer logged a traceback."""
    soak = report.pop("_soak")
    assert isinstance(soak, Soak)
    harness.write_json(args.output, report)
    png = args.output.with_suffix(".png")
    title = (
        f"balancer soak {report['date']}: {report['target_rps']:,} req/s target, reload every {args.reload_every:g}s"
    )
    drawn = plot(png, soak, title)
    summary = report["summary"]
    assert isinstance(summary, dict)
    print(summary_text(summary))
    logs = report["master_log"]
    assert isinstance(logs, dict)
    print(f"balancer log: {logs['tracebacks']} tracebacks, {logs['warnings_or_errors']} warnings or errors")
    print(f"client (this process) CPU: {report['client_cpu_s']} s")
    harness.progress(f"JSON written to {args.output}" + (f", plot to {png}" if drawn else " (no matplotlib: no plot)"))
    failed = summary["requests_failed"] or summary["reloads_refused"] or logs["tracebacks"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
