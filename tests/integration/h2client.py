"""A small HTTP/2 client on asyncio streams (h2c, prior knowledge), frame by frame when asked.

Integration scenarios run on the balancer's own loop, so everything here is a coroutine
with a deadline. The h2 library (client side) frames and checks what the proxy sends; a
scenario can also write raw frames (`send_raw`) to play a misbehaving client.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack

DEFAULT_TIMEOUT = 5.0


def frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """One raw HTTP/2 frame (RFC 9113 4.1), built here, not by the code under test."""
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream_id) + payload


def rapid_reset_bytes(first_stream: int, count: int, path: bytes = b"/") -> bytes:
    """`count` streams from `first_stream` on, each a HEADERS (END_STREAM|END_HEADERS)
    followed at once by its RST_STREAM (CANCEL): the CVE-2023-44487 pattern."""
    block = hpack.Encoder().encode(
        [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"lb.example"), (b":path", path)]
    )
    cancel = struct.pack(">I", 8)
    return b"".join(
        frame(0x1, 0x5, first_stream + 2 * i, block) + frame(0x3, 0, first_stream + 2 * i, cancel) for i in range(count)
    )


@dataclass
class GoAway:
    last_stream_id: int
    error_code: int


@dataclass
class H2Response:
    stream_id: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None  # the RST_STREAM error code, if the stream was reset
    trailers: list[tuple[bytes, bytes]] | None = None  # a HEADERS frame after the DATA

    @property
    def status(self) -> int:
        return int(dict(self.headers)[b":status"])

    def header(self, name: str) -> str | None:
        values = [v.decode() for k, v in self.headers if k == name.encode()]
        return ", ".join(values) if values else None


class H2Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, window: int) -> None:
        self.reader = reader
        self.writer = writer
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.window = window
        self.responses: dict[int, H2Response] = {}
        self.events: list[h2.events.Event] = []
        self.goaway: GoAway | None = None
        self.pending = b""  # bytes of a frame not all read yet
        self.closed = False
        self.auto_ack = True  # hand window back as response DATA comes

    @classmethod
    async def connect(cls, port: int, window: int = 1 << 20, preamble: bytes = b"") -> H2Client:
        """`preamble`: bytes sent before the connection preface (a PROXY header)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if preamble:
            writer.write(preamble)
        client = cls(reader, writer, window)
        client.conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: min(window, 65535)}
        )
        client.conn.initiate_connection()
        if window > 65535:
            client.conn.increment_flow_control_window(window - 65535)
        await client.flush()
        return client

    async def __aenter__(self) -> H2Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)
            with contextlib.suppress(ConnectionError):
                await self.writer.drain()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    def headers_for(self, path: str, method: str = "GET", extra: list[tuple[str, str]] | None = None) -> list[Any]:
        return [
            (b":method", method.encode()),
            (b":scheme", b"http"),
            (b":authority", b"lb.example"),
            (b":path", path.encode()),
            *[(k.encode(), v.encode()) for k, v in (extra or [])],
        ]

    async def start(
        self,
        path: str,
        method: str = "GET",
        extra: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        end: bool = True,
    ) -> int:
        """Open a stream; send `body` (within the windows, as the proxy opens them) unless None."""
        stream_id = self.conn.get_next_available_stream_id()
        self.responses[stream_id] = H2Response(stream_id)
        self.conn.send_headers(stream_id, self.headers_for(path, method, extra), end_stream=end and body is None)
        await self.flush()
        if body is not None:
            await self.send_body(stream_id, body, end)
        return stream_id

    async def send_body(self, stream_id: int, body: bytes, end: bool = True, timeout: float = DEFAULT_TIMEOUT) -> None:
        view = memoryview(body)
        deadline = asyncio.get_running_loop().time() + timeout
        while view:
            window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            if window <= 0:
                await self.read_some(deadline)
                continue
            self.conn.send_data(stream_id, bytes(view[:window]))
            view = view[window:]
            await self.flush()
        if end:
            self.conn.end_stream(stream_id)
            await self.flush()

    async def read_some(self, deadline: float) -> None:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise TimeoutError("no answer from the proxy in time")
        data = await asyncio.wait_for(self.reader.read(65536), remaining)
        if not data:
            self.closed = True
            raise ConnectionError("the proxy closed the connection")
        self.receive(data)
        await self.flush()

    def receive(self, data: bytes) -> None:
        # GOAWAY is taken out here: the h2 library, told of one, refuses the frames of the
        # streams still in flight that a graceful GOAWAY lets finish.
        data = self.pending + data
        kept = []
        offset = 0
        while len(data) - offset >= 9:
            length = int.from_bytes(data[offset : offset + 3], "big")
            end = offset + 9 + length
            if end > len(data):
                break
            if data[offset + 3] == 0x7:
                payload = data[offset + 9 : end]
                self.goaway = GoAway(
                    int.from_bytes(payload[:4], "big") & 0x7FFFFFFF, int.from_bytes(payload[4:8], "big")
                )
            else:
                kept.append(data[offset:end])
            offset = end
        self.pending = data[offset:]
        for event in self.conn.receive_data(b"".join(kept)):
            self.events.append(event)
            if isinstance(event, h2.events.ResponseReceived):
                response = self.responses.setdefault(event.stream_id, H2Response(event.stream_id))
                response.headers.extend(event.headers or [])
            elif isinstance(event, h2.events.TrailersReceived):
                response = self.responses.setdefault(event.stream_id, H2Response(event.stream_id))
                response.trailers = list(event.headers or [])
            elif isinstance(event, h2.events.DataReceived):
                response = self.responses.setdefault(event.stream_id, H2Response(event.stream_id))
                response.body += event.data or b""
                if self.auto_ack and event.flow_controlled_length:
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.responses.setdefault(event.stream_id, H2Response(event.stream_id)).ended = True
            elif isinstance(event, h2.events.StreamReset):
                self.responses.setdefault(event.stream_id, H2Response(event.stream_id)).reset = event.error_code

    async def wait(self, *stream_ids: int, timeout: float = DEFAULT_TIMEOUT) -> list[H2Response]:
        """The responses of `stream_ids`, once each has ended or been reset."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not all(self.responses[s].ended or self.responses[s].reset is not None for s in stream_ids):
            await self.read_some(deadline)
        return [self.responses[s] for s in stream_ids]

    async def request(self, path: str, method: str = "GET", **kwargs: Any) -> H2Response:
        stream_id = await self.start(path, method, **kwargs)
        return (await self.wait(stream_id))[0]

    async def read_until_closed(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Read (and answer) until the proxy closes the connection."""
        deadline = asyncio.get_running_loop().time() + timeout
        with contextlib.suppress(ConnectionError, h2.exceptions.ProtocolError):
            while not self.closed:
                await self.read_some(deadline)
