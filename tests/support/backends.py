"""Small real servers to put behind the balancer in tests.

`TaggedBackend` is an HTTP/1.1 origin server on 127.0.0.1 that tags every answer with
`Server-Name: NAME`, so a test can tell which server a request reached and in what order
(the HAProxy regression-test idiom). It runs its own asyncio loop in a daemon thread, so
both synchronous tests and tests that run the balancer in-process can use it.

Routes (by path, query string ignored):

- anything not listed below: 200, body ``NAME\\n``
- ``/echo...``: 200, JSON ``{"server", "method", "target", "version", "headers": [[name, value]...],
  "body", "body_length", "body_sha256", "trailers": [[name, value]...]}``
- ``/status/NNN``: status NNN, body ``NAME NNN\\n`` (no body for 1xx/204/304)
- ``/slow/MS``: waits MS milliseconds, then like the default
- ``/hang``: never answers, keeps the connection open
- ``/close``: closes the connection without any response
- ``/partial``: head with ``Content-Length: 100``, 10 body bytes, then closes
- ``/chunked/N``: chunked response of N chunks ``chunk-i\\n``
- ``/trailers``: chunked response of two chunks (``part-1\\n``, ``part-2\\n``, each written on its
  own) and the trailer section ``X-Checksum: 42``, ``Grpc-Status: 0``, ``Grpc-Message: all good``,
  ``Trailer: x`` (gRPC's trailers, plus one a proxy must drop)
- ``/bytes/N``: N bytes of ``x`` with Content-Length
- ``/keepalive-header``: 200 with ``Connection: keep-alive`` and ``Keep-Alive: timeout=5``
- ``/ws``: WebSocket echo (RFC 6455): 101, then text/binary frames echoed, ping answered
- ``/set-cookie/COOKIE/VALUE``: like the default, plus ``Set-Cookie: COOKIE=VALUE; Path=/``

Requests may carry Content-Length or chunked bodies, may be pipelined, may be HTTP/1.0.
``Expect: 100-continue`` is answered with an interim ``100 Continue`` as real servers do.

`busy` is the number of requests being answered now and `most_busy` the most at once: the
concurrency a server sees, which `maxconn` bounds.

`TcpEchoServer` echoes bytes back on every TCP connection and honours half-close: when the
client shuts down its write side, the server finishes echoing and then closes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import ssl
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RecordedRequest", "TaggedBackend", "TcpEchoServer", "TlsTaggedBackend"]

_MAX_HEAD = 256 * 1024
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_REASONS = {
    100: "Continue",
    101: "Switching Protocols",
    200: "OK",
    201: "Created",
    204: "No Content",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass
class RecordedRequest:
    """One request as the backend received it (after the balancer rewrote it)."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    peer: tuple[str, int] | None = None
    trailers: list[tuple[str, str]] = field(default_factory=list)  # of a chunked body

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        """First value of header `name` (case-insensitive), or None."""
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for n, v in self.headers if n.lower() == lname]


class _BadRequest(Exception):
    pass


class _LoopThread:
    """An asyncio loop running in a daemon thread; coroutines are submitted from outside."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        # Let cancelled tasks unwind before the loop is closed.
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def shutdown(self, timeout: float = 10) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)


class _ThreadedServer:
    """Common start/stop/context-manager plumbing for the servers below."""

    def __init__(self, name: str, port: int = 0, host: str = "127.0.0.1") -> None:
        self.name = name
        self.host = host
        self.port = port
        self.connections = 0
        self._runner: _LoopThread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self) -> _ThreadedServer:
        if self._runner is not None:
            return self
        self._runner = _LoopThread(f"{type(self).__name__}-{self.name}")
        self._runner.call(self._start())
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connection, self.host, self.port, limit=_MAX_HEAD, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError, _BadRequest):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        with contextlib.suppress(Exception):
            runner.call(self._stop())
        runner.shutdown()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.address}>"


class TaggedBackend(_ThreadedServer):
    """An HTTP/1.1 server that tags its answers with `Server-Name: NAME` (see module doc)."""

    def __init__(self, name: str, port: int = 0, host: str = "127.0.0.1") -> None:
        super().__init__(name, port, host)
        self.requests: list[RecordedRequest] = []
        # Requests being answered now, and the most at once (a server's view of maxconn).
        self.busy = 0
        self.most_busy = 0

    def __enter__(self) -> TaggedBackend:
        self.start()
        return self

    def start(self) -> TaggedBackend:
        super().start()
        return self

    @property
    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    # -- request parsing -------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            except asyncio.LimitOverrunError:
                await self._send_simple(writer, 431, close=True)
                return
            request = self._parse_head(head, peer)
            body = await self._read_body(reader, writer, request)
            request.body = body
            self.requests.append(request)
            self.busy += 1
            self.most_busy = max(self.most_busy, self.busy)
            try:
                keep_going = await self._dispatch(reader, writer, request)
            finally:
                self.busy -= 1
            if not keep_going:
                return

    @staticmethod
    def _parse_head(head: bytes, peer: Any) -> RecordedRequest:
        lines = head.decode("latin-1").split("\r\n")
        while lines and lines[0] == "":  # tolerate stray CRLF between requests
            lines.pop(0)
        parts = lines[0].split(" ") if lines else []
        if len(parts) != 3:
            raise _BadRequest(head[:100])
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise _BadRequest(line)
            headers.append((name, value.strip()))
        return RecordedRequest(parts[0], parts[1], parts[2], headers, peer=tuple(peer) if peer else None)

    async def _read_body(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: RecordedRequest
    ) -> bytes:
        te = ",".join(request.header_values("Transfer-Encoding")).lower()
        length = request.header("Content-Length")
        chunked = "chunked" in te
        if not chunked and not length:
            return b""
        expect = (request.header("Expect") or "").lower()
        if expect == "100-continue" and request.version == "HTTP/1.1":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        if not chunked:
            assert length is not None
            return await reader.readexactly(int(length))
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                # trailers end with an empty line
                while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                    name, _, value = line.decode("latin-1").partition(":")
                    request.trailers.append((name, value.strip()))
                return bytes(body)
            body += await reader.readexactly(size)
            await reader.readexactly(2)

    # -- routing ---------------------------------------------------------------------------

    async def _dispatch(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: RecordedRequest
    ) -> bool:
        """Answer one request; return False when the connection must be closed."""
        path = request.path
        close = self._wants_close(request)
        head_only = request.method == "HEAD"
        if path.startswith("/echo"):
            payload = {
                "server": self.name,
                "method": request.method,
                "target": request.target,
                "version": request.version,
                "headers": [[n, v] for n, v in request.headers],
                "body": request.body.decode("utf-8", "replace"),
                "body_length": len(request.body),
                "body_sha256": hashlib.sha256(request.body).hexdigest(),
                "peer": list(request.peer) if request.peer else None,
                "trailers": [[n, v] for n, v in request.trailers],
            }
            body = json.dumps(payload).encode()
            await self._send(writer, 200, body, [("Content-Type", "application/json")], close, head_only)
        elif path.startswith("/status/"):
            code = int(path.split("/")[2])
            body = b"" if code < 200 or code in (204, 304) else f"{self.name} {code}\n".encode()
            await self._send(writer, code, body, [], close, head_only, no_length=not body)
        elif path.startswith("/slow/"):
            await asyncio.sleep(int(path.split("/")[2]) / 1000)
            await self._send_default(writer, close, head_only)
        elif path == "/hang":
            await asyncio.Event().wait()  # until the peer or stop() ends us
            return False
        elif path == "/close":
            return False
        elif path == "/partial":
            writer.write(
                b"HTTP/1.1 200 OK\r\nServer-Name: "
                + self.name.encode()
                + b"\r\nContent-Length: 100\r\n\r\n"
                + b"0123456789"
            )
            await writer.drain()
            return False
        elif path == "/trailers":
            await self._send_trailers(writer, close, head_only)
        elif path.startswith("/chunked/"):
            await self._send_chunked(writer, int(path.split("/")[2]), close, head_only)
        elif path.startswith("/bytes/"):
            await self._send_bytes(writer, int(path.split("/")[2]), close, head_only)
        elif path == "/keepalive-header":
            body = f"{self.name}\n".encode()
            extra = [
                ("Content-Type", "text/plain"),
                ("Connection", "keep-alive"),
                ("Keep-Alive", "timeout=5"),
            ]
            await self._send(writer, 200, body, extra, False, head_only, connection_header=False)
            # the server *claims* keep-alive; still honour a close asked for by the request
        elif path.startswith("/set-cookie/"):
            _, _, cookie_name, cookie_value = path.split("/", 3)
            headers = [("Content-Type", "text/plain"), ("Set-Cookie", f"{cookie_name}={cookie_value}; Path=/")]
            await self._send(writer, 200, f"{self.name}\n".encode(), headers, close, head_only)
        elif path == "/ws" and (request.header("Upgrade") or "").lower() == "websocket":
            await self._websocket(reader, writer, request)
            return False
        else:
            await self._send_default(writer, close, head_only)
        return not close

    @staticmethod
    def _wants_close(request: RecordedRequest) -> bool:
        tokens = {t.strip().lower() for v in request.header_values("Connection") for t in v.split(",")}
        if request.version == "HTTP/1.0":
            return "keep-alive" not in tokens
        return "close" in tokens

    # -- response writing ------------------------------------------------------------------

    async def _send_default(self, writer: asyncio.StreamWriter, close: bool, head_only: bool) -> None:
        body = f"{self.name}\n".encode()
        await self._send(writer, 200, body, [("Content-Type", "text/plain")], close, head_only)

    async def _send_simple(self, writer: asyncio.StreamWriter, code: int, close: bool) -> None:
        await self._send(writer, code, f"{self.name} {code}\n".encode(), [], close, False)

    def _head(self, code: int, headers: list[tuple[str, str]]) -> bytes:
        lines = [f"HTTP/1.1 {code} {_REASONS.get(code, 'Status')}", f"Server-Name: {self.name}"]
        lines += [f"{n}: {v}" for n, v in headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        code: int,
        body: bytes,
        headers: list[tuple[str, str]],
        close: bool,
        head_only: bool,
        *,
        no_length: bool = False,
        connection_header: bool = True,
    ) -> None:
        headers = list(headers)
        if not no_length:
            headers.append(("Content-Length", str(len(body))))
        if close and connection_header:
            headers.append(("Connection", "close"))
        writer.write(self._head(code, headers) + (b"" if head_only else body))
        await writer.drain()

    async def _send_chunked(self, writer: asyncio.StreamWriter, n: int, close: bool, head_only: bool) -> None:
        headers = [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")]
        if close:
            headers.append(("Connection", "close"))
        writer.write(self._head(200, headers))
        if head_only:
            await writer.drain()
            return
        for i in range(n):
            data = f"chunk-{i}\n".encode()
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def _send_trailers(self, writer: asyncio.StreamWriter, close: bool, head_only: bool) -> None:
        headers = [("Content-Type", "application/grpc"), ("Transfer-Encoding", "chunked"), ("Trailer", "Grpc-Status")]
        if close:
            headers.append(("Connection", "close"))
        writer.write(self._head(200, headers))
        await writer.drain()
        if head_only:
            return
        for part in (b"part-1\n", b"part-2\n"):
            writer.write(b"%x\r\n%b\r\n" % (len(part), part))
            await writer.drain()
        writer.write(b"0\r\nX-Checksum: 42\r\nGrpc-Status: 0\r\nGrpc-Message: all good\r\nTrailer: x\r\n\r\n")
        await writer.drain()

    async def _send_bytes(self, writer: asyncio.StreamWriter, n: int, close: bool, head_only: bool) -> None:
        headers = [("Content-Type", "application/octet-stream"), ("Content-Length", str(n))]
        if close:
            headers.append(("Connection", "close"))
        writer.write(self._head(200, headers))
        if head_only:
            await writer.drain()
            return
        block = b"x" * 65536
        remaining = n
        while remaining > 0:
            piece = block if remaining >= len(block) else block[:remaining]
            writer.write(piece)
            remaining -= len(piece)
            await writer.drain()

    # -- WebSocket echo ----------------------------------------------------------------------

    async def _websocket(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: RecordedRequest
    ) -> None:
        key = request.header("Sec-WebSocket-Key") or ""
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept)]
        writer.write(self._head(101, headers))
        await writer.drain()
        while True:
            opcode, payload = await self._ws_read_frame(reader)
            if opcode == 0x8:  # close: answer with the same code, then end
                writer.write(self._ws_frame(0x8, payload[:2]))
                await writer.drain()
                return
            if opcode == 0x9:  # ping
                writer.write(self._ws_frame(0xA, payload))
            elif opcode in (0x1, 0x2):
                writer.write(self._ws_frame(opcode, payload))
            await writer.drain()

    @staticmethod
    async def _ws_read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
        """Read one complete message (fragments joined); returns (opcode, payload)."""
        message = bytearray()
        first_opcode = None
        while True:
            b0, b1 = await reader.readexactly(2)
            fin, opcode = b0 & 0x80, b0 & 0x0F
            masked, length = b1 & 0x80, b1 & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await reader.readexactly(8))
            mask = await reader.readexactly(4) if masked else b"\0\0\0\0"
            data = bytearray(await reader.readexactly(length))
            for i in range(length):
                data[i] ^= mask[i % 4]
            if opcode >= 0x8:  # control frames may be interleaved; return them at once
                return opcode, bytes(data)
            if first_opcode is None:
                first_opcode = opcode
            message += data
            if fin:
                return first_opcode, bytes(message)

    @staticmethod
    def _ws_frame(opcode: int, payload: bytes) -> bytes:
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 127, n)
        return header + payload


class TcpEchoServer(_ThreadedServer):
    """Echoes every byte back; after the client's FIN, finishes echoing and closes.

    `greeting`, when given, is sent first on every connection (to tell servers apart in
    `mode = "tcp"` balancing tests); `farewell` is sent after the client's FIN, before the
    server closes (to check a half-closed connection still carries data the other way).
    `.received` counts bytes received over all connections.
    """

    def __init__(
        self,
        name: str = "echo",
        port: int = 0,
        host: str = "127.0.0.1",
        greeting: bytes = b"",
        farewell: bytes = b"",
    ) -> None:
        super().__init__(name, port, host)
        self.greeting = greeting
        self.farewell = farewell
        self.received = 0
        self.eofs = 0

    def __enter__(self) -> TcpEchoServer:
        self.start()
        return self

    def start(self) -> TcpEchoServer:
        super().start()
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.greeting:
            writer.write(self.greeting)
            await writer.drain()
        while True:
            data = await reader.read(65536)
            if not data:
                break
            self.received += len(data)
            writer.write(data)
            await writer.drain()
        self.eofs += 1
        if self.farewell:
            writer.write(self.farewell)
        if writer.can_write_eof():
            writer.write_eof()
        await writer.drain()


class TlsTaggedBackend(TaggedBackend):
    """A TaggedBackend that speaks TLS: `certfile` is one PEM with the certificate chain and
    its key. `server_names` records the SNI name each handshake asked for (None: no SNI)."""

    def __init__(self, name: str, certfile: str, port: int = 0, host: str = "127.0.0.1") -> None:
        super().__init__(name, port, host)
        self.ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ssl_context.load_cert_chain(certfile)
        self.server_names: list[str | None] = []
        self.ssl_context.sni_callback = self._note_server_name

    def _note_server_name(self, _connection: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        self.server_names.append(name)

    def __enter__(self) -> TlsTaggedBackend:
        self.start()
        return self

    def start(self) -> TlsTaggedBackend:
        super().start()
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connection, self.host, self.port, limit=_MAX_HEAD, reuse_address=True, ssl=self.ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]
