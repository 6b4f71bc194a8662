"""Pure-Python cost of one proxied HTTP/2 request (one stream), without sockets.

micro_http.py's counterpart for an HTTP/2 frontend: an H2Session (h2c) fed from memory with
HEADERS frames made before the measured loop (one stream per request, each after the last
has ended, as `h2load -m1`; the path changes every request), and a pooled
UpstreamConnection fed the server's response. Each request takes the loop passes the
stream needs (its flush and its end run call_soon). The figure is the proxy's own CPU per
HTTP/2 request: proto.h2_connection and proto.hpack_codec, the stream, the session, the
upstream, the log line.
Measure a change by instructions, as micro_http.py (bench/README.md), e.g.

    valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/python bench/micro_h2.py --requests 1000
    valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/python bench/micro_h2.py --requests 5000

(the difference of the two `Collected` figures divided by 4,000). `--chunked` answers with a
chunked response carrying a trailer section, as gRPC servers do. Usage:
    .venv/bin/python bench/micro_h2.py [--requests 50000] [--chunked] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import tempfile
import time

import uvloop
from micro import cProfile, pstats  # bench/micro.py: the standard library's, not bench/'s

from balancer.config import parse_config
from balancer.net.h2_session import H2Session
from balancer.net.upstream import UpstreamConnection
from balancer.server import Balancer

CONFIG = """
[global]
log = "file:{log}"
[[frontend]]
name = "www"
bind = ["127.0.0.1:0"]
default_backend = "web"
h2c = true
[[backend]]
name = "web"
  [[backend.server]]
  name = "s1"
  address = "127.0.0.1:9"
"""

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 21 Nov 2026 23:59:59 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 6\r\nConnection: keep-alive\r\nX-Server: s1\r\n\r\nhello\n"
)
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 21 Nov 2026 23:59:59 GMT\r\n"
    b"Content-Type: application/grpc\r\nTransfer-Encoding: chunked\r\nX-Server: s1\r\n\r\n"
    b"6\r\nhello\n\r\n0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n"
)
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream_id) + payload


def _string(value: bytes) -> bytes:
    """An HPACK string literal, raw (RFC 7541 5.2); the values here are all short."""
    assert len(value) < 0x7F
    return bytes([len(value)]) + value


def client_frames(count: int) -> list[bytes]:
    """The bytes a client sends for request n: its HEADERS (END_STREAM), and every 1,000
    requests a WINDOW_UPDATE that gives the connection window back. The header blocks are
    written here as nghttp2 (h2load) writes them: the first request enters :authority,
    user-agent and accept in the dynamic table and later ones name them by index; the path,
    which changes every request, goes as a literal. Written by hand, not with the hpack
    library, whose encoder costs more per request than the proxy does: the figures by
    difference of two runs (see above) would count it."""
    authority, user_agent, accept = b"127.0.0.1:8080", b"h2load nghttp2/1.52.0", b"*/*"
    # :method GET (static 2), :scheme http (static 6); literals with incremental indexing
    # of :authority (name 1), user-agent (58), accept (19): dynamic 64, 63, 62 after.
    first = b"\x82\x86\x41" + _string(authority)
    later = b"\x82\x86\xc0"
    first_tail = b"\x7a" + _string(user_agent) + b"\x53" + _string(accept)
    later_tail = b"\xbf\xbe"
    out = []
    for n in range(count):
        path = b"\x04" + _string(b"/item/%d?q=%d" % (n, n * 7))  # :path (name 4), not indexed
        block = first + path + first_tail if n == 0 else later + path + later_tail
        data = frame(0x1, 0x5, 2 * n + 1, block)
        if n % 1000 == 999:
            data += frame(0x8, 0, 0, struct.pack(">I", 1 << 24))
        out.append(data)
    return out


class MemoryTransport:
    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += 1

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

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


async def run(requests: int, profile: bool, chunked: bool) -> None:
    warmup = 1000
    frames = client_frames(warmup + requests)
    response = CHUNKED if chunked else RESPONSE
    with tempfile.TemporaryDirectory() as tmp:
        balancer = Balancer(parse_config(CONFIG.format(log=f"{tmp}/access.log")))
        frontend = balancer.frontends["www"]
        backend = frontend.backends["web"]
        upstream = UpstreamConnection(backend.runtime.servers[0], backend.idle)
        upstream.connection_made(MemoryTransport())  # type: ignore[arg-type]
        backend.idle.put(upstream)
        session = H2Session(frontend)
        client = MemoryTransport()
        session.connection_made(client)  # type: ignore[arg-type]
        session.data_received(PREFACE + frame(0x4, 0, 0, b""))
        outbox = balancer.outbox

        async def one(n: int) -> None:
            session.data_received(frames[n])
            outbox.flush()
            upstream.data_received(response)
            outbox.flush()
            await asyncio.sleep(0)  # the stream's flush and end (call_soon)
            await asyncio.sleep(0)

        for n in range(warmup):
            await one(n)
        assert not session.streams and upstream.owner is None, "a stream did not end"
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        start = time.perf_counter()
        for n in range(warmup, warmup + requests):
            await one(n)
        elapsed = time.perf_counter() - start
        if profiler:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        assert client.written >= requests, client.written
        balancer.access_log.close()
        kind = "chunked with trailers" if chunked else "Content-Length"
        print(f"{elapsed / requests * 1e6:.2f} µs per proxied HTTP/2 request, {kind} responses (no syscalls)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=50000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--chunked", action="store_true", help="a chunked response with trailers")
    args = parser.parse_args()
    uvloop.run(run(args.requests, args.profile, args.chunked))


if __name__ == "__main__":
    main()
