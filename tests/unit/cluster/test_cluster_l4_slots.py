"""The L4 node's tables as numbers and text, no kernel needed: which node each slot goes to,
what a health change sends the kernel, and the nft text the methods produce."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

from balancer.cluster.l4 import compute_slots, tunnel_mac, weighted_sequence
from balancer.cluster.nft import node_mark, render_slot_delta, render_table, slot_key
from balancer.config import parse_config
from balancer.config.model import L4


def table(method: str = "maglev", nodes: int = 3, size: int = 65537, weights: list[int] | None = None) -> L4:
    text = f'[[l4]]\nname = "www"\nvip = "10.100.0.1"\nports = [80]\nmethod = "{method}"\nseed = 7\n'
    text += f"table_size = {size}\n"
    for n in range(nodes):
        weight = weights[n] if weights else 100
        text += f'[[l4.node]]\nname = "n{n}"\naddress = "10.0.3.{21 + n}"\nweight = {weight}\n'
    return parse_config(text).l4[0]


def test_every_l4_node_computes_the_same_slots_from_the_same_file_and_health() -> None:
    first = compute_slots(table(), 0, {"n0", "n1", "n2"})
    again = compute_slots(table(), 0, ["n2", "n1", "n0"])

    assert first == again
    held = Counter(first)
    assert sorted(held) == [node_mark(0, 0), node_mark(0, 1), node_mark(0, 2)]
    assert max(held.values()) - min(held.values()) <= 3  # 65537 slots, equal weights


def test_a_node_going_down_moves_its_slots_and_few_others() -> None:
    before = compute_slots(table(nodes=10), 0, {f"n{n}" for n in range(10)})
    after = compute_slots(table(nodes=10), 0, {f"n{n}" for n in range(10)} - {"n4"})

    changed = sum(1 for a, b in zip(before, after, strict=True) if a != b)
    own = before.count(node_mark(0, 4))
    assert node_mark(0, 4) not in after
    assert own <= changed <= own * 1.1  # plain Maglev: about 1.02/N of the keys (lb/maglev)


def test_the_delta_names_only_the_changed_slots() -> None:
    old = [1, 2, 3, 1, 2]
    new = [1, 1, 3, 1, 1]

    assert render_slot_delta(0, old, new) == (
        "delete element ip balancer_l4 slots_0 { 1, 4 }\nadd element ip balancer_l4 slots_0 { 1 : 0x1, 4 : 0x1 }\n"
    )
    assert render_slot_delta(0, old, old) == ""
    assert render_slot_delta(2, old, []) == "flush map ip balancer_l4 slots_2\n"
    assert render_slot_delta(0, [], [5]) == "add element ip balancer_l4 slots_0 { 0 : 0x5 }\n"


def test_no_usable_node_means_an_empty_map() -> None:
    assert compute_slots(table(), 0, set()) == []
    assert compute_slots(table(), 0, {"not-a-node"}) == []


def test_weights_share_the_slots() -> None:
    slots = compute_slots(table(nodes=2, weights=[200, 100]), 0, {"n0", "n1"})
    share = slots.count(node_mark(0, 0)) / len(slots)
    assert abs(share - 2 / 3) < 0.001
    order = weighted_sequence([2, 1], 6)
    assert order == [0, 1, 0, 0, 1, 0]


def test_each_method_hashes_what_it_says() -> None:
    assert slot_key(table("maglev")) == "jhash ip saddr . tcp sport . ip daddr . tcp dport mod 65537 seed 0x7"
    assert slot_key(table("source")) == "jhash ip saddr mod 65537 seed 0x7"
    assert slot_key(table("roundrobin", size=10)) == "numgen inc mod 10"
    assert slot_key(table("random", size=10)) == "numgen random mod 10"


def test_the_table_text() -> None:
    text = render_table([table(nodes=2, size=211)], [[node_mark(0, 0)] * 211])

    assert text.startswith("table ip balancer_l4\ndelete table ip balancer_l4\ntable ip balancer_l4 {\n")
    assert "ip daddr 10.100.0.1 ip protocol tcp tcp dport { 80 } jump l4_0" in text
    assert "tcp flags & (syn | ack) == syn jump l4_0_new" in text
    assert "set flows_0_1 {" in text and "flags dynamic,timeout; timeout 300s;" in text
    assert "delete @flows_0_0 { ip saddr . tcp sport . ip daddr . tcp dport }" in text
    assert f"meta mark {node_mark(0, 1):#x} update @flows_0_1" in text


def test_marks_and_tunnel_macs() -> None:
    assert node_mark(0, 0) == 0x4C340001 and node_mark(3, 254) == 0x4C3403FF
    assert tunnel_mac(789) == "02:00:00:00:03:15"


def test_a_start_without_root_is_refused_before_touching_anything() -> None:
    # In a child process that gives up root first (as is, when the tests do not run as root).
    code = (
        "import os\n"
        "from balancer.cluster.l4 import L4Error, L4Node\n"
        "from balancer.config import parse_config\n"
        "config = parse_config(" + repr(L4_TEXT) + ")\n"
        "if os.geteuid() == 0:\n"
        "    os.seteuid(65534)\n"
        "try:\n"
        "    L4Node(config.l4).start()\n"
        "except L4Error as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)

    assert result.stdout.strip() == (
        "an [[l4]] node programs the kernel (nftables, routes, rules, tunnels): run balancer as root"
    ), result.stderr


L4_TEXT = '[[l4]]\nname = "www"\nvip = "10.100.0.1"\nseed = 1\n[[l4.node]]\nname = "a"\naddress = "10.0.3.21"\n'
