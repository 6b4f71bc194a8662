"""A lab client: many long-lived keep-alive connections to the VIP, each sending a GET on a
beat, counting what breaks. Seed 001's disruption cases are measured with it.

    python -m lab.client ADDRESS PORT [CONNECTIONS] [INTERVAL_MS]

Commands on stdin, one per line:
    mark     print, as one JSON line, what happened since the previous mark, and start anew:
             {"requests", "ok", "failed" (answered but not 200, or not answered in time),
              "broken" (connections closed or reset under a client), "broken_on" (per L7
              node, the node that served the connection last), "open_on" (connections open
              now, per L7 node), "statuses"}
    quit     close every connection and exit (so does end of input)
A broken connection is opened again after a short pause, so the next period starts with
as many. An L7 node names itself in the `X-L7` response header (lab/l7*.toml).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections import Counter

REQUEST_TIMEOUT = 3.0
RECONNECT_PAUSE = 0.2


class Tally:
    def __init__(self) -> None:
        self.requests = 0
        self.ok = 0
        self.failed = 0
        self.broken = 0
        self.broken_on: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()


class Client:
    def __init__(self, address: str, port: int, interval: float) -> None:
        self.address = address
        self.port = port
        self.interval = interval
        self.tally = Tally()
        self.served_by: dict[int, str] = {}  # connection index -> the L7 node that answered it last
        self.open: set[int] = set()

    async def connection(self, index: int) -> None:
        await asyncio.sleep(random.random() * self.interval)  # spread the beats
        while True:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.address, self.port), REQUEST_TIMEOUT
                )
            except (OSError, TimeoutError):
                await asyncio.sleep(RECONNECT_PAUSE)
                continue
            self.open.add(index)
            try:
                await self._exchanges(index, reader, writer)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
                self.tally.broken += 1
                self.tally.broken_on[self.served_by.get(index, "?")] += 1
            finally:
                self.open.discard(index)
                self.served_by.pop(index, None)
                writer.close()
            await asyncio.sleep(RECONNECT_PAUSE)

    async def _exchanges(self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = 0
        while True:
            number += 1
            writer.write(f"GET /?c={index}&n={number} HTTP/1.1\r\nHost: www.example.org\r\n\r\n".encode())
            self.tally.requests += 1
            try:
                status, node = await asyncio.wait_for(self._response(reader), REQUEST_TIMEOUT)
            except TimeoutError:
                self.tally.failed += 1
                self.tally.statuses["timeout"] += 1
                raise
            self.tally.statuses[str(status)] += 1
            if status == 200:
                self.tally.ok += 1
            else:
                self.tally.failed += 1
            if node:
                self.served_by[index] = node
            await asyncio.sleep(self.interval * random.uniform(0.8, 1.2))

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, str]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        node = ""
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "x-l7":
                node = value.strip()
        if length:
            await reader.readexactly(length)
        return status, node

    def mark(self) -> str:
        tally, self.tally = self.tally, Tally()
        open_on = Counter(self.served_by.get(i, "?") for i in self.open)
        return json.dumps(
            {
                "requests": tally.requests,
                "ok": tally.ok,
                "failed": tally.failed,
                "broken": tally.broken,
                "broken_on": dict(tally.broken_on),
                "open_on": dict(open_on),
                "statuses": dict(tally.statuses),
            }
        )


async def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3, 4):
        print("usage: python -m lab.client ADDRESS PORT [CONNECTIONS] [INTERVAL_MS]", file=sys.stderr)
        return 2
    connections = int(argv[2]) if len(argv) > 2 else 200
    interval = (int(argv[3]) if len(argv) > 3 else 200) / 1000
    client = Client(argv[0], int(argv[1]), interval)
    tasks = [asyncio.create_task(client.connection(i)) for i in range(connections)]
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            command = line.strip()
            if not line or command == "quit":
                break
            if command == "mark":
                print(client.mark(), flush=True)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
