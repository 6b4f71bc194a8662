"""`[bgp]` (SPEC.md "The tiers beyond one machine"): what `balancer check` accepts and
refuses, each problem as the full `FILE:LINE: message` text, and the default announcements."""

from __future__ import annotations

from textwrap import dedent

import pytest

from balancer.config import ConfigError
from balancer.server import parse_runnable

# The SPEC example's [bgp] table, verbatim.
BGP_TABLE = dedent(
    """\
    [bgp]                        # announce VIPs to routers (ECMP) through ExaBGP
    router_id = "10.0.3.11"
    local_as = 65001
    local_address = "10.0.3.11"
    hold_time = "6s"
    announce = ["10.100.0.1/32"] # default: every [[l4]] vip, or the frontends' addresses on an L7 node
      [[bgp.neighbor]]
      address = "10.0.3.1"
      peer_as = 65000
    """
)

L4_TABLE = dedent(
    """\
    [[l4]]
    name = "www"
    vip = "10.100.0.7"
    seed = 1
    [[l4.node]]
    name = "l7a"
    address = "10.0.3.21"
    """
)

FRONTEND = dedent(
    """\
    [[frontend]]
    name = "web"
    bind = ["10.100.0.9:80", "0.0.0.0:8080", "10.100.0.9:443"]
    default_backend = "app"
    [[backend]]
    name = "app"
    """
)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_runnable(text, "lb.toml")
    return [str(problem) for problem in caught.value.problems]


def bgp(*lines: str, neighbors: int = 1) -> str:
    """A [bgp] table with `lines` from line 5 on, then `neighbors` neighbors."""
    text = '[bgp]\nrouter_id = "10.0.3.11"\nlocal_as = 65001\nlocal_address = "10.0.3.11"\n'
    text += "".join(line + "\n" for line in lines)
    for number in range(neighbors):
        text += f'[[bgp.neighbor]]\naddress = "10.0.3.{1 + number}"\npeer_as = 65000\n'
    return text


def test_the_spec_example_with_only_l4_and_bgp_is_accepted() -> None:
    config = parse_runnable(L4_TABLE + BGP_TABLE, "lb.toml")
    assert config.bgp is not None
    assert config.bgp.hold_time == 6.0
    assert config.bgp.neighbor[0].port == 179 and not config.bgp.neighbor[0].passive
    assert config.bgp_announce() == ["10.100.0.1/32"]


def test_announce_defaults_to_the_l4_vips() -> None:
    config = parse_runnable(L4_TABLE + bgp(), "lb.toml")
    assert config.bgp_announce() == ["10.100.0.7/32"]


def test_announce_defaults_to_the_frontends_addresses_once_each() -> None:
    config = parse_runnable(FRONTEND + bgp(), "lb.toml")
    assert config.bgp_announce() == ["10.100.0.9/32"]


def test_nothing_to_announce_is_refused() -> None:
    text = '[[frontend]]\nname = "web"\nbind = [":80"]\ndefault_backend = "app"\n[[backend]]\nname = "app"\n'
    assert problems(text + bgp()) == [
        "lb.toml:7: [bgp] has nothing to announce: set announce, or give the node an [[l4]] vip"
        " or a frontend bound to an IPv4 address (a wildcard bind names no VIP)"
    ]


def test_a_bgp_table_without_neighbor_is_refused() -> None:
    assert problems(L4_TABLE + bgp(neighbors=0)) == ["lb.toml:8: [bgp] has no [[bgp.neighbor]] to announce to"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('hold_time = "2s"', "hold_time 2s: use 0 (no keepalives) or 3s to 65535s (RFC 4271)"),
        ('hold_time = "3500ms"', "hold_time 3.5s: BGP counts it in whole seconds"),
        ('announce = ["10.100.0.1/24"]', "announce '10.100.0.1/24' is not a prefix such as 10.100.0.1/32"),
        ('announce = ["fd00::1/128"]', "announce 'fd00::1/128': BGP announces IPv4 prefixes only"),
        ('announce = ["10.100.0.1/32", "10.100.0.1"]', "announce 10.100.0.1/32 is listed twice"),
    ],
)
def test_bad_values_are_refused_at_their_line(line: str, message: str) -> None:
    (problem,) = problems(L4_TABLE + bgp(line))
    assert problem.startswith("lb.toml:12: ")
    assert message in problem


@pytest.mark.parametrize(
    ("replace", "by", "message"),
    [
        ("local_as = 65001", "local_as = 0", "lb.toml:10: bgp.local_as must be at least 1, got 0"),
        ("local_as = 65001", "local_as = 4294967296", "lb.toml:10: bgp.local_as must be at most 4294967295"),
        (
            'router_id = "10.0.3.11"',
            'router_id = "r1"',
            "lb.toml:9: bgp.router_id: router_id 'r1' is not an IP address",
        ),
        ("peer_as = 65000", "peer_as = 65000\nport = 0", "lb.toml:15: port must be at least 1, got 0"),
    ],
)
def test_bad_numbers_and_addresses_are_refused(replace: str, by: str, message: str) -> None:
    (problem,) = problems(L4_TABLE + bgp().replace(replace, by))
    assert problem.startswith(message), problem


def test_a_neighbor_listed_twice_or_being_this_node_is_refused() -> None:
    text = L4_TABLE + bgp(neighbors=1) + '[[bgp.neighbor]]\naddress = "10.0.3.1"\npeer_as = 65000\n'
    text += '[[bgp.neighbor]]\naddress = "10.0.3.11"\npeer_as = 65000\n'
    assert problems(text) == [
        "lb.toml:16: neighbor 10.0.3.1 is listed twice (first at line 13)",
        "lb.toml:19: neighbor 10.0.3.11 is this node's own local_address",
    ]


def test_four_byte_as_numbers_are_accepted() -> None:
    config = parse_runnable(L4_TABLE + bgp().replace("local_as = 65001", "local_as = 4294967295"), "lb.toml")
    assert config.bgp is not None and config.bgp.local_as == 4294967295
