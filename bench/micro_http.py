"""Pure-Python cost of one proxied keep-alive request, without sockets.

Drives an HttpSession and a pooled UpstreamConnection with in-memory transports, so the
figure is the proxy's own CPU time per request (parsing, routing, head rewriting,
logging), the part a change to the hot path can move. By default every request head is
different and browser-like, as bench/varied.lua sends them (path and query, cookie,
referer and user agent change; ten headers), made before the measured loop;
`--identical` sends one short head again and again (the known-request path);
`--no-known` never looks the frontend's known request heads up (net.request.KnownRequest),
to measure what that memo costs or saves. Usage:
    .venv/bin/python bench/micro_http.py [--requests 200000] [--identical] [--no-known] [--profile]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import uvloop
from micro import cProfile, pstats  # bench/micro.py: the standard library's, not bench/'s
from varied_heads import request_head  # bench/varied_heads.py

from balancer.config import parse_config
from balancer.net.upstream import UpstreamConnection
from balancer.server import Balancer

CONFIG = """
[global]
log = "file:{log}"
[[frontend]]
name = "www"
bind = ["127.0.0.1:0"]
default_backend = "web"
  [[frontend.rule]]
  if = {{ path_beg = ["/api"] }}
  use_backend = "web"
  [[frontend.rule]]
  if = {{ src = ["10.66.0.0/16"] }}
  action = "deny"
[[backend]]
name = "web"
  [[backend.server]]
  name = "s1"
  address = "127.0.0.1:9"
"""

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 21 Nov 2026 23:59:59 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 6\r\nConnection: keep-alive\r\nX-Server: s1\r\n\r\nhello\n"
)


class MemoryTransport:
    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += 1

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else None

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False


async def run(requests: int, profile: bool, identical: bool, known: bool) -> None:
    warmup = 1000
    heads = [REQUEST] if identical else [request_head(n) for n in range(warmup + requests)]
    head_count = len(heads)
    with tempfile.TemporaryDirectory() as tmp:
        balancer = Balancer(parse_config(CONFIG.format(log=f"{tmp}/access.log")))
        frontend = balancer.frontends["www"]
        if not known:
            frontend.known_pause = 1 << 62  # reads left without the memo: all of them
        backend = frontend.backends["web"]
        server = backend.runtime.servers[0]
        upstream = UpstreamConnection(server, backend.idle)
        upstream.connection_made(MemoryTransport())  # type: ignore[arg-type]
        backend.idle.put(upstream)
        session = frontend_session = __import__("balancer.net.http_session", fromlist=["x"]).HttpSession(frontend)
        client = MemoryTransport()
        session.connection_made(client)  # type: ignore[arg-type]

        outbox = balancer.outbox

        def one(n: int) -> None:
            # One loop pass each: what the session holds for the end of the pass is written.
            frontend_session.data_received(heads[n % head_count])
            outbox.flush()
            upstream.data_received(RESPONSE)
            outbox.flush()

        for n in range(warmup):
            one(n)
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        start = time.perf_counter()
        for n in range(warmup, warmup + requests):
            one(n)
        elapsed = time.perf_counter() - start
        if profiler:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        assert client.written >= requests, client.written
        balancer.access_log.close()
        kind = ("identical" if identical else "varied") + ("" if known else ", no known-request memo")
        print(f"{elapsed / requests * 1e6:.2f} µs per proxied request, {kind} heads (Python side, no syscalls)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--identical", action="store_true", help="one short head again and again, not varied heads")
    parser.add_argument("--no-known", action="store_true", help="without the memo of known request heads")
    args = parser.parse_args()
    uvloop.run(run(args.requests, args.profile, args.identical, not args.no_known))


if __name__ == "__main__":
    main()
