#!/usr/bin/env python3
"""What one L4 (`mode = "tcp"`) connection costs the proxy: instructions and syscalls.

Deterministic counterpart of bench/tcp.py's connection rate, for a shared machine where
wall-clock ratios are noisy. Each proxy relays one port to a small backend (a thread in this
process: accept, read the request, answer 200, close); this process opens `--connections`
client connections one after another (connect, send a request, read to the end, close), and

- `perf stat -e instructions:u,instructions:k` on the proxy's processes counts the
  instructions they ran for those connections (an idle run of the same length is not
  subtracted: the proxy sleeps in epoll_wait then);
- `strace -c -f` on them (a second, separate pass: strace slows the proxy down) counts the
  syscalls, by name, per connection.

Usage (root or perf_event_paranoid <= 0 for kernel instructions):
    .venv/bin/python bench/tcp_cost.py [--connections 2000] [--only haproxy,balancer] [--strace]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
START_TIMEOUT = 15.0
START_ATTEMPTS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Backend(threading.Thread):
    """accept, read the request, answer, close: as small as a server gets."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = int(self.sock.getsockname()[1])

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.recv(4096)
                conn.sendall(RESPONSE)


def haproxy_config(listen: int, target: int) -> str:
    return f"""\
global
    nbthread 1
    maxconn 8000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
listen web
    bind 127.0.0.1:{listen}
    server s1 127.0.0.1:{target}
"""


def balancer_config(listen: int, target: int) -> str:
    return f"""\
[global]
workers = 1
grace = "1s"

[[frontend]]
name = "web"
bind = ["127.0.0.1:{listen}"]
mode = "tcp"
default_backend = "web"

[[backend]]
name = "web"
mode = "tcp"

  [[backend.server]]
  name = "s1"
  address = "127.0.0.1:{target}"
"""


def proxy_argv(proxy: str, tmp: Path, listen: int, target: int, balancer_cmd: str) -> list[str]:
    if proxy == "haproxy":
        conf = tmp / "haproxy.cfg"
        conf.write_text(haproxy_config(listen, target))
        return ["haproxy", "-db", "-f", str(conf)]
    conf = tmp / "balancer.toml"
    conf.write_text(balancer_config(listen, target))
    return shlex.split(balancer_cmd.replace("{config}", shlex.quote(str(conf))))


def tree(pid: int) -> list[int]:
    """`pid` and its descendants."""
    found = [pid]
    for p in found:
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
            found.extend(int(c) for c in children)
    return found


def connect_once(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(REQUEST)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        if not data.endswith(b"ok"):
            raise RuntimeError(f"bad answer through the proxy: {data[:80]!r}")


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"proxy exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            connect_once(port)
            return
        time.sleep(0.05)
    raise RuntimeError("proxy not listening")


@contextlib.contextmanager
def attached(argv: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """A measuring tool attached to the proxy for the duration of the block, stopped by SIGINT."""
    tool = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)  # attaching takes a moment; nothing is sent meanwhile
    try:
        yield tool
    finally:
        tool.send_signal(signal.SIGINT)
        tool.wait(timeout=30)


@contextlib.contextmanager
def started(argv: list[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# A balancer worker starts in ~25 s under valgrind: on a loaded machine it misses the master's
# READY_TIMEOUT (30 s). Under --callgrind the master runs with a longer one (this bench only).
PATIENT_MASTER = (
    "import sys, runpy, balancer.supervisor as s; s.READY_TIMEOUT = 600.0; "
    "sys.argv = ['balancer', 'run', '-c', sys.argv[1]]; runpy.run_module('balancer', run_name='__main__')"
)


def callgrind_total(proxy: str, args: argparse.Namespace, tmp: Path, backend: Backend, n: int) -> int:
    """Instructions the proxy's serving process ran, start to exit, with `n` measured connections
    (a start that fails anyway is tried again, twice)."""
    for attempt in range(START_ATTEMPTS):
        try:
            return _callgrind_once(proxy, args, tmp, backend, n, attempt)
        except RuntimeError as exc:
            if "exited" not in str(exc) or attempt == START_ATTEMPTS - 1:
                raise
            print(f"{proxy}: did not start under valgrind ({exc}), again", file=sys.stderr)
    raise AssertionError("unreachable")


def _callgrind_once(proxy: str, args: argparse.Namespace, tmp: Path, backend: Backend, n: int, attempt: int) -> int:
    listen = free_port()
    out = tmp / f"{proxy}-{n}-{attempt}"
    out.mkdir()
    valgrind = ["valgrind", "--tool=callgrind", "--trace-children=yes", *args.valgrind_extra]
    valgrind.append(f"--callgrind-out-file={out}/cg.%p")
    argv = valgrind + proxy_argv(proxy, tmp, listen, backend.port, args.balancer_cmd)
    with started(argv, tmp / f"{proxy}-{n}-{attempt}.log") as proc:
        deadline = time.monotonic() + 120
        while True:  # under valgrind the start takes long
            try:
                wait_listening(listen, proc)
                break
            except RuntimeError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
        for _ in range(args.warmup + n):
            connect_once(listen)
    totals: dict[str, int] = {}
    for path in out.iterdir():
        text = path.read_text(errors="replace")
        cmd = re.search(r"^cmd: (.*)$", text, re.M)
        total = re.search(r"^(?:totals|summary): (\d+)", text, re.M)
        if cmd and total:
            totals[cmd.group(1)] = int(total.group(1))
    # balancer: the worker (the master only supervises); haproxy: its only process.
    serving = [t for c, t in totals.items() if "--worker" in c or "worker" in c.split()] or list(totals.values())
    return max(serving)


def measure(proxy: str, args: argparse.Namespace, tmp: Path, backend: Backend) -> dict[str, object]:
    result: dict[str, object] = {"proxy": proxy}
    if args.callgrind:
        small, large = args.connections // 5, args.connections
        t_small = callgrind_total(proxy, args, tmp, backend, small)
        t_large = callgrind_total(proxy, args, tmp, backend, large)
        result["instructions:u"] = round((t_large - t_small) / (large - small))
    listen = free_port()
    argv = proxy_argv(proxy, tmp, listen, backend.port, args.balancer_cmd)
    log = (tmp / f"{proxy}.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
    try:
        wait_listening(listen, proc)
        for _ in range(args.warmup):
            connect_once(listen)
        pids = ",".join(map(str, tree(proc.pid)))
        n = args.connections
        out = tmp / f"{proxy}.perf"
        perf = ["perf", "stat", "-x,", "-o", str(out), "-e", "instructions:u,instructions:k", "-p", pids]
        if not args.callgrind:
            with attached(perf):
                for _ in range(n):
                    connect_once(listen)
        for line in out.read_text().splitlines() if out.exists() else ():
            fields = line.split(",")
            if len(fields) > 2 and fields[2].startswith("instructions"):
                with contextlib.suppress(ValueError):
                    result[fields[2]] = round(int(fields[0]) / n)
        if args.strace:
            out = tmp / f"{proxy}.strace"
            strace = ["strace", "-c", "-f", "-o", str(out)]
            for pid in tree(proc.pid):
                strace += ["-p", str(pid)]
            with attached(strace):
                for _ in range(n):
                    connect_once(listen)
            calls: dict[str, float] = {}
            for line in out.read_text().splitlines():
                m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
                if m and m.group(2) != "total":
                    calls[m.group(2)] = round(int(m.group(1)) / n, 2)
            result["syscalls"] = dict(sorted(calls.items(), key=lambda kv: -kv[1]))
            result["syscalls_total"] = round(sum(calls.values()), 2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--only", default="haproxy,balancer")
    p.add_argument("--callgrind", action="store_true", help="count instructions with valgrind (no PMU)")
    p.add_argument("--valgrind-extra", action="append", default=[], help="a valgrind option (repeatable)")
    p.add_argument("--strace", action="store_true", help="also count syscalls (a second pass)")
    p.add_argument("--balancer-cmd", default=f"{sys.executable} -m balancer run -c {{config}}")
    args = p.parse_args(argv)
    if args.callgrind and args.balancer_cmd == p.get_default("balancer_cmd"):
        args.balancer_cmd = shlex.join([sys.executable, "-c", PATIENT_MASTER]) + " {config}"
    backend = Backend()
    backend.start()
    with tempfile.TemporaryDirectory(prefix="balancer-tcp-cost-") as name:
        for proxy in args.only.split(","):
            r = measure(proxy, args, Path(name), backend)
            user, kernel = r.get("instructions:u"), r.get("instructions:k")
            print(f"{proxy}: instructions per connection: user {user}, kernel {kernel}")
            if "syscalls" in r:
                print(f"  syscalls per connection {r['syscalls_total']}: {r['syscalls']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
