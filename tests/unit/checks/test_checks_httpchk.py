"""HAProxy `option httpchk` as the importer writes it: any 2xx or 3xx passes, and the method
(OPTIONS, HEAD, GET) is the one sent. Against a real server socket."""

from __future__ import annotations

import asyncio

from balancer.checks.probes import http_check
from balancer.config.model import Check
from balancer.config.values import parse_address


async def _check_against(status: str, method: str, expect: str) -> tuple[tuple[bool, str], bytes]:
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await http_check(
            parse_address(f"127.0.0.1:{port}"), Check(type="http", method=method, expect=expect), 2.0
        )
    finally:
        server.close()
        await server.wait_closed()
    return result, seen[0]


def test_a_302_passes_an_httpchk_style_expect_and_options_is_sent() -> None:
    (ok, reason), head = asyncio.run(_check_against("302 Found", "OPTIONS", "2xx,3xx"))
    assert ok, reason
    assert head.startswith(b"OPTIONS / HTTP/1.1\r\n")


def test_a_500_fails_an_httpchk_style_expect() -> None:
    (ok, reason), head = asyncio.run(_check_against("500 Oops", "HEAD", "2xx,3xx"))
    assert not ok and reason == "http status 500 (expected 2xx,3xx)"
    assert head.startswith(b"HEAD / HTTP/1.1\r\n")
