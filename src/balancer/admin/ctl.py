"""`balancer ctl`: the runtime API from a terminal or a script.

    balancer ctl [--socket PATH | --url http://HOST:PORT] [--json] show servers
    balancer ctl ... show stats
    balancer ctl ... show bgp
    balancer ctl ... show dns
    balancer ctl ... show vrrp
    balancer ctl ... show peers
    balancer ctl ... set server BACKEND/SERVER state ready|drain|maint
    balancer ctl ... set server BACKEND/SERVER weight N
    balancer ctl ... show l4
    balancer ctl ... set l4 TABLE NODE state maint|ready
    balancer ctl ... reload

Exit codes scripts can trust: 0 done, 1 refused by the balancer (the message says why),
2 bad usage, 3 cannot reach the balancer.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import time
from typing import Any
from urllib.parse import urlparse

DEFAULT_SOCKET = "/run/balancer/admin.sock"
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


class Unreachable(Exception):
    pass


def call(where: str, method: str, path: str, body: Any = None, timeout: float = 60.0) -> tuple[int, Any]:
    """One API call; `where` is a unix socket path or an http:// URL. Raises Unreachable."""
    if where.startswith("http://"):
        url = urlparse(where)
        connection: http.client.HTTPConnection = http.client.HTTPConnection(
            url.hostname or "127.0.0.1", url.port or 80, timeout=timeout
        )
    else:
        connection = UnixConnection(where, timeout)
    payload = json.dumps(body).encode() if body is not None else None
    try:
        connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
    except OSError as exc:
        raise Unreachable(f"cannot reach the balancer at {where}: {exc.strerror or exc}") from None
    finally:
        connection.close()
    if response.headers.get_content_type() == "application/json":
        return response.status, json.loads(data or b"null")
    return response.status, data.decode("utf-8", "replace")


def _usage(message: str) -> int:
    print(f"balancer ctl: {message}", file=sys.stderr)
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return EXIT_USAGE


def run_ctl(where: str, as_json: bool, words: list[str]) -> int:
    try:
        return _run(where, as_json, words)
    except Unreachable as exc:
        print(f"balancer ctl: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE


def _run(where: str, as_json: bool, words: list[str]) -> int:
    if words == ["show", "servers"]:
        status, value = call(where, "GET", "/api/servers")
        return _show(status, value, as_json, _servers_table)
    if words == ["show", "stats"]:
        status, value = call(where, "GET", "/api/stats")
        return _show(status, value, as_json, _stats_tables)
    if words == ["show", "bgp"]:
        status, value = call(where, "GET", "/api/bgp")
        return _show(status, value, as_json, _bgp_tables)
    if words == ["show", "l4"]:
        status, value = call(where, "GET", "/api/l4")
        return _show(status, value, as_json, _l4_table)
    if len(words) == 6 and words[:2] == ["set", "l4"]:
        table_name, node, field, state = words[2:]
        if field != "state" or state not in ("maint", "ready"):
            return _usage(f"expected `state maint` or `state ready`, got {field} {state}")
        status, value = call(where, "PUT", f"/api/l4/{table_name}/{node}", {"state": state})
        if status != 200:
            return _refused(value)
        print(json.dumps(value) if as_json else f"{table_name}/{node}: {value['state']}, {value['slots']} slots")
        return EXIT_OK
    if words == ["show", "dns"]:
        status, value = call(where, "GET", "/api/dns")
        return _show(status, value, as_json, _dns_table)
    if words == ["show", "vrrp"]:
        status, value = call(where, "GET", "/api/vrrp")
        return _show(status, value, as_json, _vrrp_table)
    if words == ["show", "peers"]:
        status, value = call(where, "GET", "/api/peers")
        return _show(status, value, as_json, _peers_table)
    if words == ["reload"]:
        status, value = call(where, "POST", "/api/reload")
        if status == 200:
            print(json.dumps(value) if as_json else f"reloaded: generation {value.get('generation')}")
            return EXIT_OK
        problems = value.get("problems", []) if isinstance(value, dict) else [str(value)]
        if not problems and isinstance(value, dict) and value.get("error"):
            problems = [str(value["error"])]  # refused before a reload could run (e.g. 500)
        print(json.dumps(value) if as_json else "reload refused:\n  " + "\n  ".join(problems), file=sys.stderr)
        return EXIT_REFUSED
    if len(words) == 5 and words[:2] == ["set", "server"]:
        backend, slash, server = words[2].partition("/")
        if not slash or not backend or not server:
            return _usage(f"expected BACKEND/SERVER, got {words[2]!r}")
        field, value_text = words[3], words[4]
        if field == "state":
            change: dict[str, Any] = {"state": value_text}
        elif field == "weight":
            if not value_text.isdigit():
                return _usage(f"weight must be a number from 0 to 256, got {value_text!r}")
            change = {"weight": int(value_text)}
        else:
            return _usage(f"can set state or weight, not {field!r}")
        status, value = call(where, "PUT", f"/api/servers/{backend}/{server}", change)
        if status == 200:
            print(
                json.dumps(value)
                if as_json
                else f"{backend}/{server}: state {value['state']}, weight {value['weight']}"
            )
            return EXIT_OK
        return _refused(value)
    return _usage(f"unknown command: {' '.join(words) or '(none)'}")


def _refused(value: Any) -> int:
    message = value.get("error") if isinstance(value, dict) else str(value)
    print(f"balancer ctl: {message}", file=sys.stderr)
    return EXIT_REFUSED


def _show(status: int, value: Any, as_json: bool, render: Any) -> int:
    if status != 200:
        return _refused(value)
    if as_json:
        print(json.dumps(value, indent=2))
    else:
        render(value)
    return EXIT_OK


def _console() -> Any:
    """A terminal console; piped output gets wide lines instead of cut-off columns."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


_STATE_STYLE = {"ready": "green", "drain": "yellow", "maint": "blue", "down": "red"}


_L4_STYLE = {"up": "green", "down": "red", "maint": "blue"}


def escape(text: str) -> str:
    """Free text (a check's detail, BGP's why) as written: "[[l4]] www" is not rich markup."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _l4_table(rows: list[dict[str, Any]]) -> None:
    """The L7 nodes of every [[l4]] table: state, last check, slots of the lookup map held."""
    from rich.table import Table

    table = Table(title="l4", title_justify="left")
    for column in ("l4", "vip", "method", "forward", "node", "address", "state", "check"):
        table.add_column(column)
    table.add_column("slots", justify="right")
    for row in rows:
        table.add_row(
            row["l4"],
            row["vip"],
            row["method"],
            row["forward"],
            row["node"],
            row["address"],
            f"[{_L4_STYLE.get(row['state'], '')}]{row['state']}[/]",
            escape(row["check"]),
            f"{row['slots']}/{row['table_size']}",
        )
    _console().print(table)


def _servers_table(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="servers", title_justify="left")
    for column in ("backend", "server", "address", "state", "health", "weight", "active", "requests", "errors"):
        table.add_column(column, justify="right" if column in ("weight", "active", "requests", "errors") else "left")
    table.add_column("resp ms", justify="right")
    for row in rows:
        shown = "down" if row["health"] == "down" else row["state"]
        style = _STATE_STYLE.get(shown, "")
        table.add_row(
            row["backend"],
            row["server"],
            row["address"],
            f"[{style}]{row['state']}[/]",
            f"[{_STATE_STYLE['down'] if row['health'] == 'down' else 'green'}]{row['health']}[/]",
            str(row["weight"]),
            str(row["active"]),
            str(row["requests"]),
            str(row["errors"]),
            f"{row['resp_time_ms']:.1f}",
        )
    _console().print(table)


def _bgp_tables(status: dict[str, Any]) -> None:
    """`show bgp`: what is announced and why, then the sessions."""
    from rich.table import Table

    console = _console()
    exabgp = status.get("exabgp")
    if exabgp is None:
        console.print("no [bgp] in the configuration")
        return
    running = f"pid {exabgp['pid']}" if exabgp.get("pid") else "not running"
    console.print(f"ExaBGP {running}, restarted {exabgp.get('restarts', 0)} times")
    announcements = Table(title="announcements", title_justify="left")
    for column in ("prefix", "announced", "why", "since s"):
        announcements.add_column(column)
    for row in status["announcements"]:
        announced = "[green]yes[/]" if row["announced"] else "[red]no[/]"
        since = "" if row.get("since") is None else str(row["since"])
        announcements.add_row(row["prefix"], announced, escape(row["why"]), since)
    console.print(announcements)
    neighbors = Table(title="sessions", title_justify="left")
    for column in ("neighbor", "peer AS", "state", "since s"):
        neighbors.add_column(column)
    for row in status["neighbors"]:
        style = "green" if row["state"] == "established" else "red"
        since = "" if row.get("since") is None else str(row["since"])
        neighbors.add_row(row["address"], str(row["peer_as"]), f"[{style}]{row['state']}[/]", since)
    console.print(neighbors)


def _vrrp_table(status: dict[str, Any]) -> None:
    """`show vrrp`: this node's role, why, and the VIPs it holds."""
    from rich.table import Table

    console = _console()
    keepalived = status.get("keepalived")
    if keepalived is None:
        console.print("no [vrrp] in the configuration")
        return
    running = f"pid {keepalived['pid']}" if keepalived.get("pid") else "not running"
    console.print(f"keepalived {running}, restarted {keepalived.get('restarts', 0)} times")
    table = Table(title=f"VRRP router {status['virtual_router_id']} on {status['interface']}", title_justify="left")
    for column in ("state", "since s", "priority", "effective", "health", "why", "VIPs held here", "transitions"):
        table.add_column(column)
    style = {"MASTER": "green", "BACKUP": "yellow"}.get(status["state"], "red")
    table.add_row(
        f"[{style}]{status['state']}[/]",
        str(status["since"]),
        str(status["priority"]),
        str(status["effective_priority"]),
        status["health"],
        escape(status["why"]),
        ", ".join(status["held"]) or "none",
        str(status["transitions"]),
    )
    console.print(table)


def _peers_table(status: dict[str, Any]) -> None:
    """`show peers`: each other node, the link this node sends on, what came back."""
    from rich.table import Table

    console = _console()
    if status.get("bind") is None:
        console.print("no [peers] in the configuration")
        return
    console.print(f"listening on {status['bind']}; entries received: {status['received']}")
    table = Table(title="nodes", title_justify="left")
    for column in ("node", "link out", "since", "sent", "backlog", "link in", "received", "error"):
        table.add_column(column)
    for row in status["nodes"]:
        style = {"up": "green", "syncing": "yellow"}.get(row["state"], "red")
        table.add_row(
            row["address"],
            f"[{style}]{row['state']}[/]",
            time.strftime("%H:%M:%S", time.localtime(row["since"])),
            str(row["sent"]),
            str(row["backlog"]),
            "up" if row["inbound"] else "down",
            str(row["received"]),
            escape(row["error"]),
        )
    console.print(table)


def _dns_table(status: dict[str, Any]) -> None:
    """`show dns`: each name's answers, their health, and whether each is served now."""
    from rich.table import Table

    console = _console()
    if status.get("zone") is None:
        console.print("no [dns] in the configuration")
        return
    queries = ", ".join(f"{rcode} {count}" for rcode, count in sorted(status["queries"].items())) or "none yet"
    console.print(f"zone {status['zone']} on {', '.join(status['bind'])}; responses: {queries}")
    table = Table(title="answers", title_justify="left")
    for column in ("name", "type", "policy", "ttl", "address", "site", "weight", "health", "served", "check"):
        table.add_column(column)
    for record in status["records"]:
        for number, answer in enumerate(record["answers"]):
            first = number == 0
            health = "[green]up[/]" if answer["health"] == "up" else "[red]down[/]"
            served = "[green]yes[/]" if answer["served"] else "[red]no[/]"
            table.add_row(
                record["name"] if first else "",
                record["type"] if first else "",
                record["policy"] if first else "",
                str(record["ttl"]) if first else "",
                answer["address"],
                answer["site"],
                str(answer["weight"]),
                health,
                served,
                answer["check"],
            )
    console.print(table)


def _stats_tables(stats: dict[str, Any]) -> None:
    from rich.table import Table

    console = _console()
    console.print(f"generation {stats.get('generation')}, {stats.get('workers')} workers")
    frontends = Table(title="frontends", title_justify="left")
    classes = ("2xx", "3xx", "4xx", "5xx")
    for column in ("frontend", "mode", "connections", "requests", "denied", *classes):
        frontends.add_column(column)
    for row in stats["frontends"]:
        responses = row.get("responses", {})
        frontends.add_row(
            row["frontend"],
            row["mode"],
            str(row["connections"]),
            str(row["requests"]),
            str(row.get("denied", 0)),
            *(str(responses.get(c, 0)) for c in classes),
        )
    console.print(frontends)
    backends = Table(title="backends", title_justify="left")
    columns = (
        "backend",
        "balance",
        "usable",
        "active",
        "queued",
        "requests",
        *classes,
        "bytes in",
        "bytes out",
        "errors",
    )
    for column in columns:
        backends.add_column(column)
    for row in stats["backends"]:
        responses = row.get("responses", {})
        backends.add_row(
            row["backend"],
            row["balance"],
            f"{row['usable']}/{row['servers']}",
            str(row["active"]),
            str(row.get("queued", 0)),
            str(row["requests"]),
            *(str(responses.get(c, 0)) for c in classes),
            str(row["bytes_in"]),
            str(row["bytes_out"]),
            str(row["errors"]),
        )
    console.print(backends)
    _servers_table(stats["servers"])
