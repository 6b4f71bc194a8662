"""Many keep-alive clients at once, each sending a GET every `interval`, every request accounted for.

A failure test needs traffic the way users make it: hundreds of connections kept open,
requests in flight on all of them when a server dies. `KeepAliveLoad` runs them on an
asyncio loop in a thread; each client reuses its connection, as a browser does, and opens
a new one only after the proxy closed it (a close after a complete response is fine, any
other end is a failure). A request counts as failed if it gets anything but 200 within
`timeout`, or no complete response at all: nothing is silently lost.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass

__all__ = ["KeepAliveLoad", "Outcome"]


@dataclass(frozen=True)
class Outcome:
    client: int
    target: str  # unique per request: "PATH?c=CLIENT&n=N"
    sent_at: float  # time.monotonic()
    status: int  # 0: no complete response
    server: str  # the Server-Name tag, "" when none
    error: str  # "" when answered


class KeepAliveLoad:
    def __init__(
        self,
        port: int,
        clients: int = 200,
        interval: float = 0.2,
        timeout: float = 3.0,
        host: str = "127.0.0.1",
        path: str = "/",
    ) -> None:
        self.port = port
        self.clients = clients
        self.interval = interval
        self.timeout = timeout
        self.host = host
        self.path = path
        self.outcomes: list[Outcome] = []
        self.connections_opened = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- control (from the test's thread) --------------------------------------------------

    def start(self) -> KeepAliveLoad:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="keepalive-load", daemon=True)
        self._thread.start()
        return self

    def finish(self, timeout: float = 30) -> None:
        """Stop sending; wait for every request in flight to end (answered or timed out)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            assert not self._thread.is_alive(), "the load clients did not stop"

    def count(self) -> int:
        with self._lock:
            return len(self.outcomes)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def failures(self) -> list[Outcome]:
        return [o for o in self.snapshot() if o.status != 200]

    def served(self) -> Counter[str]:
        return Counter(o.server for o in self.snapshot() if o.status == 200)

    # -- the clients -----------------------------------------------------------------------

    async def _run(self) -> None:
        await asyncio.gather(*(self._client(i) for i in range(self.clients)))

    async def _client(self, index: int) -> None:
        await asyncio.sleep(random.random() * self.interval)  # spread the clients over one interval
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        n = 0
        while not self._stop.is_set():
            started = time.monotonic()
            if writer is None:
                try:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.timeout)
                    self.connections_opened += 1
                except (OSError, TimeoutError) as exc:
                    self._record(Outcome(index, "", started, 0, "", f"connect: {exc!r}"))
                    await asyncio.sleep(self.interval)
                    continue
            assert reader is not None
            n += 1
            target = f"{self.path}?c={index}&n={n}"
            request = f"GET {target} HTTP/1.1\r\nHost: load\r\nUser-Agent: keepalive-load\r\n\r\n"
            try:
                writer.write(request.encode())
                status, server, close = await asyncio.wait_for(_read_response(reader), self.timeout)
                self._record(Outcome(index, target, started, status, server, ""))
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                self._record(Outcome(index, target, started, 0, "", repr(exc) or type(exc).__name__))
                close = True
            if close:
                writer.close()
                writer = reader = None
            await asyncio.sleep(max(0.0, started + self.interval - time.monotonic()))
        if writer is not None:
            writer.close()

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, str, bool]:
    """(status, Server-Name, whether the proxy will close) of one response with a
    Content-Length body; raises on anything else."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    server = ""
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "server-name":
            server = value.strip()
        elif name == "connection" and "close" in value.lower():
            close = True
    if length:
        await reader.readexactly(length)
    return status, server, close
