"""A server that records every byte the balancer sends it, for the desync corpus.

What matters in request smuggling is not what the proxy meant to send but how a server
frames the bytes it received. So the recording keeps the raw bytes of each connection and
reads them afterwards two ways:
- `strict_targets`: llhttp (httptools), a strict parser like the balancer's own;
- `lax_targets`: a deliberately lax parser of the kind that makes smuggling possible
  (bare LF line ends, Transfer-Encoding "chunked" found anywhere in its value and winning
  over Content-Length, the first of several Content-Length values, tolerant chunk sizes).
A proxy that re-frames every request never lets the two disagree.

While serving, the server answers each request the lax parser finds with a short 200, so
the balancer sees an ordinary server.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httptools
from tests.support.backends import _ThreadedServer

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class LaxParseError(Exception):
    pass


@dataclass
class LaxRequest:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes


def _find_head_end(data: bytes, start: int) -> tuple[int, int] | None:
    """(end of the head, start of the body) for the first blank line at or after `start`."""
    candidates = [(i, i + 4) for i in [data.find(b"\r\n\r\n", start)] if i >= 0]
    candidates += [(i, i + 2) for i in [data.find(b"\n\n", start)] if i >= 0]
    return min(candidates) if candidates else None


def lax_parse(data: bytes) -> tuple[list[LaxRequest], int]:
    """The complete requests in `data` as a lax server frames them, and how many bytes they
    took. Raises LaxParseError on bytes even a lax server cannot read."""
    requests: list[LaxRequest] = []
    pos = 0
    while True:
        while data[pos : pos + 1] in (b"\r", b"\n"):
            pos += 1
        ends = _find_head_end(data, pos)
        if ends is None:
            return requests, pos
        head_end, body_start = ends
        lines = data[pos:head_end].decode("latin-1").replace("\r\n", "\n").split("\n")
        parts = lines[0].split()
        if len(parts) < 2:
            raise LaxParseError(f"request line {lines[0]!r}")
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon:
                headers.append((name.strip().lower(), value.strip()))
        te = ",".join(v for n, v in headers if n == "transfer-encoding").lower()
        lengths = [v for n, v in headers if n == "content-length"]
        if "chunked" in te:
            body, end = _lax_chunked(data, body_start)
            if end < 0:
                return requests, pos
        else:
            size = 0
            if lengths:
                digits = lengths[0].split(",")[0].strip().lstrip("+")
                try:
                    size = int(digits, 0) if digits.lower().startswith("0x") else int(digits)
                except ValueError:
                    raise LaxParseError(f"Content-Length {lengths[0]!r}") from None
            if len(data) < body_start + size:
                return requests, pos
            body, end = data[body_start : body_start + size], body_start + size
        requests.append(LaxRequest(parts[0], parts[1], headers, body))
        pos = end


def _lax_chunked(data: bytes, pos: int) -> tuple[bytes, int]:
    """The body of a chunked message starting at `pos` and where it ends; -1: incomplete."""
    body = bytearray()
    while True:
        line_end = data.find(b"\n", pos)
        if line_end < 0:
            return b"", -1
        size_text = data[pos:line_end].split(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise LaxParseError(f"chunk size {size_text!r}") from None
        pos = line_end + 1
        if size == 0:
            while True:  # trailer lines up to the blank line
                line_end = data.find(b"\n", pos)
                if line_end < 0:
                    return b"", -1
                line = data[pos:line_end].strip()
                pos = line_end + 1
                if not line:
                    return bytes(body), pos
        if len(data) < pos + size:
            return b"", -1
        body += data[pos : pos + size]
        pos += size
        while data[pos : pos + 1] in (b"\r", b"\n") and pos < len(data):
            pos += 1
            if data[pos - 1 : pos] == b"\n":
                break


class _StrictCollector:
    def __init__(self) -> None:
        self.targets: list[str] = []
        self._url = b""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_message_complete(self) -> None:
        self.targets.append(self._url.decode("latin-1"))
        self._url = b""


def strict_targets(data: bytes) -> tuple[list[str], str | None]:
    """The targets of the complete requests llhttp finds in `data`, and its error if any."""
    collector = _StrictCollector()
    parser = httptools.HttpRequestParser(collector)
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        pass
    except httptools.HttpParserError as exc:
        return collector.targets, str(exc)
    return collector.targets, None


class RecordingServer(_ThreadedServer):
    """See the module doc. `raw` holds the bytes of each connection, in accept order."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.raw: list[bytearray] = []

    def __enter__(self) -> RecordingServer:
        self.start()
        return self

    def start(self) -> RecordingServer:
        super().start()
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received = bytearray()
        self.raw.append(received)
        answered = 0
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            received += chunk
            try:
                requests, _ = lax_parse(bytes(received))
            except LaxParseError:
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            for _ in requests[answered:]:
                writer.write(OK)
            answered = len(requests)
            await writer.drain()

    def lax_targets(self) -> list[str]:
        targets: list[str] = []
        for data in self.raw:
            try:
                requests, _ = lax_parse(bytes(data))
            except LaxParseError as exc:
                targets.append(f"<unreadable: {exc}>")
                continue
            targets += [r.target for r in requests]
        return targets

    def strict_targets(self) -> list[str]:
        targets: list[str] = []
        for data in self.raw:
            found, error = strict_targets(bytes(data))
            targets += found
            if error is not None:
                targets.append(f"<llhttp error: {error}>")
        return targets

    def summary(self) -> dict[str, Any]:
        return {"raw": [bytes(b) for b in self.raw], "lax": self.lax_targets(), "strict": self.strict_targets()}
