"""20,000 idle client connections against a frontend's maxconn, as a crowd of idle browsers
or a connection flood meets it: the worker holds them with bounded memory, a new client
waits in the kernel's queue (not refused, not dropped) and is served the moment a slot
frees, and the admin API answers throughout.

Two workers, and a crowd of two processes with 10,000 connections each from its own source
address: this machine's hard open-files limit is 20,000 per process, even for root, and a
node-wide maxconn is what an operator sets.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.support import TaggedBackend, free_port, wait_until
from tests.support.site import Site

pytestmark = pytest.mark.e2e

IDLE = 20_000
PER_CONNECTION_KIB = 16  # measured 4-5 KiB; HAProxy 1.3 (bench/README.md)

CROWD = r"""
import asyncio, resource, sys
port, count, source = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
want = count + 1000
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
except (ValueError, OSError) as exc:
    print(f"cannot raise the open files limit to {want}: {exc}", flush=True)
    sys.exit(3)

async def main():
    held = []
    async def one(n):
        _, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        held.append(writer)
    for start in range(0, count, 500):
        await asyncio.gather(*(one(n) for n in range(start, min(count, start + 500))))
    print(f"held {len(held)}", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        for writer in held[: int(line)]:
            writer.close()
        del held[: int(line)]
        print(f"held {len(held)}", flush=True)

asyncio.run(main())
"""


def _workers(master: int) -> list[int]:
    return [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def _sockets(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += fd.readlink().name.startswith("socket:")
        except OSError:
            continue
    return count


def _timed(call: Callable[[], object]) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


def test_twenty_thousand_idle_connections_at_maxconn(site: Site) -> None:
    admin = free_port()
    with TaggedBackend("s1") as s1:
        proc = site.start(
            site.global_toml(extra=f"workers = 2\nmaxconn = {IDLE}")
            + f'[admin]\nbind = "127.0.0.1:{admin}"\n'
            + f'[[frontend]]\nname = "www"\nbind = ["127.0.0.1:{site.port}"]\ndefault_backend = "web"\n'
            + f"maxconn = {IDLE}\n"
            # Accepted at once: this is about connections the workers hold. With defer_accept
            # the kernel holds a silent crowd for a second first, and of 20,000 closed in a
            # burst a few hundred go on as silent connections to the http_request timeout.
            + "defer_accept = false\n"
            + 'timeouts = { client = "120s", http_request = "120s", http_keep_alive = "120s" }\n'
            + f'[[backend]]\nname = "web"\n[[backend.server]]\nname = "s1"\naddress = "{s1.address}"\n'
        )
        wait_until(lambda: "balancer running" in proc.output(), timeout=15, what="both workers serving")
        workers = _workers(proc.pid)
        assert len(workers) == 2

        def accepted() -> int:
            """Client connections the workers accepted since the crowd came (the admin API)."""
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/api/stats", timeout=5) as reply:
                return int(json.loads(reply.read())["frontends"][0]["connections"]) - earlier

        earlier = 0
        earlier = accepted()  # the start-up's probes

        before = sum(_rss_kib(pid) for pid in workers)
        base = sum(_sockets(pid) for pid in workers)

        half = IDLE // 2
        crowds = [
            subprocess.Popen(
                [sys.executable, "-c", CROWD, str(site.port), str(half), source],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for source in ("127.0.0.2", "127.0.0.3")
        ]
        try:
            started = time.monotonic()
            for crowd in crowds:
                assert crowd.stdout is not None
                line = crowd.stdout.readline()
                assert line.strip() == f"held {half}", line
            opened = time.monotonic() - started
            wait_until(lambda: accepted() >= IDLE, timeout=30, what=f"{IDLE} connections accepted ({accepted()})")
            loaded = sum(_rss_kib(pid) for pid in workers)
            per_connection = (loaded - before) / IDLE
            print(
                f"\n{IDLE} idle connections opened in {opened:.1f}s; workers' RSS {before} -> {loaded} KiB, "
                f"{per_connection:.1f} KiB per connection"
            )
            assert per_connection <= PER_CONNECTION_KIB

            # At maxconn: a new client's connection waits, unanswered (in the kernel's queue, or
            # accepted and parked unread: net.gate).
            late = socket.create_connection(("127.0.0.1", site.port), timeout=5)
            late.sendall(b"GET /late HTTP/1.1\r\nHost: crowd\r\nConnection: close\r\n\r\n")
            late.settimeout(1.0)
            with pytest.raises(TimeoutError):
                late.recv(100)
            # The admin API answers while the frontend is full.
            assert accepted() >= IDLE

            # Ten idle clients leave: the waiting one is served within a moment.
            for crowd in crowds:
                assert crowd.stdin is not None
                crowd.stdin.write("5\n")
                crowd.stdin.flush()
            late.settimeout(5)
            answered = _timed(lambda: late.recv(100))
            late.close()
            assert answered < 2.0
            assert s1.paths == ["/late"]
            assert proc.alive()
        finally:
            for crowd in crowds:
                if crowd.stdin is not None:
                    crowd.stdin.close()
            for crowd in crowds:
                crowd.wait(30)
        wait_until(
            lambda: sum(_sockets(pid) for pid in workers) - base < 100,
            timeout=30,
            what="the crowd's connections closed",
        )
