"""`[[l4]]` and `[dsr]` (SPEC.md "The tiers beyond one machine"): what `balancer check`
accepts and what it refuses, each problem as the full `FILE:LINE: message` text."""

from __future__ import annotations

from textwrap import dedent

import pytest

from balancer.config import ConfigError, parse_config
from balancer.server import parse_runnable

# The SPEC example's [[l4]] and [dsr] tables, verbatim apart from a second node.
L4_FILE = dedent(
    """\
    [[l4]]                       # an L4 node: kernel consistent hashing of flows to L7 nodes
    name = "www"
    vip = "10.100.0.1"
    ports = [80, 443]            # TCP ports balanced ([] = every port)
    protocol = "tcp"             # or "udp"
    method = "maglev"            # or "source", "roundrobin", "random"
    table_size = 65537           # maglev: a prime > 100 x nodes
    seed = 24301                 # the hash seed; the same on every L4 node of the tier
    forward = "vxlan"
    check = { type = "tcp", port = 80, interval = "1s", rise = 2, fall = 2, timeout = "500ms" }
      [[l4.node]]
      name = "l7a"
      address = "10.0.3.21"
      weight = 100

      [[l4.node]]
      name = "l7b"
      address = "10.0.3.22"
      vni = 22
    """
)

DSR_FILE = dedent(
    """\
    [dsr]                        # an L7 node behind an L4 tier: receive VIP traffic, answer directly
    vips = ["10.100.0.1"]        # put on loopback, never answered for in ARP
    tunnel = { type = "vxlan", local = "10.0.3.21" }   # decapsulation endpoint ("direct": none)
    """
)


def problems(text: str) -> list[str]:
    """Everything `balancer check` prints for `text` saved as lb.toml."""
    with pytest.raises(ConfigError) as caught:
        parse_runnable(text, "lb.toml")
    return [str(problem) for problem in caught.value.problems]


def l4_table(*lines: str, nodes: int = 2) -> str:
    """An [[l4]] table with `lines` after its name (line 2 on) and `nodes` nodes after them."""
    text = '[[l4]]\nname = "www"\n' + "".join(line + "\n" for line in lines)
    for number in range(nodes):
        text += f'[[l4.node]]\nname = "n{number}"\naddress = "10.0.3.{21 + number}"\n'
    return text


def test_a_file_with_only_an_l4_table_passes_check() -> None:
    config = parse_runnable(L4_FILE, "l4.toml")

    (table,) = config.l4
    assert (table.vip, table.ports, table.seed, table.table_size) == ("10.100.0.1", [80, 443], 24301, 65537)
    assert [(node.name, node.tunnel_vni()) for node in table.node] == [("l7a", 21 + 256 * 3), ("l7b", 22)]
    assert table.check is not None and table.check_port() == 80 and table.check.timeout == 0.5


def test_a_file_with_only_a_dsr_table_passes_check() -> None:
    config = parse_runnable(DSR_FILE, "l7.toml")

    assert config.dsr is not None
    assert (config.dsr.vips, config.dsr.tunnel.type, config.dsr.tunnel.local) == (
        ["10.100.0.1"],
        "vxlan",
        "10.0.3.21",
    )


def test_defaults_of_an_l4_table() -> None:
    table = parse_config(l4_table('vip = "10.100.0.1"', "seed = 7")).l4[0]

    assert (table.protocol, table.method, table.forward, table.ports, table.check) == (
        "tcp",
        "maglev",
        "vxlan",
        [],
        None,
    )
    assert table.check_port() == 80


def test_roundrobin_and_random_need_no_seed_nor_a_prime() -> None:
    for method in ("roundrobin", "random"):
        table = parse_config(l4_table('vip = "10.100.0.1"', f'method = "{method}"', "table_size = 100")).l4[0]
        assert table.seed is None


def test_a_vip_that_is_not_an_address() -> None:
    assert problems(l4_table('vip = "www.example.com"', "seed = 1")) == [
        "lb.toml:3: vip: vip 'www.example.com' is not an IP address"
    ]
    assert problems(l4_table('vip = "10.100.0.0/24"', "seed = 1")) == [
        "lb.toml:3: vip: vip '10.100.0.0/24' is not an IP address"
    ]
    assert problems(l4_table('vip = "2001:db8::1"', "seed = 1")) == [
        "lb.toml:3: vip: vip '2001:db8::1': the L4 tier is IPv4 only in this version"
    ]


def test_a_node_address_that_is_not_an_address() -> None:
    text = '[[l4]]\nname = "www"\nvip = "10.100.0.1"\nseed = 1\n[[l4.node]]\nname = "a"\naddress = "10.0.3.21:80"\n'
    assert problems(text) == ["lb.toml:7: address: address '10.0.3.21:80' is not an IP address"]


def test_a_table_size_that_is_not_a_prime() -> None:
    assert problems(l4_table('vip = "10.100.0.1"', "seed = 1", "table_size = 65536")) == [
        "lb.toml:5: table_size 65536 is not a prime"
    ]
    assert problems(l4_table('vip = "10.100.0.1"', "seed = 1", 'method = "source"', "table_size = 1001")) == [
        "lb.toml:6: table_size 1001 is not a prime"
    ]


def test_a_maglev_table_needs_more_than_100_slots_per_node() -> None:
    assert problems(l4_table('vip = "10.100.0.1"', "seed = 1", "table_size = 199")) == [
        "lb.toml:5: table_size 199 is too small for 2 nodes: maglev needs a prime above 100 x nodes (200)"
    ]
    parse_config(l4_table('vip = "10.100.0.1"', "seed = 1", "table_size = 211"))
    # source hashes into the same kind of table but only needs a prime.
    parse_config(l4_table('vip = "10.100.0.1"', "seed = 1", 'method = "source"', "table_size = 199"))


def test_a_seed_missing_for_a_hashing_method() -> None:
    assert problems(l4_table('vip = "10.100.0.1"')) == [
        "lb.toml:1: [[l4]] 'www': method \"maglev\" needs a seed, the same on every L4 node of the tier"
        " (without one the kernel picks a random seed and the nodes disagree)"
    ]
    assert problems(l4_table('vip = "10.100.0.1"', 'method = "source"')) == [
        "lb.toml:4: [[l4]] 'www': method \"source\" needs a seed, the same on every L4 node of the tier"
        " (without one the kernel picks a random seed and the nodes disagree)"
    ]


def test_bad_ports() -> None:
    assert problems(l4_table('vip = "10.100.0.1"', "seed = 1", "ports = [80, 0]")) == [
        "lb.toml:5: ports: port 0 is out of range (1 to 65535)"
    ]
    assert problems(l4_table('vip = "10.100.0.1"', "seed = 1", "ports = [80, 65536]")) == [
        "lb.toml:5: ports: port 65536 is out of range (1 to 65535)"
    ]
    assert problems(l4_table('vip = "10.100.0.1"', "seed = 1", "ports = [80, 443, 80]")) == [
        "lb.toml:5: ports: port 80 is listed twice"
    ]
    assert problems(l4_table('vip = "10.100.0.1"', "seed = 1", 'ports = ["http"]')) == [
        "lb.toml:5: ports must be an integer, got 'http'"
    ]


def test_a_node_listed_twice() -> None:
    text = dedent(
        """\
        [[l4]]
        name = "www"
        vip = "10.100.0.1"
        seed = 1
          [[l4.node]]
          name = "a"
          address = "10.0.3.21"
          [[l4.node]]
          name = "a"
          address = "10.0.3.21"
        """
    )
    assert problems(text) == [
        "lb.toml:9: duplicate node name 'a' in [[l4]] 'www' (first defined at line 6)",
        "lb.toml:10: node address 10.0.3.21 listed twice in [[l4]] 'www' (first at line 7)",
    ]


def test_two_nodes_with_the_same_vni() -> None:
    # n0 at 10.0.3.21 has VNI 3 * 256 + 21 = 789 (the low 16 bits of its address).
    text = l4_table('vip = "10.100.0.1"', "seed = 1", nodes=1) + '[[l4.node]]\nname = "b"\naddress = "10.0.9.21"\n'
    assert parse_config(text).l4[0].node[1].tunnel_vni() == 9 * 256 + 21
    assert problems(text + "vni = 789\n") == [
        "lb.toml:11: node 'b' has VXLAN VNI 789, already used by the node at line 5; set vni"
    ]
    # Same low 16 bits in two subnets: the derived VNIs clash, at the second address.
    text = l4_table('vip = "10.100.0.1"', "seed = 1", nodes=1) + '[[l4.node]]\nname = "b"\naddress = "10.1.3.21"\n'
    assert problems(text) == ["lb.toml:10: node 'b' has VXLAN VNI 789, already used by the node at line 5; set vni"]
    parse_config(text.replace('forward = "vxlan"', "").replace("seed = 1", 'seed = 1\nforward = "direct"'))


def test_a_table_without_nodes_and_a_node_holding_the_vip() -> None:
    assert problems(l4_table('vip = "10.100.0.1"', "seed = 1", nodes=0)) == [
        "lb.toml:1: [[l4]] 'www' has no [[l4.node]] to send flows to"
    ]
    assert problems(l4_table('vip = "10.0.3.21"', "seed = 1", nodes=1)) == [
        "lb.toml:7: node 'n0' has the VIP 10.0.3.21 as its address"
    ]


def test_two_tables_balancing_the_same_vip_and_port() -> None:
    first = l4_table('vip = "10.100.0.1"', "seed = 1", "ports = [80, 443]", nodes=1)
    second = l4_table('vip = "10.100.0.1"', "seed = 1", "ports = [443]", nodes=1).replace('"www"', '"other"')
    assert problems(first + second) == [
        "lb.toml:11: [[l4]] 'other' balances 10.100.0.1 tcp port 443 like [[l4]] 'www' (line 1)"
    ]
    every_port = l4_table('vip = "10.100.0.1"', "seed = 1", nodes=1).replace('"www"', '"other"')
    assert problems(first + every_port) == [
        "lb.toml:11: [[l4]] 'other' balances 10.100.0.1 tcp every port like [[l4]] 'www' (line 1)"
    ]
    # Another protocol, or other ports, is another table.
    parse_config(first + second.replace("ports = [443]", 'protocol = "udp"\nports = [443]'))
    parse_config(first + second.replace("ports = [443]", "ports = [8443]"))


def test_choices_and_unknown_keys() -> None:
    assert problems(l4_table('vip = "10.100.0.1"', "seed = 1", 'method = "wlc"')) == [
        "lb.toml:5: method must be one of 'maglev', 'source', 'roundrobin', 'random', got 'wlc'"
    ]
    assert problems(l4_table('vip = "10.100.0.1"', "seed = 1", 'forward = "gre"')) == [
        "lb.toml:5: forward must be one of 'vxlan', 'ipip', 'direct', got 'gre'"
    ]
    assert problems(l4_table('vip = "10.100.0.1"', "seed = 1", "sede = 2")) == [
        "lb.toml:5: unknown key 'sede' in [[l4]] (did you mean 'seed'?)"
    ]
    assert problems(l4_table('vip = "10.100.0.1"', "seed = 4294967296")) == [
        "lb.toml:4: seed must be at most 4294967295, got 4294967296"
    ]


def test_dsr_refusals() -> None:
    assert problems('[dsr]\nvips = ["10.100.0.1", "10.100.0.x"]\n') == [
        "lb.toml:2: dsr.vips: vip '10.100.0.x' is not an IP address"
    ]
    assert problems("[dsr]\nvips = []\n") == ["lb.toml:2: dsr.vips needs at least 1 entry"]
    assert problems('[dsr]\nvips = ["10.100.0.1"]\ntunnel = { type = "vxlan" }\n') == [
        'lb.toml:3: [dsr] tunnel type "vxlan" needs local, this node\'s underlay address'
    ]


def test_vxlan_tables_agree_on_each_l7_node_tunnel() -> None:
    """Across [[l4]] tables an L7 node has one tunnel: the same node may be in two tables
    (they share its device), but one VNI may not name two nodes (the kernel refuses a second
    VXLAN device with the same VNI), nor one node have two VNIs (its [dsr] has one)."""
    first = l4_table('vip = "10.100.0.1"', "seed = 1", nodes=1)
    second = l4_table('vip = "10.100.0.2"', "seed = 1", nodes=1).replace('"www"', '"api"')
    parse_config(first + second)  # n0 at 10.0.3.21 in both
    other_subnet = second.replace("10.0.3.21", "10.1.3.21")  # the same low 16 bits: VNI 789
    assert problems(first + other_subnet) == [
        "lb.toml:14: node 'n0' of [[l4]] 'api' has VXLAN VNI 789, already used by node 10.0.3.21 of"
        " [[l4]] 'www' (line 5); set vni"
    ]
    assert problems(first + second + "vni = 7\n") == [
        "lb.toml:15: node 'n0' of [[l4]] 'api' has VXLAN VNI 7, but 789 in [[l4]] 'www' (line 5):"
        " an L7 node has one tunnel"
    ]
    parse_config(first + other_subnet.replace("seed = 1\n", 'seed = 1\nforward = "direct"\n'))


def test_both_sides_of_a_tunnel_derive_the_same_vni() -> None:
    l4 = parse_config(l4_table('vip = "10.100.0.1"', "seed = 1", nodes=1))
    dsr = parse_config('[dsr]\nvips = ["10.100.0.1"]\ntunnel = { type = "vxlan", local = "10.0.3.21" }\n')
    assert dsr.dsr is not None
    assert l4.l4[0].node[0].tunnel_vni() == dsr.dsr.tunnel.tunnel_vni() == 3 * 256 + 21
