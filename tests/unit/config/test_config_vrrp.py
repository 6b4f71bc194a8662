"""`[vrrp]` (SPEC.md "The tiers beyond one machine"): what `balancer check` accepts and
refuses, each problem as the full `FILE:LINE: message` text."""

from __future__ import annotations

from textwrap import dedent

import pytest

from balancer.config import ConfigError
from balancer.server import parse_runnable

# The SPEC example's [vrrp] table, verbatim, after a frontend bound on its VIP.
FRONTEND = dedent(
    """\
    [[frontend]]
    name = "web"
    bind = ["10.0.3.100:80"]
    default_backend = "app"
    [[backend]]
    name = "app"
    """
)
VRRP_TABLE = dedent(
    """\
    [vrrp]                       # an active/passive pair through keepalived
    interface = "eth0"
    virtual_router_id = 51
    priority = 150               # the higher holds the VIPs
    advert_interval = "1s"
    vips = ["10.0.3.100/24"]
    unicast_peers = []           # default: multicast
    preempt = true
    """
)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_runnable(text, "lb.toml")
    return [str(problem) for problem in caught.value.problems]


def vrrp(*lines: str) -> str:
    """The frontend (lines 1-6), then a [vrrp] table whose extra `lines` start at line 10
    (virtual_router_id 7 after them unless they set it)."""
    head = '[vrrp]\ninterface = "e0"\nvips = ["10.0.3.100/24"]\n'
    tail = "" if any(line.startswith("virtual_router_id") for line in lines) else "virtual_router_id = 7\n"
    return FRONTEND + head + "".join(line + "\n" for line in lines) + tail


def test_the_spec_example_passes_with_frontends() -> None:
    config = parse_runnable(FRONTEND + VRRP_TABLE, "lb.toml")
    assert config.vrrp is not None
    assert config.vrrp.vips == ["10.0.3.100/24"]
    assert config.vrrp.addresses() == ["10.0.3.100"]
    assert config.vrrp.advert_interval == 1.0 and config.vrrp.preempt and config.vrrp.unicast_peers == []


def test_defaults() -> None:
    config = parse_runnable(vrrp(), "lb.toml")
    assert config.vrrp is not None
    assert (config.vrrp.priority, config.vrrp.advert_interval, config.vrrp.preempt) == (100, 1.0, True)
    assert config.vrrp.track_interval == 0.25


def test_sub_second_adverts_in_hundredths() -> None:
    config = parse_runnable(vrrp('advert_interval = "200ms"'), "lb.toml")
    assert config.vrrp is not None and config.vrrp.advert_interval == pytest.approx(0.2)
    assert problems(vrrp('advert_interval = "15ms"')) == [
        "lb.toml:10: vrrp.advert_interval: advert_interval 0.015s: VRRPv3 counts it in hundredths of a second,"
        " 10ms to 40.95s"
    ]
    assert problems(vrrp('advert_interval = "41s"'))[0].startswith("lb.toml:10: vrrp.advert_interval:")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("virtual_router_id = 256", "vrrp.virtual_router_id must be at most 255, got 256"),
        ("priority = 255", "vrrp.priority must be at most 254, got 255"),
        ("priority = 0", "vrrp.priority must be at least 1, got 0"),
        ('track_interval = "2s"', "vrrp.track_interval: track_interval 2s: at most 1s"),
        ('unicast_peers = ["10.0.3.12", "10.0.3.12"]', "vrrp.unicast_peers: unicast peer 10.0.3.12 is listed twice"),
        ('unicast_peers = ["fe80::1"]', "vrrp.unicast_peers: unicast peer 'fe80::1': [vrrp] is IPv4 only"),
        ("unknown = 1", "unknown key 'unknown' in [vrrp]"),
    ],
)
def test_refusals_name_the_line(line: str, message: str) -> None:
    found = problems(vrrp(line))
    assert len(found) == 1 and found[0].startswith("lb.toml:10: ") and message in found[0], found


def test_vips_need_a_prefix_once_and_ipv4() -> None:
    assert problems(FRONTEND + '[vrrp]\ninterface = "e0"\nvirtual_router_id = 7\nvips = ["10.0.3.100/33"]\n') == [
        "lb.toml:10: vrrp.vips: vip '10.0.3.100/33' is not an address with its prefix, such as 10.0.3.100/24"
    ]
    text = FRONTEND + '[vrrp]\ninterface = "e0"\nvirtual_router_id = 7\nvips = ["10.0.3.100/24", "10.0.3.100/32"]\n'
    assert problems(text) == ["lb.toml:10: vrrp.vips: vip 10.0.3.100 is listed twice"]
    assert problems(FRONTEND + '[vrrp]\ninterface = "e0"\nvirtual_router_id = 7\nvips = []\n')[0].startswith(
        "lb.toml:10: vrrp.vips"
    )


def test_unicast_src_goes_with_peers_and_is_not_a_vip() -> None:
    assert problems(vrrp('unicast_src = "10.0.3.11"')) == [
        "lb.toml:10: [vrrp] unicast_src needs unicast_peers (adverts are multicast without)"
    ]
    assert problems(vrrp('unicast_peers = ["10.0.3.100"]', 'unicast_src = "10.0.3.11"')) == [
        "lb.toml:9: vip 10.0.3.100 is a node's own address: a VIP moves, a node's address does not"
    ]
    assert problems(vrrp('unicast_peers = ["10.0.3.11"]', 'unicast_src = "10.0.3.11"')) == [
        "lb.toml:10: unicast peer 10.0.3.11 is this node's unicast_src"
    ]
