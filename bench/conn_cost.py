#!/usr/bin/env python3
"""What one connection costs a proxy, counted rather than timed: instructions and syscalls.

For each proxy (HAProxy 1 thread and balancer 1 worker), a client opens `--connections`
connections one after another, each with one request of its own (a different path and query
per connection, so no cache sees a repeated head) and `Connection: close`, and reads the
answer to the end. `--mode http` (the default) configures the proxies as bench/run.py does
(HTTP, rules, forwardfor, access log); `--mode tcp` as bench/tcp.py does (an L4 relay,
`mode = "tcp"` / HAProxy `mode tcp`, to the same NGINX backend); `--mode tls` as bench/tls.py
does (an HTTPS frontend with a `--key ecdsa|rsa` certificate), each connection a full TLS 1.3
handshake (the client offers no session to resume) before its request; with `--requests 0`
the handshake alone, closed with a reset as `openssl s_time -new` closes. With `--resume`
each client thread makes one full TLS 1.2 handshake and resumes its session (by ticket) on
every connection after it, as `openssl s_time -reuse -tls1_2` does; a run where a
connection does not resume fails. Around that fixed work:

- `perf stat -e instructions:u,instructions:k` on the proxy's serving process: instructions
  per connection, user and kernel (deterministic to a few percent, unlike a wrk ratio on a
  shared machine), and in the same pass CPU microseconds per connection, user and system,
  from /proc/PID/stat (timed: noisy, but the kernel's share where perf counts nothing);
- with `--callgrind`, user instructions counted by valgrind instead (no kernel figure);
- with `--strace`, a second pass under `strace -c -f`: syscalls per connection by name.

One connection at a time is not wrk's 64 at once (no batching of accepts per loop pass), so
compare proxies with each other here, not with run.py's per-request CPU. `--parallel N`
keeps N connections in flight (N client threads, each its share one after another): with
`--callgrind`, which slows the proxy ~50x, the proxy is then saturated and handles many
ready connections per loop pass, as under wrk, so the per-pass costs (the wait for events,
the end-of-pass flush) are shared as they are under load.

Usage: .venv/bin/python bench/conn_cost.py [--mode http|tcp|tls] [--key ecdsa|rsa] [--resume]
       [--connections 5000] [--requests 1] [--parallel 1]
       [--only haproxy,balancer] [--strace] [--callgrind] [--balancer-cmd CMD]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # bench/run.py: processes, configs
import tcp as tcpbench  # bench/tcp.py: the L4 relay configs
import tls as tlsbench  # bench/tls.py: the HTTPS frontends and certificates

PROXIES = ("haproxy", "balancer")
VG_WORKER = Path(__file__).resolve().parent / "vg_worker"


def serving_pid(proc: harness.Proc) -> int:
    """The process that serves connections: balancer's one worker, HAProxy itself."""
    children = subprocess.run(
        ["pgrep", "-P", str(proc.popen.pid)], capture_output=True, text=True, timeout=10, check=False
    ).stdout.split()
    return int(children[0]) if proc.name == "balancer" and children else proc.popen.pid


@dataclass(frozen=True)
class Target:
    """Where the client connects, and with `tls` (a client context), over TLS."""

    port: int
    tls: ssl.SSLContext | None = None
    requests: int = 1  # per connection, the last says Connection: close; 0: none (a handshake alone)
    parallel: int = 1  # connections in flight at once
    resume: bool = False  # TLS: each connection after a client thread's first resumes its session


def client_context(resume: bool) -> ssl.SSLContext:
    """Without `resume`, full handshakes only: a socket wrapped without `session=` resumes
    nothing, and the tickets the server sends are read and dropped; TLS 1.3, as `openssl
    s_time -new` makes. With it, TLS 1.2, whose ticket comes within the handshake (TLS 1.3
    sends it after, where a handshake alone never reads it), as `s_time -reuse -tls1_2`."""
    context = tlsbench.insecure_context()
    if resume:
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    else:
        context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["http/1.1"])
    return context


def keep_alive_answer(sock: socket.socket, i: int) -> None:
    """Read one answer with a Content-Length body (what the NGINX backend sends)."""
    got = b""
    for _ in range(1000):  # bounded: the answer is a few hundred bytes
        end = got.find(b"\r\n\r\n")
        if end >= 0:
            match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", got[:end])
            if match is None or not got.startswith(b"HTTP/1.1 200"):
                raise harness.BenchError(f"request {i}: {got[:80]!r}")
            if len(got) >= end + 4 + int(match[1]):
                return
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    raise harness.BenchError(f"request {i}: incomplete {got[:80]!r}")


def client(target: Target, count: int, start: int) -> None:
    """`count` connections, `target.parallel` at a time (each thread its share one after
    another), `target.requests` distinct requests each, the last read to the end."""
    if target.parallel <= 1:
        one_after_another(target, count, start)
        return
    share = -(-count // target.parallel)
    with ThreadPoolExecutor(target.parallel) as pool:
        runs = [
            pool.submit(one_after_another, target, min(share, count - n), start + n) for n in range(0, count, share)
        ]
        for run in runs:
            run.result()  # a client's failure is the run's


def one_after_another(target: Target, count: int, start: int) -> None:
    session: ssl.SSLSession | None = None
    for i in range(start, start + count):
        raw = socket.create_connection(("127.0.0.1", target.port))
        with target.tls.wrap_socket(raw, session=session) if target.tls is not None else raw as sock:
            if target.resume and isinstance(sock, ssl.SSLSocket):
                if session is not None and not sock.session_reused:
                    raise harness.BenchError(f"connection {i}: the session was not resumed")
                session = sock.session
            if not target.requests:
                # The connection (and its TLS handshake) alone, closed at once with a reset,
                # as `openssl s_time -new` closes: the proxy sees the error as the client's
                # Finished arrives, and stops there.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                continue
            for r in range(target.requests - 1):
                sock.sendall(
                    b"GET /c/%d/%d?q=%d HTTP/1.1\r\nHost: bench\r\nUser-Agent: conn-cost\r\nAccept: */*\r\n\r\n"
                    % (i, r, i)
                )
                keep_alive_answer(sock, i)
            sock.sendall(
                b"GET /c/%d?q=%d HTTP/1.1\r\nHost: bench\r\nUser-Agent: conn-cost\r\nAccept: */*\r\n"
                b"Connection: close\r\n\r\n" % (i, i)
            )
            got = b""
            for _ in range(1000):  # bounded: the answer is a few hundred bytes
                try:
                    chunk = sock.recv(65536)
                except ssl.SSLEOFError:  # closed without close_notify: the end all the same
                    break
                if not chunk:
                    break
                got += chunk
            if not got.startswith(b"HTTP/1.1 200"):
                raise harness.BenchError(f"connection {i}: {got[:80]!r}")


def ready(proc: harness.Proc, target: Target) -> None:
    """Until one request is answered (under valgrind the worker starts long after the port
    listens); bounded."""
    deadline = time.monotonic() + 120
    while True:
        try:
            client(dataclasses.replace(target, requests=1), 1, 0)  # a connection alone proves nothing
            return
        except (OSError, harness.BenchError):
            if time.monotonic() > deadline:
                raise harness.BenchError(f"{proc.name} answers nothing:\n{harness.log_tail(proc)}") from None
            time.sleep(0.5)


def attached(argv: list[str], target: Target, count: int, start: int) -> str:
    """Run the client while `argv` (perf or strace, attached to the proxy) records."""
    tool = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # let the tool attach; not synchronisation of the measured work
    try:
        client(target, count, start)
    finally:
        tool.send_signal(2)  # SIGINT: both tools print their summary and exit
        _, err = tool.communicate(timeout=60)
    return err


def callgrind_counts(pid: int, target: Target, count: int, tmp: Path, keep: Path | None) -> dict[str, float]:
    """Instructions (Ir) of `pid`, run under valgrind callgrind, over `count` connections:
    the counters are zeroed before and dumped after (callgrind_control)."""
    control = harness.find_binary("callgrind_control")
    # The worker starts with instrumentation off (fast enough to be ready in time): on for
    # a warm-up first, as code runs differently the first time it is instrumented.
    subprocess.run([control, "-i", "on", str(pid)], capture_output=True, timeout=120, check=True)
    client(target, 200, 40_000_000)
    subprocess.run([control, "-z", str(pid)], capture_output=True, timeout=120, check=True)
    client(target, count, 30_000_000)
    before = set(tmp.glob("callgrind.out.*"))
    subprocess.run([control, "-d", str(pid)], capture_output=True, timeout=120, check=True)
    dumps = sorted(set(tmp.glob(f"callgrind.out.{pid}*")) - before, key=lambda f: f.stat().st_mtime)
    if keep is not None:
        keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(dumps[-1], keep)
    for line in dumps[-1].read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return {"instructions (callgrind)": int(line.split()[1]) / count}
    raise harness.BenchError(f"no totals in {dumps[-1]}")


def cpu_ticks(pid: int) -> tuple[int, int]:
    """User and system CPU of `pid` so far, in clock ticks (/proc/PID/stat utime, stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def perf_counts(pid: int, target: Target, count: int) -> dict[str, float]:
    """Instructions per connection by perf (where the machine counts them), and CPU
    microseconds per connection, user and system, from /proc (timed, so noisy on a shared
    machine, but the only kernel-side figure where perf has no counters)."""
    user, system = cpu_ticks(pid)
    err = attached(
        [harness.find_binary("perf"), "stat", "-x", ",", "-e", "instructions:u,instructions:k", "-p", str(pid)],
        target,
        count,
        10_000_000,
    )
    after_user, after_system = cpu_ticks(pid)
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {
        "user us": (after_user - user) * tick_us / count,
        "sys us": (after_system - system) * tick_us / count,
    }
    for line in err.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].replace(".", "").isdigit():
            out[fields[2]] = float(fields[0]) / count
    return out


def strace_counts(pid: int, target: Target, count: int) -> dict[str, float]:
    err = attached([harness.find_binary("strace"), "-c", "-f", "-p", str(pid)], target, count, 20_000_000)
    out: dict[str, float] = {}
    for line in err.splitlines():
        match = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
        if match and match[2] != "total":
            out[match[2]] = int(match[1]) / count
    return out


def proxy_setup(args: argparse.Namespace, proxy: str, tmp: Path, ports: harness.Ports) -> tuple[list[str], Target]:
    """The proxy's command line and where the client connects, for `--mode`."""
    if args.mode == "tls":
        # tls.py's frontends, both TLS ones with the `--key` certificate; the first is measured.
        pem = tlsbench.make_pem(tmp, args.key)
        pems = {"ecdsa": pem, "rsa": pem}
        unused = harness.free_ports(2)
        tls_ports = tlsbench.ProxyPorts(ecdsa=harness.proxy_port(proxy, ports), rsa=unused[0], plain=unused[1])
        target = Target(tls_ports.ecdsa, client_context(args.resume), args.requests, resume=args.resume)
        if proxy == "haproxy":
            conf = tmp / "haproxy-tls.cfg"
            conf.write_text(tlsbench.haproxy_config(tls_ports, pems, ports.backend1, 1000))
            return [harness.find_binary("haproxy"), "-db", "-f", str(conf)], target
        conf = tmp / "balancer-tls.toml"
        conf.write_text(tlsbench.balancer_config(tmp, tls_ports, pems, ports.backend1, 1000))
        return harness.balancer_argv(args.balancer_cmd, conf), target
    if args.mode == "tcp":
        # tcp.py's relays: "web" to the NGINX backend is measured; its "sink" relay is unused.
        relays = tcpbench.Ports(
            sink=ports.backend2, web=ports.backend1, relay_sink=ports.nginx, relay_web=harness.proxy_port(proxy, ports)
        )
        return tcpbench.proxy_argv(args, proxy, tmp, relays), Target(relays.relay_web, None, args.requests)
    return harness.proxy_argv(proxy, tmp, ports, args.balancer_cmd), Target(
        harness.proxy_port(proxy, ports), None, args.requests
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("http", "tcp", "tls"), default="http", help="HTTP, L4 relays or HTTPS")
    p.add_argument("--key", choices=("ecdsa", "rsa"), default="ecdsa", help="with --mode tls: the certificate's key")
    p.add_argument(
        "--resume", action="store_true", help="with --mode tls: resumed TLS 1.2 handshakes after each client's first"
    )
    p.add_argument("--connections", type=int, default=5000)
    p.add_argument(
        "--requests",
        type=int,
        default=1,
        help="requests per connection (keep-alive; figures stay per connection); 0: none, as `openssl s_time -new`",
    )
    p.add_argument("--parallel", type=int, default=1, help="connections in flight at once (client threads)")
    p.add_argument("--only", type=harness.csv_choice(PROXIES), default=list(PROXIES))
    p.add_argument("--strace", action="store_true", help="also count syscalls per connection")
    p.add_argument("--balancer-cmd", default=harness.DEFAULT_BALANCER_CMD, help="as in bench/run.py")
    p.add_argument(
        "--callgrind",
        action="store_true",
        help="count instructions with valgrind callgrind (where perf has no hardware counters; ~50x slower)",
    )
    p.add_argument("--keep-dump", type=Path, help="with --callgrind: copy each proxy's dump to this directory")
    args = p.parse_args(argv)
    if args.resume and args.mode != "tls":
        p.error("--resume is for --mode tls")
    with tempfile.TemporaryDirectory(prefix="conn-cost-") as name:
        tmp = Path(name)
        ports = harness.Ports(*harness.free_ports(5))
        backend_argv = harness.nginx_argv(tmp, "nginx-backend", harness.backend_config(tmp / "nginx-backend", ports))
        with harness.running("backend", backend_argv, tmp) as backend:
            harness.wait_for_port(backend, ports.backend1)
            for proxy in args.only:
                proxy_argv, target = proxy_setup(args, proxy, tmp, ports)
                target = replace(target, parallel=args.parallel)
                if args.callgrind and proxy == "haproxy":
                    valgrind = [harness.find_binary("valgrind"), "--tool=callgrind"]
                    proxy_argv = [*valgrind, f"--callgrind-out-file={tmp}/callgrind.out.%p", *proxy_argv]
                elif args.callgrind:
                    # Only the worker runs under valgrind (bench/vg_worker/sitecustomize.py):
                    # the master would not see it ready in time if both were slowed down.
                    path = f"PYTHONPATH={VG_WORKER}:{os.environ.get('PYTHONPATH', '')}"
                    proxy_argv = [f"{arg}:{VG_WORKER}" if arg.startswith("PYTHONPATH=") else arg for arg in proxy_argv]
                    proxy_argv = ["env", f"CONN_COST_OUT={tmp}", path, *proxy_argv]
                with harness.running(proxy, proxy_argv, tmp) as proc:
                    harness.wait_for_port(proc, target.port, timeout=120)
                    ready(proc, target)
                    try:
                        client(target, 500, 0)  # warm-up: imports, pools, caches
                    except OSError as exc:
                        raise harness.BenchError(f"{proxy}: {exc}:\n{harness.log_tail(proc, 30)}") from None
                    pid = serving_pid(proc)
                    if args.callgrind:
                        counts = callgrind_counts(
                            pid, target, args.connections, tmp, args.keep_dump and args.keep_dump / f"{proxy}.callgrind"
                        )
                    else:
                        counts = perf_counts(pid, target, args.connections)
                    per = ", ".join(f"{k} {v:,.0f}" for k, v in counts.items())
                    if not any(k.startswith("instructions") for k in counts):
                        per += "; no instruction counters here (perf stat: not supported): use --callgrind"
                    print(f"{proxy}: per connection: {per}", flush=True)
                    if args.strace:
                        calls = strace_counts(pid, target, args.connections)
                        rows = sorted(calls.items(), key=lambda kv: -kv[1])
                        total = sum(calls.values())
                        print(
                            f"{proxy}: syscalls per connection {total:.2f}: "
                            + shlex.join(f"{k}={v:.2f}" for k, v in rows if v >= 0.01),
                            flush=True,
                        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
