"""Minimal Python HTTP/1.1 reverse proxy: the floor of a Python proxy on this machine.

bench/run.py runs it as "pyfloor" beside HAProxy, NGINX and balancer. It does the least a correct
reverse proxy must and nothing more, the fastest way plain Python knows (see
../shared/REFERENCE.md, where this design reached about 0.9x HAProxy per core with keep-alive).
Its distance to HAProxy is what Python itself costs; balancer's distance to it is what balancer's
own features and code cost. That tells which part of balancer's gap is worth working on.

How: uvloop, asyncio.Protocol callbacks and httptools parsers, coroutines only to open upstream
connections; round robin over the servers, each with a LIFO pool of idle keep-alive connections;
one transport.write per message, held until the loop pass has read every ready socket and then
sent back to back (what balancer's net.outbox does, worth +15-20% per core). The request head
is rebuilt (hop-by-hop headers dropped, X-Forwarded-For added, a buffered body sent with
Content-Length); response bytes are relayed untouched, except that a client that asked to
close gets `Connection: close`. Not handled: upgrades, 1xx responses, timeouts, logging,
configuration beyond the server list.

Usage: python bench/floor_proxy.py --listen 127.0.0.1:8080 --server 127.0.0.1:8001 --server ...
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
from collections import deque
from typing import cast

import httptools
import uvloop

# Request headers not forwarded: hop-by-hop ones, the framing (bodies are buffered and sent with
# a fresh Content-Length) and Expect (the body is already here; a 100 Continue would only confuse).
DROPPED = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"}
DROPPED |= {b"transfer-encoding", b"content-length", b"expect"}
CONNECTION = re.compile(rb"\r\n(?:connection|keep-alive):[^\r\n]*", re.IGNORECASE)
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
RETRYABLE = {b"GET", b"HEAD", b"OPTIONS"}


class Proxy:
    def __init__(self, servers: list[tuple[str, int]]) -> None:
        self.loop = asyncio.get_running_loop()
        self.servers = servers
        self.pools: list[list[Upstream]] = [[] for _ in servers]
        self.turn = itertools.cycle(range(len(servers)))
        self.tasks: set[asyncio.Task[None]] = set()  # strong references to pending connects
        # Writes (and closes, as None) held until every ready socket of this loop pass was
        # read, then sent back to back: the readers are woken once, not once per write.
        self.held: list[tuple[asyncio.Transport, bytes | None]] = []

    def send(self, transport: asyncio.Transport, data: bytes | None) -> None:
        """Write `data` on `transport` (None: close it) at the end of this loop pass, in order."""
        if not self.held:
            self.loop.call_soon(self.flush)
        self.held.append((transport, data))

    def flush(self) -> None:
        held, self.held = self.held, []
        for transport, data in held:
            if data is None:
                transport.close()
            elif not transport.is_closing():
                transport.write(data)


class Upstream(asyncio.Protocol):
    """One connection to a server: relays one response at a time to its client, then idles in the pool."""

    transport: asyncio.Transport

    def __init__(self, proxy: Proxy, pool: list[Upstream]) -> None:
        self.proxy = proxy
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.client: Client | None = None
        self.pending = b""  # response bytes received before its head is complete
        self.head_done = self.done = self.keep_alive = self.rewrite = self.is_head = self.reused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def send(self, client: Client, request: bytes, is_head: bool, reused: bool) -> None:
        self.client, self.is_head, self.reused = client, is_head, reused
        self.head_done = self.done = False
        client.upstream = self
        self.proxy.send(self.transport, request)

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:  # an idle connection has nothing to say
            self.transport.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()  # connection_lost tells the client
            return
        data = self.pending + data
        if not self.head_done:
            self.pending = data
            return
        self.pending = b""
        if self.rewrite:  # the client asked to close: the server's keep-alive is not for it
            self.rewrite = False
            end = data.index(b"\r\n\r\n")
            data = CONNECTION.sub(b"", data[:end]) + b"\r\nConnection: close" + data[end:]
        self.proxy.send(client.transport, data)
        if self.done:
            self.client = None
            if self.keep_alive and not self.is_head:
                if client.write_paused:  # paused by that last write: an idle connection must read
                    self.transport.resume_reading()
                self.pool.append(self)
            else:  # a HEAD response leaves the parser waiting for a body that never comes
                self.transport.close()
            client.response_done(self.keep_alive)

    def on_headers_complete(self) -> None:
        self.head_done = True
        self.done = self.is_head
        self.keep_alive = self.parser.should_keep_alive()
        self.rewrite = self.keep_alive and self.client is not None and not self.client.keep_alive

    def on_message_complete(self) -> None:
        self.done = True

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.pool:
            self.pool.remove(self)
        client, self.client = self.client, None
        if client is not None:
            client.upstream_lost(self)


class Client(asyncio.Protocol):
    """One client connection: parses requests, forwards each to the next server, in order."""

    transport: asyncio.Transport

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.parser = httptools.HttpRequestParser(self)
        self.upstream: Upstream | None = None
        self.queue: deque[tuple[bytes, bool, bytes]] = deque()  # (request, keep-alive, method)
        self.request = self.method = self.url = self.xff = b""
        self.head: list[bytes] = []
        self.body: list[bytes] = []
        self.keep_alive = self.busy = self.closed = self.write_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.xff = b"X-Forwarded-For: " + transport.get_extra_info("peername")[0].encode() + b"\r\n"

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            if not self.busy:
                self.proxy.send(self.transport, BAD_REQUEST)
            self.proxy.send(self.transport, None)

    def on_message_begin(self) -> None:
        self.url = b""
        self.head = []
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() not in DROPPED:
            self.head.append(b"%s: %s\r\n" % (name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method, body = self.parser.get_method(), b"".join(self.body)
        length = b"Content-Length: %d\r\n" % len(body) if body or method in (b"POST", b"PUT", b"PATCH") else b""
        start = b"%s %s HTTP/1.1\r\n" % (method, self.url)
        request = b"".join((start, *self.head, self.xff, length, b"\r\n", body))
        self.queue.append((request, self.parser.should_keep_alive(), method))
        if not self.busy:
            self.forward_next()
        else:  # a pipelining client: hold further requests back until this one is answered
            self.transport.pause_reading()

    def forward_next(self) -> None:
        self.request, self.keep_alive, self.method = self.queue.popleft()
        self.busy = True
        index = next(self.proxy.turn)
        pool = self.proxy.pools[index]
        if pool:
            pool.pop().send(self, self.request, self.method == b"HEAD", reused=True)
        else:
            self.connect(index)

    def connect(self, index: int) -> None:
        task = self.proxy.loop.create_task(self.open(index))
        self.proxy.tasks.add(task)
        task.add_done_callback(self.proxy.tasks.discard)

    async def open(self, index: int) -> None:
        host, port = self.proxy.servers[index]
        pool = self.proxy.pools[index]
        try:
            _, upstream = await self.proxy.loop.create_connection(lambda: Upstream(self.proxy, pool), host, port)
        except OSError:
            self.fail()
            return
        if self.closed:  # nobody waits for it any more: a fresh connection for the next request
            pool.append(upstream)
        else:
            upstream.send(self, self.request, self.method == b"HEAD", reused=False)

    def response_done(self, keep_alive: bool) -> None:
        self.upstream, self.busy = None, False
        if not (keep_alive and self.keep_alive):
            self.proxy.send(self.transport, None)
        elif self.queue:
            self.forward_next()
            if not self.queue:
                self.transport.resume_reading()

    def upstream_lost(self, upstream: Upstream) -> None:
        self.upstream = None
        if upstream.head_done:  # the response is relayed in part, or ended by the close: end it here too
            self.proxy.send(self.transport, None)
        elif upstream.reused and not upstream.pending and self.method in RETRYABLE:
            self.connect(next(self.proxy.turn))  # the server closed an idle connection as we reused it
        else:
            self.fail()

    def fail(self) -> None:
        if not self.closed:
            self.proxy.send(self.transport, BAD_GATEWAY)
            self.proxy.send(self.transport, None)

    def pause_writing(self) -> None:  # backpressure: read the response no faster than the client takes it
        self.write_paused = True
        if self.upstream is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.upstream is not None:
            self.upstream.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        upstream, self.upstream = self.upstream, None
        if upstream is not None:  # mid-response: that connection cannot be reused
            upstream.client = None
            upstream.transport.close()


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def serve(listen: tuple[str, int], servers: list[tuple[str, int]]) -> None:
    proxy = Proxy(servers)
    server = await proxy.loop.create_server(lambda: Client(proxy), *listen, backlog=4096, reuse_address=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", type=address, required=True, help="HOST:PORT")
    parser.add_argument("--server", type=address, action="append", required=True, help="HOST:PORT, repeatable")
    args = parser.parse_args()
    uvloop.run(serve(args.listen, args.server))


if __name__ == "__main__":
    main()
