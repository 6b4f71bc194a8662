"""Slow readers of large responses cost a bounded amount of memory, given back when they go.

300 clients each ask for three 1 MiB responses (pipelined, as slowhttptest's slow-read
mode does) and read none of it, with a 4 KiB receive buffer. The proxy must pause the
server instead of taking the responses in: before, each slow reader held ~1 MiB of
response in the worker (1,000 of them: 477 MB), and the RSS stayed at its peak after they
left. HAProxy, for comparison: about 55 KiB per slow reader on this machine.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.support.process import wait_until
from tests.support.server_process import ServerProcess
from tests.support.site import Site

pytestmark = pytest.mark.e2e

READERS = 300
PER_READER_KIB = 128  # the bound asserted: 32 KiB write buffer + one 32 KiB server read + the session
RSS_SLACK_KIB = 4096

SLOW_CLIENTS = """
import socket, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
request = b"GET /bytes/1048576 HTTP/1.1\\r\\nHost: slow\\r\\n\\r\\n" * 3
held = []
for _ in range(count):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(request)
    held.append(sock)
print("connected", flush=True)
sys.stdin.read()  # hold every connection, unread, until the test closes stdin
"""


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def _worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == 1, f"expected one worker, found {children}"
    return int(children[0])


def _settled(read: Callable[[], int], stall: float = 1.0, deadline: float = 20) -> int:
    """Poll `read()` until it has not grown by more than 1% for `stall` seconds."""
    end = time.monotonic() + deadline
    last, since = read(), time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.1)
        value = read()
        if value > last * 1.01:
            last, since = value, time.monotonic()
        elif time.monotonic() - since >= stall:
            return int(value)
    return int(read())


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    with ServerProcess("big") as proc:
        yield proc


def test_slow_readers_of_large_responses_hold_bounded_memory(site: Site, server: ServerProcess) -> None:
    config = (
        site.global_toml()
        + f"""
[[frontend]]
name = "www"
bind = ["127.0.0.1:{site.port}"]
default_backend = "web"
timeouts = {{ client = "60s" }}

[[backend]]
name = "web"
timeouts = {{ server = "60s" }}
  [[backend.server]]
  name = "big"
  address = "{server.address}"
"""
    )
    proc = site.start(config)
    worker = _worker_pid(proc.pid)
    # Warm up: one full response read normally, so the baseline has the buffers a request needs.
    with socket.create_connection(("127.0.0.1", site.port), timeout=5) as sock:
        sock.sendall(b"GET /bytes/1048576 HTTP/1.1\r\nHost: warm\r\nConnection: close\r\n\r\n")
        while sock.recv(65536):
            pass
    before = _settled(lambda: _rss_kib(worker), stall=0.5)

    clients = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLIENTS, str(site.port), str(READERS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert clients.stdout is not None and clients.stdout.readline().strip() == "connected"
        loaded = _settled(lambda: _rss_kib(worker))
    finally:
        assert clients.stdin is not None
        clients.stdin.close()
        clients.wait(10)
    per_reader = (loaded - before) / READERS
    print(f"\n{READERS} slow readers: worker RSS {before} -> {loaded} KiB, {per_reader:.0f} KiB per slow reader")
    assert per_reader <= PER_READER_KIB, f"{per_reader:.0f} KiB per slow reader (bound {PER_READER_KIB})"

    # Once they are gone, the worker gives the memory back (HeapTrimmer after the crowd left):
    # at least half of what they took, or all but a few MiB of a heap's usual slack when
    # they took little (~10 KiB each since the client transport writes at once, where the
    # loop's transport held ~70 KiB: the kernel's send buffer takes the rest).
    grown = loaded - before
    wait_until(
        lambda: _rss_kib(worker) <= before + max(grown / 2, RSS_SLACK_KIB),
        timeout=10,
        what=f"the worker's RSS back near {before} KiB (it is {_rss_kib(worker)} KiB)",
    )
