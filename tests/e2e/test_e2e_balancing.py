"""Load balancing as an operator checks it: tagged servers, curl, the order of Server-Name."""

from __future__ import annotations

from collections import Counter

import pytest
from tests.support import closed_port, free_port
from tests.support.config import server_blocks
from tests.support.curl import curl

pytestmark = pytest.mark.e2e


def frontend(site, backend: str = "web") -> str:
    return f"""
[[frontend]]
name = "www"
bind = ["127.0.0.1:{site.port}"]
mode = "http"
default_backend = "{backend}"
"""


def server_names(site, count: int) -> list[str]:
    """`count` requests, each on its own connection (curl opens one per URL with Connection: close)."""
    result = curl("-H", "Connection: close", *[site.url(f"/r{i}") for i in range(count)])
    finals = result.finals
    assert len(finals) == count, result.stderr
    assert all(status == 200 for status, _, _ in finals), [status for status, _, _ in finals]
    return [headers["server-name"] for _, headers, _ in finals]


@pytest.mark.parametrize("balance", ["roundrobin", "static-rr"])
def test_equal_weights_cycle_through_servers_in_order(site, tagged, balance):
    servers = tagged("s1", "s2", "s3")
    site.start(
        site.global_toml()
        + frontend(site)
        + f'[[backend]]\nname = "web"\nbalance = "{balance}"\n'
        + server_blocks(servers)
    )

    names = server_names(site, 9)

    assert names == ["s1", "s2", "s3"] * 3
    assert [len(s.requests) for s in servers] == [3, 3, 3]


@pytest.mark.parametrize("balance", ["roundrobin", "static-rr"])
def test_weights_two_to_one_give_two_to_one_shares(site, tagged, balance):
    heavy, light = tagged("heavy", "light")
    site.start(
        site.global_toml()
        + frontend(site)
        + f'[[backend]]\nname = "web"\nbalance = "{balance}"\n'
        + server_blocks([{"name": "heavy", "address": heavy.address, "weight": 2}])
        + server_blocks([{"name": "light", "address": light.address, "weight": 1}])
    )

    names = server_names(site, 30)

    assert Counter(names) == {"heavy": 20, "light": 10}
    # smooth weighting interleaves: never three of the heavy server in a row
    assert "heavy,heavy,heavy" not in ",".join(names)


def test_retries_and_redispatch_hide_a_dead_server(site, tagged):
    (alive,) = tagged("alive")
    dead_port = closed_port()
    site.start(
        site.global_toml()
        + frontend(site)
        + '[[backend]]\nname = "web"\nretries = 2\nredispatch = true\n'
        + 'timeouts = { connect = "1s", server = "5s", queue = "2s" }\n'
        + server_blocks([{"name": "dead", "address": f"127.0.0.1:{dead_port}"}, alive])
    )

    result = curl("-H", "Connection: close", *[site.url(f"/x{i}") for i in range(10)])

    assert [status for status, _, _ in result.finals] == [200] * 10
    assert {headers["server-name"] for _, headers, _ in result.finals} == {"alive"}
    assert len(alive.requests) == 10


def test_server_with_weight_zero_gets_nothing(site, tagged):
    used, unused = tagged("used", "unused")
    site.start(
        site.global_toml()
        + frontend(site)
        + '[[backend]]\nname = "web"\n'
        + server_blocks([used, {"name": "unused", "address": unused.address, "weight": 0}])
    )

    names = server_names(site, 6)

    assert names == ["used"] * 6
    assert unused.requests == []


def test_two_frontends_two_backends(site, tagged):
    a, b = tagged("a", "b")
    other_port = free_port()
    site.start(
        site.global_toml()
        + frontend(site, "ba")
        + f'[[frontend]]\nname = "other"\nbind = ["127.0.0.1:{other_port}"]\ndefault_backend = "bb"\n'
        + '[[backend]]\nname = "ba"\n'
        + server_blocks([a])
        + '[[backend]]\nname = "bb"\n'
        + server_blocks([b]),
        ports=[site.port, other_port],
    )

    assert curl(site.url("/")).headers["server-name"] == "a"
    assert curl(f"http://127.0.0.1:{other_port}/").headers["server-name"] == "b"
