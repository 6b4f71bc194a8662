"""SPEC's announce rule as the master applies it (Master.can_serve): which prefix an L7
node may announce, from the health and operator state of the servers behind the frontends
bound in that prefix, `disable_file`, and stopping."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from textwrap import dedent

from balancer.config import parse_config
from balancer.supervisor import Master

CONFIG = dedent(
    """\
    [global]
    disable_file = "{disable}"
    [[frontend]]
    name = "one"
    bind = ["10.100.0.1:80", "10.100.0.1:443"]
    default_backend = "a"
    [[frontend]]
    name = "two"
    bind = ["10.100.0.2:80"]
    default_backend = "b"
    [[frontend]]
    name = "local"
    bind = ["127.0.0.1:8080"]
    default_backend = "a"
    [[backend]]
    name = "a"
    [[backend.server]]
    name = "s1"
    address = "127.0.0.1:9001"
    [[backend.server]]
    name = "s2"
    address = "127.0.0.1:9002"
    [[backend]]
    name = "b"
    [[backend.server]]
    name = "s1"
    address = "127.0.0.1:9003"
    [bgp]
    router_id = "10.0.3.11"
    local_as = 65001
    local_address = "10.0.3.11"
    [[bgp.neighbor]]
    address = "10.0.3.1"
    peer_as = 65000
    """
)


@contextmanager
def master(tmp_path: Path, text: str = CONFIG) -> Iterator[Master]:
    """A master that adopted the config as its first generation would (its shared
    segment made and closed), without starting workers."""
    text = text.format(disable=tmp_path / "off")
    node = Master(tmp_path / "lb.toml", text, parse_config(text, "lb.toml"))
    segment = node.state.adopt(node.current.config, 1)
    try:
        yield node
    finally:
        segment.close()


def test_a_prefix_follows_the_servers_behind_its_own_frontends(tmp_path: Path) -> None:
    async def run() -> None:
        with master(tmp_path) as node:
            assert node.current.config.bgp_announce() == ["10.100.0.1/32", "10.100.0.2/32"]
            assert node.can_serve("10.100.0.1/32") == (True, "2/2 servers usable in backend a")
            node.state.update(("a", "s1"), admin_state="maint")
            assert node.can_serve("10.100.0.1/32") == (True, "1/2 servers usable in backend a")
            node.state.update(("a", "s2"), health="down")
            assert node.can_serve("10.100.0.1/32") == (False, "no usable server in a")
            assert node.can_serve("10.100.0.2/32") == (True, "1/1 servers usable in backend b")

    asyncio.run(run())


def test_disable_file_and_stopping_withdraw_everything(tmp_path: Path) -> None:
    async def run() -> None:
        with master(tmp_path) as node:
            (tmp_path / "off").touch()
            assert node.can_serve("10.100.0.2/32") == (False, f"disabled by {tmp_path / 'off'}")
            (tmp_path / "off").unlink()
            node.stopping = True
            assert node.can_serve("10.100.0.2/32") == (False, "stopping")

    asyncio.run(run())


def test_a_wildcard_bind_serves_any_prefix(tmp_path: Path) -> None:
    async def run() -> None:
        text = CONFIG.replace('bind = ["10.100.0.2:80"]', 'bind = [":81"]')
        text = text.replace('local_address = "10.0.3.11"', 'local_address = "10.0.3.11"\nannounce = ["10.100.0.0/24"]')
        with master(tmp_path, text) as node:
            node.state.update(("a", "s1"), health="down")
            node.state.update(("a", "s2"), health="down")
            # frontend one (bound in the prefix) has nothing, frontend two (wildcard) has a server
            assert node.can_serve("10.100.0.0/24") == (True, "1/1 servers usable in backend b")

    asyncio.run(run())
