"""Oversized request heads to the master's control surfaces (the admin API and the stats
page) get a status, as the proxy's own frontends do: 414 for a request line over 8 KiB, 431
for a head over 64 KiB (issue 13: they were closed with no answer at all). A head just under
the limit is served."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.support import TaggedBackend, free_port, parse_responses, raw_request, wait_until
from tests.support.config import server_blocks
from tests.support.process import BalancerProcess

pytestmark = pytest.mark.e2e


@dataclass
class Surfaces:
    admin_port: int
    stats_port: int


@pytest.fixture(scope="module")
def surfaces(module_dir: Path) -> Iterator[Surfaces]:
    with contextlib.ExitStack() as stack:
        web = [stack.enter_context(TaggedBackend("s1"))]
        www_port, admin_port, stats_port = free_port(), free_port(), free_port()
        config = (
            f'[global]\ngrace = "1s"\nlog = "none"\n'
            f'\n[admin]\nbind = "127.0.0.1:{admin_port}"\n'
            f'\n[stats]\nbind = "127.0.0.1:{stats_port}"\n'
            f'\n[[frontend]]\nname = "www"\nbind = ["127.0.0.1:{www_port}"]\ndefault_backend = "web"\n'
            '\n[[backend]]\nname = "web"\n' + server_blocks(web)
        )
        path = module_dir / "balancer.toml"
        path.write_text(config)
        process = stack.enter_context(BalancerProcess(path, log_dir=module_dir))
        for port in (www_port, admin_port, stats_port):
            process.wait_ready(port, timeout=15)
        wait_until(lambda: "balancer running" in process.output(), timeout=15, what="the workers to serve")
        yield Surfaces(admin_port, stats_port)


PATHS = {"admin": "/api/servers", "stats": "/stats/api"}


def port_of(surfaces: Surfaces, surface: str) -> int:
    return surfaces.admin_port if surface == "admin" else surfaces.stats_port


def status_of(port: int, head: bytes) -> int:
    data = raw_request(port, head, timeout=10)
    assert data, "the connection was closed without an answer"
    responses = parse_responses(data)
    assert len(responses) == 1, data[:200]
    return responses[0][0]


def padding_headers(total: int) -> bytes:
    """Header lines of about 1 KiB each, `total` bytes in all."""
    line = b"X-Pad: " + b"a" * 1015 + b"\r\n"
    return line * (total // len(line))


@pytest.mark.parametrize("surface", ["admin", "stats"])
def test_a_head_over_64_kib_gets_431(surfaces, surface):
    port = port_of(surfaces, surface)
    request_line = f"GET {PATHS[surface]} HTTP/1.1\r\nHost: lb\r\n".encode()

    many_lines = request_line + padding_headers(70 * 1024) + b"\r\n"
    one_long_line = request_line + b"X-Big: " + b"b" * (70 * 1024) + b"\r\n\r\n"

    assert status_of(port, many_lines) == 431
    assert status_of(port, one_long_line) == 431


@pytest.mark.parametrize("surface", ["admin", "stats"])
def test_a_request_line_over_8_kib_gets_414(surfaces, surface):
    port = port_of(surfaces, surface)

    for length in (9 * 1024, 70 * 1024):
        head = f"GET {PATHS[surface]}?q={'c' * length} HTTP/1.1\r\nHost: lb\r\n\r\n".encode()
        assert status_of(port, head) == 414, length


@pytest.mark.parametrize("surface", ["admin", "stats"])
def test_a_head_under_the_limits_is_served(surfaces, surface):
    port = port_of(surfaces, surface)
    head = f"GET {PATHS[surface]}?q={'d' * 7000} HTTP/1.1\r\nHost: lb\r\n".encode()

    assert status_of(port, head + padding_headers(56 * 1024) + b"\r\n") == 200
