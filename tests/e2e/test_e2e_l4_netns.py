"""The L4 node's kernel programming (balancer.cluster.l4) with real traffic, in network
namespaces this test creates (root only; skipped with the reason elsewhere, a failure under
CI=true).

    client 10.0.1.2 -- router 10.0.1.1 / 10.0.3.1 -- bridge -- L4 node 10.0.3.11
                                                            -- L7 nodes 10.0.3.21, 10.0.3.22

The router sends the VIP 10.100.0.1 to the L4 node; the L4 node hashes each flow to an L7 node
and forwards it through a VXLAN tunnel (or, `direct`, over the L2 segment); the L7 nodes hold
the VIP on lo and answer straight to the router (direct server return). Each L7 node runs a
line server answering its own name, so the client sees which node served a connection.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from tests.support.netns import Lab, ip, join_bridge, read_line, sysctl
from tests.support.process import wait_until
from tests.support.tools import require_root, require_tool

from balancer.admin.ctl import Unreachable, call

SRC = Path(__file__).resolve().parents[2] / "src"
VIP = "10.100.0.1"
NODES = {"l7a": "10.0.3.21", "l7b": "10.0.3.22"}

SERVER = r"""
import socketserver, sys
name = sys.argv[1]
class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(name.encode() + b"\n")
class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024
server = Server(("127.0.0.1", 8080), Handler)
print("listening", flush=True)
server.serve_forever()
"""

# `count N`: N fresh connections, one line each; prints {"node": count, ..., "errors": n}.
# `hold`: one connection kept open; prints its node, then on each stdin line asks again.
CLIENT = r"""
import json, socket, sys
vip = sys.argv[1]
def ask(sock):
    sock.sendall(b"hi\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(100)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data.decode().strip()
if sys.argv[2] == "port":  # one connection from a fixed source port, closed with a RST
    import struct
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.bind(("0.0.0.0", int(sys.argv[3])))
    sock.settimeout(3)
    sock.connect((vip, 80))
    print(ask(sock), flush=True)
    sock.close()
elif sys.argv[2] == "count":
    counts = {"errors": 0}
    for _ in range(int(sys.argv[3])):
        try:
            with socket.create_connection((vip, 80), timeout=3) as sock:
                sock.settimeout(3)
                node = ask(sock)
                counts[node] = counts.get(node, 0) + 1
        except OSError:
            counts["errors"] += 1
    print(json.dumps(counts), flush=True)
else:
    sock = socket.create_connection((vip, 80), timeout=3)
    sock.settimeout(3)
    print(ask(sock), flush=True)
    for line in sys.stdin:
        try:
            print(ask(sock), flush=True)
        except OSError as exc:
            print("error " + str(exc), flush=True)
"""


def l4_file(method: str, forward: str, check: str = "", admin: Path | None = None) -> str:
    nodes = "".join(f'[[l4.node]]\nname = "{name}"\naddress = "{address}"\n' for name, address in NODES.items())
    head = f'[admin]\nsocket = "{admin}"\n\n' if admin is not None else ""
    return head + (
        f'[[l4]]\nname = "www"\nvip = "{VIP}"\nports = [80]\nmethod = "{method}"\n'
        f'seed = 24301\nforward = "{forward}"\n{check}' + nodes
    )


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[Lab, dict[str, str]]]:
    require_root("the L4 tier test")
    require_tool("nft")
    require_tool("ip")
    lab = Lab("l4t")
    try:
        names = {role: lab.ns(role) for role in ("sw", "c", "r", "l4", "l7a", "l7b")}
        sw, c, r, l4 = names["sw"], names["c"], names["r"], names["l4"]
        ip("-n", sw, "link", "add", "br0", "type", "bridge")
        ip("-n", sw, "link", "set", "br0", "up")
        ip("link", "add", "e0", "netns", c, "type", "veth", "peer", "name", "e1", "netns", r)
        ip("-n", c, "addr", "add", "10.0.1.2/24", "dev", "e0")
        ip("-n", c, "link", "set", "e0", "up")
        ip("-n", c, "route", "add", "default", "via", "10.0.1.1")
        ip("-n", r, "addr", "add", "10.0.1.1/24", "dev", "e1")
        ip("-n", r, "link", "set", "e1", "up")
        join_bridge(lab, sw, r, "10.0.3.1/24", "p-r")
        sysctl(lab, r, ["net.ipv4.ip_forward=1"])
        ip("-n", r, "route", "add", f"{VIP}/32", "via", "10.0.3.11")
        join_bridge(lab, sw, l4, "10.0.3.11/24", "p-l4")
        ip("-n", l4, "route", "add", "default", "via", "10.0.3.1")
        # Counts what would break direct return: a reply from the VIP through the L4 node.
        lab.sh(
            l4,
            "nft",
            f"table ip dsrcheck {{ chain c {{ type filter hook prerouting priority -300;"
            f" ip saddr {VIP} counter; }}; }}",
        )
        server_file = tmp_path / "server.py"
        server_file.write_text(SERVER)
        for name, address in NODES.items():
            ns = names[name]
            join_bridge(lab, sw, ns, f"{address}/24", f"p-{name}")
            ip("-n", ns, "route", "add", "default", "via", "10.0.3.1")
            server = lab.python(ns, str(server_file), name)  # on 127.0.0.1:8080 only
            assert read_line(server, 10) == "listening"
            lab.named[name] = server
            lab.named[f"{name}-balancer"] = start_l7(lab, ns, tmp_path, name, address, "vxlan")
        (tmp_path / "client.py").write_text(CLIENT)
        yield lab, names
    finally:
        lab.close()
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert lab.prefix not in left


def l7_file(address: str, tunnel: str) -> str:
    """An L7 node behind the L4 tier: [dsr], a TCP frontend on the VIP (and on the node's
    own address, which the L4 node's checks probe), the line server behind it."""
    local = f', local = "{address}"' if tunnel != "direct" else ""
    return (
        '[global]\nworkers = 1\ngrace = "1s"\nlog = "none"\n\n'
        f'[dsr]\nvips = ["{VIP}"]\ntunnel = {{ type = "{tunnel}"{local} }}\n\n'
        f'[[frontend]]\nname = "vip"\nmode = "tcp"\nbind = ["{VIP}:80", "{address}:80"]\ndefault_backend = "line"\n\n'
        '[[backend]]\nname = "line"\nmode = "tcp"\n'
        '  [[backend.server]]\n  name = "s"\n  address = "127.0.0.1:8080"\n'
    )


def start_l7(lab: Lab, ns: str, tmp_path: Path, name: str, address: str, tunnel: str) -> subprocess.Popen[str]:
    """`balancer run` on an L7 node; returns once the VIP's port listens there (connections
    wait in its accept queue until the worker takes them)."""
    config = tmp_path / f"{name}.toml"
    config.write_text(l7_file(address, tunnel))
    output = tmp_path / f"{name}.log"
    process = lab.python(ns, "-m", "balancer", "run", "-c", str(config), src=SRC, output=output)

    def listening() -> bool:
        assert process.poll() is None, output.read_text()
        return bool(lab.sh(ns, "ss", "-Hltn", f"src {VIP}:80").strip())

    wait_until(listening, 15, interval=0.1, what=f"{name} to listen on the VIP")
    return process


def l7_state(lab: Lab, ns: str) -> str:
    """What [dsr] may leave behind: addresses on lo other than 127.0.0.1, its device."""
    addresses = [line for line in lab.sh(ns, "ip", "-o", "-4", "addr", "show", "dev", "lo").splitlines()]
    links = [line for line in lab.sh(ns, "ip", "-o", "link").splitlines() if "bdsr" in line]
    return "\n".join([line for line in addresses if "127.0.0.1" not in line] + links).strip()


class L4Run:
    """`balancer run -c l4.toml` inside the L4 node's namespace, driven over its admin socket
    (the unix socket is a file: reachable from the root namespace)."""

    def __init__(self, lab: Lab, ns: str, tmp_path: Path, text: str) -> None:
        self.socket = tmp_path / "admin.sock"
        self.config = tmp_path / "l4.toml"
        self.config.write_text(text)
        self.output = tmp_path / "l4.log"  # stdout and stderr: never a pipe left unread
        self.output.write_text("")
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        self.process = lab.python(ns, "-m", "balancer", "run", "-c", str(self.config), src=SRC, output=self.output)

    def wait_ready(self) -> L4Run:
        wait_until(lambda: self.process.poll() is not None or self._answers(), 15, what="the admin API")
        assert self.process.poll() is None, self.stderr()
        return self

    def _answers(self) -> bool:
        try:
            return self.call("GET", "/api/l4")[0] == 200
        except Unreachable:
            return False

    def call(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        return call(str(self.socket), method, path, body, timeout=10)

    def rows(self) -> dict[str, dict[str, Any]]:
        status, rows = self.call("GET", "/api/l4")
        assert status == 200, rows
        return {row["node"]: row for row in rows}

    def set_state(self, node: str, state: str) -> dict[str, Any]:
        status, row = self.call("PUT", f"/api/l4/www/{node}", {"state": state})
        assert status == 200, row
        return cast(dict[str, Any], row)

    def stop(self) -> None:
        """SIGTERM, and the node must exit 0 within 15 s (what it logged is the failure's text)."""
        self.process.terminate()
        try:
            code = self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)  # its threads' stacks go to the output
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
            output = self.stderr()
            raise AssertionError(f"the L4 node did not exit within 15 s of SIGTERM; its output:\n{output}") from None
        assert code == 0, self.stderr()

    def stderr(self) -> str:
        """What the node wrote so far, stdout and stderr together."""
        return self.output.read_text()


def start_l4(
    lab: Lab, ns: str, tmp_path: Path, method: str = "maglev", forward: str = "vxlan", check: str = ""
) -> L4Run:
    text = l4_file(method, forward, check, admin=tmp_path / "admin.sock")
    return L4Run(lab, ns, tmp_path, text).wait_ready()


def count(lab: Lab, ns: str, tmp_path: Path, connections: int) -> dict[str, int]:
    result = lab.run(
        ns,
        shutil.which("python3") or "python3",
        str(tmp_path / "client.py"),
        VIP,
        "count",
        str(connections),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    counts: dict[str, int] = json.loads(result.stdout)
    return counts


def replies_through(lab: Lab, ns: str) -> int:
    listing = json.loads(lab.sh(ns, "nft", "-j", "list", "table", "ip", "dsrcheck"))
    for item in listing["nftables"]:
        rule = item.get("rule")
        if rule:
            for expression in rule["expr"]:
                if "counter" in expression:
                    packets: int = expression["counter"]["packets"]
                    return packets
    raise AssertionError("no counter in dsrcheck")


def kernel_state(lab: Lab, ns: str) -> str:
    """What the L4 programming may leave behind: its table, rules, routes, devices."""
    tables = lab.sh(ns, "nft", "-j", "list", "tables")
    rules = lab.sh(ns, "ip", "rule")
    routes = lab.sh(ns, "ip", "route", "show", "table", "all", "proto", "76")
    links = lab.sh(ns, "ip", "-o", "link")
    return "\n".join(
        [
            "balancer_l4" if "balancer_l4" in tables else "",
            *[line for line in rules.splitlines() if "fwmark" in line],
            *routes.splitlines(),
            *[line for line in links.splitlines() if "bl4-" in line],
        ]
    ).strip()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("method", "forward"),
    [("maglev", "vxlan"), ("source", "vxlan"), ("roundrobin", "vxlan"), ("random", "vxlan"), ("maglev", "direct")],
)
def test_flows_are_spread_over_both_l7_nodes_and_replies_skip_the_l4_node(lab, tmp_path, method, forward):
    lab, names = lab
    agent = start_l4(lab, names["l4"], tmp_path, method, forward)

    counts = count(lab, names["c"], tmp_path, 200)

    assert counts["errors"] == 0, counts
    if method == "source":  # one client address: one node, every time
        assert sorted(counts.values()) == [0, 200], counts
    else:
        assert counts.get("l7a", 0) >= 50 and counts.get("l7b", 0) >= 50, counts
    assert replies_through(lab, names["l4"]) == 0
    agent.stop()
    assert kernel_state(lab, names["l4"]) == ""


@pytest.mark.timeout(60)
def test_a_node_marked_down_takes_no_new_flows_but_keeps_its_established_ones(lab, tmp_path):
    lab, names = lab
    agent = start_l4(lab, names["l4"], tmp_path)
    held = lab.python(names["c"], str(tmp_path / "client.py"), VIP, "hold")
    node = read_line(held, 10)
    assert node in NODES

    row = agent.set_state(node, "maint")
    assert row["state"] == "maint" and row["slots"] == 0 and row["moved_slots"] > 0, row
    whole, kernel = row["update_seconds"] * 1000, row["kernel_seconds"] * 1000
    print(f"one of 2 nodes' table update: {row['moved_slots']} slots in {whole:.0f} ms (kernel {kernel:.0f} ms)")

    counts = count(lab, names["c"], tmp_path, 100)
    held.stdin.write("again\n")
    held.stdin.flush()

    other = next(name for name in NODES if name != node)
    assert counts == {"errors": 0, other: 100}
    assert read_line(held, 10) == node  # the established connection still works, on its node

    assert agent.set_state(node, "ready")["state"] == "up"
    counts = count(lab, names["c"], tmp_path, 100)
    assert counts.get(node, 0) >= 20, counts
    agent.stop()
    assert kernel_state(lab, names["l4"]) == ""


@pytest.mark.timeout(60)
def test_a_start_clears_what_a_killed_run_left(lab, tmp_path):
    lab, names = lab
    agent = start_l4(lab, names["l4"], tmp_path)
    agent.process.kill()  # no cleanup: table, rules, routes and devices stay
    agent.process.wait(timeout=10)
    assert kernel_state(lab, names["l4"]) != ""

    agent = start_l4(lab, names["l4"], tmp_path)
    counts = count(lab, names["c"], tmp_path, 50)
    assert counts["errors"] == 0 and set(counts) == {"errors", "l7a", "l7b"}, counts
    agent.stop()
    assert kernel_state(lab, names["l4"]) == ""


def kernel_has_ipip(lab: Lab, ns: str) -> bool:
    probe = lab.run(ns, "ip", "link", "add", "probe0", "type", "ipip", "remote", "10.0.3.21")
    lab.run(ns, "ip", "link", "del", "probe0")
    return probe.returncode == 0


@pytest.mark.timeout(60)
def test_forward_ipip_is_refused_clearly_where_the_kernel_has_no_ipip(lab, tmp_path):
    lab, names = lab
    if kernel_has_ipip(lab, names["l4"]):
        pytest.skip("this kernel has IPIP tunnels: the refusal cannot be shown (no IPIP traffic test yet)")
    agent = L4Run(lab, names["l4"], tmp_path, l4_file("maglev", "ipip"))

    assert agent.process.wait(timeout=15) == 1
    assert "[[l4]] 'www': forward \"ipip\": this kernel has no IPIP tunnels" in agent.stderr()
    assert kernel_state(lab, names["l4"]) == ""


@pytest.mark.timeout(60)
def test_one_node_table_update_time_with_ten_nodes(tmp_path):
    """Issue 14 asks for ≤ 50 ms per L7 node's update; printed as a figure, asserted loosely
    (a shared 2-core machine). No traffic needed: the tunnels' far ends need not exist."""
    require_root("the L4 tier test")
    lab = Lab("l4u")
    try:
        ns = lab.ns("l4")
        nodes = "".join(f'[[l4.node]]\nname = "n{n}"\naddress = "10.0.3.{21 + n}"\n' for n in range(10))
        admin = f'[admin]\nsocket = "{tmp_path / "admin.sock"}"\n'
        text = admin + f'[[l4]]\nname = "www"\nvip = "{VIP}"\nports = [80]\nseed = 1\n' + nodes
        agent = L4Run(lab, ns, tmp_path, text).wait_ready()
        figures = []
        for node, state in (("n3", "maint"), ("n3", "ready"), ("n7", "maint"), ("n7", "ready")):
            row = agent.set_state(node, state)
            assert 6000 < row["moved_slots"] < 7500, row
            figures.append((row["update_seconds"], row["kernel_seconds"]))
        shown = ", ".join(f"{whole * 1000:.0f} ms (kernel {kernel * 1000:.0f} ms)" for whole, kernel in figures)
        print(f"one of 10 nodes, 65537 slots: updates took {shown}")
        assert min(whole for whole, _ in figures) < 0.5
        agent.stop()
    finally:
        lab.close()


@pytest.mark.timeout(60)
def test_a_new_syn_on_a_reused_5_tuple_is_balanced_anew(lab, tmp_path):
    """The flow sets remember the 5-tuple for the idle timeout; a new connection reusing it
    must not be sent to the node it had before when that node no longer takes new flows."""
    lab, names = lab
    agent = start_l4(lab, names["l4"], tmp_path)

    def connect_from(port: int) -> str:
        result = lab.run(names["c"], sys.executable, str(tmp_path / "client.py"), VIP, "port", str(port))
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    first = connect_from(40000)
    said = run_ctl(agent, "set", "l4", "www", first, "state", "maint")
    assert said.strip() == f"www/{first}: maint, 0 slots"

    again = connect_from(40000)

    assert again != first and again in NODES
    agent.stop()


@pytest.mark.timeout(60)
def test_the_health_check_takes_a_dead_l7_node_out_and_back(lab, tmp_path):
    lab, names = lab
    check = 'check = { type = "tcp", port = 80, interval = "200ms", rise = 2, fall = 2, timeout = "300ms" }\n'
    agent = start_l4(lab, names["l4"], tmp_path, check=check)
    wait_until(lambda: agent.rows()["l7a"]["state"] == "up" and agent.rows()["l7a"]["check"], 10, what="a check")
    assert metric_rows(agent) == {"l7a": (1.0, 32769.0), "l7b": (1.0, 32768.0)}
    l7a = lab.named["l7a-balancer"]  # the check probes its own address: stop it
    l7a.terminate()
    assert l7a.wait(timeout=15) == 0

    def l7a_out() -> dict[str, dict[str, Any]] | None:
        rows = agent.rows()  # the state changes first, the slots once the kernel has them
        return rows if rows["l7a"]["state"] == "down" and rows["l7a"]["slots"] == 0 else None

    down = wait_until(l7a_out, 10, what="l7a down and out of the table")

    assert down["l7b"]["slots"] == 65537, down
    assert "refused" in down["l7a"]["check"].lower(), down["l7a"]
    assert metric_rows(agent) == {"l7a": (0.0, 0.0), "l7b": (1.0, 65537.0)}
    shown = run_ctl(agent, "show", "l4")
    assert re.search(r"www .* l7a .* down .* 0/65537", shown), shown
    assert count(lab, names["c"], tmp_path, 100) == {"errors": 0, "l7b": 100}
    start_l7(lab, names["l7a"], tmp_path, "l7a", NODES["l7a"], "vxlan")
    wait_until(lambda: agent.rows()["l7a"]["state"] == "up", 10, what="l7a up again")
    counts = count(lab, names["c"], tmp_path, 100)
    assert counts["errors"] == 0 and counts.get("l7a", 0) >= 20, counts
    agent.stop()
    events = agent.stderr()
    assert "l4 www/l7a is DOWN" in events and "l4 www/l7a is UP" in events, events
    assert kernel_state(lab, names["l4"]) == ""


def metric_rows(agent: L4Run) -> dict[str, tuple[float, float]]:
    """balancer_l4_node_up and balancer_l4_slots of each node, from GET /metrics."""
    status, text = agent.call("GET", "/metrics")
    assert status == 200
    found: dict[str, list[float]] = {}
    for line in text.splitlines():
        match = re.match(r'balancer_l4_(node_up|slots)\{l4="www",node="(\w+)"\} (\S+)$', line)
        if match:
            found.setdefault(match.group(2), [0.0, 0.0])[match.group(1) == "slots"] = float(match.group(3))
    assert "balancer_l4_table_update_seconds " in text
    return {node: (values[0], values[1]) for node, values in found.items()}


def run_ctl(agent: L4Run, *words: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "balancer", "ctl", "--socket", str(agent.socket), *words],
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.timeout(60)
def test_sigterm_undoes_everything(lab, tmp_path):
    lab, names = lab
    agent = start_l4(lab, names["l4"], tmp_path)
    assert kernel_state(lab, names["l4"]) != ""

    agent.stop()

    assert kernel_state(lab, names["l4"]) == ""


def table_handle(lab: Lab, ns: str) -> int:
    """The kernel's handle of the nft table: a table created again gets a new one."""
    listing = json.loads(lab.sh(ns, "nft", "-j", "list", "tables"))
    handles = [
        item["table"]["handle"] for item in listing["nftables"] if item.get("table", {}).get("name") == "balancer_l4"
    ]
    assert len(handles) == 1, listing
    return int(handles[0])


@pytest.mark.timeout(60)
def test_a_reload_keeps_an_unchanged_table_and_reprograms_a_changed_one(lab, tmp_path):
    lab, names = lab
    agent = start_l4(lab, names["l4"], tmp_path)
    handle = table_handle(lab, names["l4"])
    held = lab.python(names["c"], str(tmp_path / "client.py"), VIP, "hold")
    node = read_line(held, 10)

    status, result = agent.call("POST", "/api/reload")  # the same file

    assert (status, result["reloaded"]) == (200, True), result
    assert table_handle(lab, names["l4"]) == handle  # untouched
    held.stdin.write("again\n")
    held.stdin.flush()
    assert read_line(held, 10) == node

    # l7b leaves the file: the table is programmed again without it, its device is gone.
    agent.config.write_text(agent.config.read_text().split('[[l4.node]]\nname = "l7b"')[0])
    status, result = agent.call("POST", "/api/reload")

    assert (status, result["reloaded"]) == (200, True), result
    assert list(agent.rows()) == ["l7a"]
    assert agent.rows()["l7a"]["slots"] == 65537
    assert "bl4-0-1" not in lab.sh(names["l4"], "ip", "-o", "link")
    assert count(lab, names["c"], tmp_path, 50) == {"errors": 0, "l7a": 50}
    agent.stop()
    assert kernel_state(lab, names["l4"]) == ""


@pytest.mark.timeout(60)
def test_a_second_stop_signal_still_removes_everything(lab, tmp_path):
    lab, names = lab
    agent = start_l4(lab, names["l4"], tmp_path)

    agent.process.send_signal(signal.SIGINT)
    agent.process.send_signal(signal.SIGINT)

    assert agent.process.wait(timeout=15) == 0
    assert kernel_state(lab, names["l4"]) == ""


@pytest.mark.timeout(60)
def test_an_l7_node_stop_removes_its_vip_tunnel_and_arp_settings(lab, tmp_path):
    lab, names = lab
    ns = names["l7a"]
    assert l7_state(lab, ns) != ""
    assert lab.sh(ns, "sysctl", "-n", "net.ipv4.conf.all.arp_ignore").strip() == "1"

    l7a = lab.named["l7a-balancer"]
    l7a.terminate()

    assert l7a.wait(timeout=15) == 0
    assert l7_state(lab, ns) == ""
    settings = ["net.ipv4.conf.all.arp_ignore", "net.ipv4.conf.all.arp_announce", "net.ipv4.conf.all.rp_filter"]
    assert lab.sh(ns, "sysctl", "-n", *settings).split() == ["0", "0", "0"]


@pytest.mark.timeout(60)
def test_an_l7_node_killed_then_started_again_clears_and_serves(lab, tmp_path):
    lab, names = lab
    ns = names["l7a"]
    l7a = lab.named["l7a-balancer"]
    l7a.kill()  # the master: its worker follows it (parent-death signal); nothing is undone
    l7a.wait(timeout=10)
    assert "lo:balancer" in lab.sh(ns, "ip", "-o", "addr", "show", "dev", "lo")
    assert "bdsr0" in lab.sh(ns, "ip", "-o", "link")

    again = start_l7(lab, ns, tmp_path, "l7a", NODES["l7a"], "vxlan")
    agent = start_l4(lab, names["l4"], tmp_path)
    counts = count(lab, names["c"], tmp_path, 100)

    assert counts["errors"] == 0 and counts.get("l7a", 0) >= 20, counts
    assert lab.sh(ns, "ip", "-o", "addr", "show", "dev", "lo").count(VIP) == 1
    agent.stop()
    again.terminate()
    assert again.wait(timeout=15) == 0
    assert l7_state(lab, ns) == ""
    # The sysctls as they were before the killed run (saved by it), not as it left them.
    settings = ["net.ipv4.conf.all.arp_ignore", "net.ipv4.conf.all.arp_announce", "net.ipv4.conf.all.rp_filter"]
    assert lab.sh(ns, "sysctl", "-n", *settings).split() == ["0", "0", "0"]


@pytest.mark.timeout(60)
def test_the_stats_page_shows_the_l4_table_and_a_node_going_down(lab, tmp_path):
    """In Chromium run inside the L4 node's namespace (a wrapper Playwright starts), where
    the page listens on that namespace's loopback."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright, the `test` extra)")
    chromium = require_tool("chromium")
    lab, names = lab
    check = 'check = { type = "tcp", port = 80, interval = "200ms", rise = 2, fall = 2, timeout = "300ms" }\n'
    text = '[stats]\nbind = "127.0.0.1:8404"\nrefresh = "200ms"\n\n' + l4_file(
        "maglev", "vxlan", check, admin=tmp_path / "admin.sock"
    )
    agent = L4Run(lab, names["l4"], tmp_path, text).wait_ready()
    wrapper = tmp_path / "chromium-in-ns"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {names["l4"]} {chromium} "$@"\n')
    wrapper.chmod(0o755)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(wrapper),
            args=["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
            headless=True,
        )
        try:
            context.set_default_timeout(15_000)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            response = page.goto("http://127.0.0.1:8404/stats")
            assert response is not None and response.status == 200
            page.wait_for_selector('tr[data-l4="www/l7a"] .pill.up')
            assert "L4 tables" in page.text_content("#l4")
            lab.named["l7a-balancer"].terminate()

            page.wait_for_selector('tr[data-l4="www/l7a"] .pill.down')

            row = page.text_content('tr[data-l4="www/l7a"]')
            assert "10.0.3.21" in row and "down" in row, row
            page.wait_for_selector('tr[data-l4="www/l7b"] td:has-text("65,537 / 65,537")')
            assert errors == []
        finally:
            context.close()
    agent.stop()


@pytest.mark.timeout(60)
def test_a_reload_that_adds_a_table_keeps_the_other_tables_flows_and_operator_states(lab, tmp_path):
    lab, names = lab
    agent = start_l4(lab, names["l4"], tmp_path)
    held = lab.python(names["c"], str(tmp_path / "client.py"), VIP, "hold")
    node = read_line(held, 10)
    agent.set_state(node, "maint")  # its established flow stays, pinned by the flow set
    other = next(name for name in NODES if name != node)

    # A second table (another VIP) joins: "www" is programmed again, unchanged.
    second = (
        '\n[[l4]]\nname = "api"\nvip = "10.100.0.2"\nports = [80]\nseed = 7\nforward = "direct"\n'
        '[[l4.node]]\nname = "a"\naddress = "10.0.3.22"\n'
    )
    agent.config.write_text(agent.config.read_text() + second)
    status, result = agent.call("POST", "/api/reload")

    assert (status, result["reloaded"]) == (200, True), result
    assert agent.rows()[node]["state"] == "maint"
    assert agent.rows()[other]["slots"] == 65537
    held.stdin.write("again\n")
    held.stdin.flush()
    assert read_line(held, 10) == node  # the flow kept its node through the reprogramming
    assert count(lab, names["c"], tmp_path, 30) == {"errors": 0, other: 30}
    agent.stop()
    assert kernel_state(lab, names["l4"]) == ""


@pytest.mark.timeout(60)
def test_a_refused_reload_keeps_the_running_tables_states_and_flows(lab, tmp_path):
    lab, names = lab
    agent = start_l4(lab, names["l4"], tmp_path)
    held = lab.python(names["c"], str(tmp_path / "client.py"), VIP, "hold")
    node = read_line(held, 10)
    agent.set_state(node, "maint")
    # ipip: valid for `check`, refused by this kernel when programmed.
    agent.config.write_text(agent.config.read_text().replace('forward = "vxlan"', 'forward = "ipip"'))
    if kernel_has_ipip(lab, names["l4"]):
        pytest.skip("this kernel has IPIP tunnels: the reload would take")

    status, result = agent.call("POST", "/api/reload")

    assert status == 400 and "no IPIP tunnels" in result["problems"][0], result
    assert agent.rows()[node]["state"] == "maint"
    held.stdin.write("again\n")
    held.stdin.flush()
    assert read_line(held, 10) == node
    agent.stop()
    assert kernel_state(lab, names["l4"]) == ""


@pytest.mark.timeout(60)
def test_a_reload_refused_after_the_tables_took_puts_the_running_tables_back(lab, tmp_path):
    """The new file's tables program fine but a later step refuses the reload (a frontend
    whose address is taken): the kernel and `show l4` go back to the running file's tables,
    the ones the running generation describes."""
    lab, names = lab
    agent = start_l4(lab, names["l4"], tmp_path)
    taken = lab.python(
        names["l4"],
        "-c",
        "import socket, sys; s = socket.socket(); s.bind(('127.0.0.1', 8999)); s.listen();"
        " print('listening', flush=True); sys.stdin.read()",
    )
    assert read_line(taken, 10) == "listening"
    # l7b leaves the file, and a frontend on the taken address joins it.
    frontend = (
        '\n[[frontend]]\nname = "taken"\nmode = "tcp"\nbind = ["127.0.0.1:8999"]\ndefault_backend = "b"\n'
        '[[backend]]\nname = "b"\nmode = "tcp"\n  [[backend.server]]\n  name = "s"\n  address = "127.0.0.1:1"\n'
    )
    agent.config.write_text(agent.config.read_text().split('[[l4.node]]\nname = "l7b"')[0] + frontend)

    status, result = agent.call("POST", "/api/reload")

    assert status == 400 and "8999" in result["problems"][0], result
    assert sorted(agent.rows()) == ["l7a", "l7b"]
    assert "bl4-0-1" in lab.sh(names["l4"], "ip", "-o", "link")
    counts = count(lab, names["c"], tmp_path, 100)
    assert counts["errors"] == 0 and counts.get("l7b", 0) > 0, counts
    agent.stop()
    assert kernel_state(lab, names["l4"]) == ""


@pytest.mark.timeout(60)
def test_a_stop_during_a_reload_still_removes_everything(lab, tmp_path):
    """SIGTERM right after SIGHUP: the stop waits for the reprogramming under way and then
    removes it, instead of finding nothing programmed and leaving the new tables behind."""
    lab, names = lab
    agent = start_l4(lab, names["l4"], tmp_path)
    agent.config.write_text(agent.config.read_text().split('[[l4.node]]\nname = "l7b"')[0])

    agent.process.send_signal(signal.SIGHUP)

    def reprogramming() -> bool:  # the old devices are gone, the new table's are being made
        links = lab.sh(names["l4"], "ip", "-o", "link")
        return "bl4-0-1" not in links and "bl4-0-0" in links

    wait_until(reprogramming, 10, interval=0.005, what="the reload to reprogram the table")
    agent.process.send_signal(signal.SIGTERM)

    assert agent.process.wait(timeout=15) == 0, agent.stderr()
    assert kernel_state(lab, names["l4"]) == ""


@pytest.mark.timeout(60)
def test_an_operator_state_set_during_a_reload_applies_to_the_reloaded_table(lab, tmp_path):
    """`set l4 ... maint` arriving while a reload reprograms the kernel waits for it, then
    takes the node out of the table that runs from then on (not out of the one being removed)."""
    lab, names = lab
    agent = start_l4(lab, names["l4"], tmp_path)
    second = (
        '\n[[l4]]\nname = "api"\nvip = "10.100.0.2"\nports = [80]\nseed = 7\nforward = "direct"\n'
        '[[l4.node]]\nname = "a"\naddress = "10.0.3.22"\n'
    )
    agent.config.write_text(agent.config.read_text() + second)
    agent.process.send_signal(signal.SIGHUP)
    wait_until(
        lambda: "bl4-0-1" not in lab.sh(names["l4"], "ip", "-o", "link"),
        10,
        interval=0.005,
        what="the reload to remove the running table",
    )

    row = agent.set_state("l7a", "maint")

    assert (row["state"], row["slots"]) == ("maint", 0), row
    wait_until(lambda: "api" in {r["l4"] for r in agent.call("GET", "/api/l4")[1]}, 10, what="the reload")
    assert (agent.rows()["l7a"]["state"], agent.rows()["l7a"]["slots"]) == ("maint", 0)
    assert count(lab, names["c"], tmp_path, 30) == {"errors": 0, "l7b": 30}
    agent.stop()
    assert kernel_state(lab, names["l4"]) == ""


@pytest.mark.timeout(60)
def test_two_vxlan_tables_may_share_an_l7_node(lab, tmp_path):
    """One tunnel device per L7 node, whatever the number of tables sending to it (a second
    VXLAN device with the same VNI and port is refused by the kernel: "File exists")."""
    lab, names = lab
    second = (
        '\n[[l4]]\nname = "api"\nvip = "10.100.0.2"\nports = [80]\nseed = 7\nforward = "vxlan"\n'
        '[[l4.node]]\nname = "b"\naddress = "10.0.3.22"\n'
    )
    text = l4_file("maglev", "vxlan", admin=tmp_path / "admin.sock") + second
    agent = L4Run(lab, names["l4"], tmp_path, text).wait_ready()

    status, rows = agent.call("GET", "/api/l4")
    assert status == 200 and {(row["l4"], row["node"]) for row in rows} >= {("www", "l7b"), ("api", "b")}, rows
    counts = count(lab, names["c"], tmp_path, 50)
    assert counts["errors"] == 0 and counts.get("l7b", 0) > 0, counts
    agent.stop()
    assert kernel_state(lab, names["l4"]) == ""


@pytest.mark.timeout(60)
def test_the_checks_outlive_a_table_update_the_kernel_refuses(lab, tmp_path):
    """The nft table is deleted behind balancer's back: the update for l7a going down is
    refused, and logged; the check loop goes on (l7a is seen coming back) and a stop still
    ends cleanly. Before, the refusal ended the loop silently: l7a stayed down for good and
    the stop raised the loop's error."""
    lab, names = lab
    ns = names["l4"]
    check = 'check = { type = "tcp", port = 80, interval = "200ms", rise = 2, fall = 2, timeout = "300ms" }\n'
    agent = start_l4(lab, ns, tmp_path, check=check)
    wait_until(lambda: agent.rows()["l7a"]["check"], 10, what="a check")
    lab.sh(ns, "nft", "delete", "table", "ip", "balancer_l4")
    l7a = lab.named["l7a-balancer"]
    l7a.terminate()
    assert l7a.wait(timeout=15) == 0
    wait_until(lambda: agent.rows()["l7a"]["state"] == "down", 10, what="l7a down")
    assert agent.rows()["l7a"]["slots"] == 32769  # the kernel refused: the slots stay

    start_l7(lab, names["l7a"], tmp_path, "l7a", NODES["l7a"], "vxlan")

    wait_until(lambda: agent.rows()["l7a"]["state"] == "up", 10, what="l7a seen up again")
    agent.stop()
    assert "the kernel refused the table update" in agent.stderr()
    assert kernel_state(lab, ns) == ""


@pytest.mark.timeout(60)
def test_show_l4_during_a_reload_shows_the_nodes(lab, tmp_path):
    """While a reload reprograms the kernel, `show l4` (and the metrics, from the same rows)
    still lists the nodes, as they were before it: a scrape in that window saw no table."""
    lab, names = lab
    agent = start_l4(lab, names["l4"], tmp_path)
    agent.config.write_text(agent.config.read_text().replace("seed = 24301", "seed = 24302"))
    agent.process.send_signal(signal.SIGHUP)
    seen: list[list[str]] = []

    def reloaded() -> bool:
        status, rows = agent.call("GET", "/api/l4")
        assert status == 200, rows
        seen.append(sorted(row["node"] for row in rows))
        chain = lab.run(names["l4"], "nft", "list", "chain", "ip", "balancer_l4", "l4_0_new").stdout
        return f"seed {24302:#x}" in chain  # the new table is in the kernel

    wait_until(reloaded, 10, interval=0.002, what="the reload")

    assert all(nodes == ["l7a", "l7b"] for nodes in seen), seen
    agent.stop()
