"""Frontend maxconn: connections accepted over the limit wait parked, unread, then are served.

A worker cannot refuse a connection it has accepted (net.gate); one over the limit must not
be read until there is room. The server counts its own concurrency (TaggedBackend.most_busy).
"""

from __future__ import annotations

import asyncio

from tests.integration.aclient import wait_until
from tests.integration.configs import frontend_port, make_config


async def _read_status(reader: asyncio.StreamReader) -> int:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return int(head.split(b" ", 2)[1])


def test_a_parked_connection_keeps_what_came_with_its_proxy_header(run_balancer, backends):
    """With accept_proxy the session is set up once the PROXY header is read, and the
    request that came in the same packet is handed over then: to the parked connection,
    not to the session, while the frontend is full."""
    (s1,) = backends("s1")
    config = make_config([s1], frontend={"maxconn": 1, "accept_proxy": True})
    header = b"PROXY TCP4 10.0.0.%d 10.0.0.254 4000 80\r\n"

    async def scenario(balancer):
        port = frontend_port(balancer)
        (a_reader, a_writer), (b_reader, b_writer) = [await asyncio.open_connection("127.0.0.1", port) for _ in "ab"]
        a_writer.write(header % 1 + b"GET /slow/300 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await wait_until(lambda: s1.busy == 1, timeout=5)
        b_writer.write(header % 2 + b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        statuses = [await _read_status(a_reader), await _read_status(b_reader)]
        a_writer.close()
        b_writer.close()
        return statuses

    assert run_balancer(config, scenario) == [200, 200]
    assert s1.most_busy == 1, f"the server saw {s1.most_busy} requests at once with frontend maxconn = 1"
    assert [r.path for r in s1.requests][-2:] == ["/slow/300", "/b"]
