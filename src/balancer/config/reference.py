"""The configuration reference, generated from the model: `python -m balancer.config.reference`.

Walks `balancer.config.model.Config` table by table and writes one Markdown table per TOML
table: every key with its type, default, allowed values or bounds, and what it is for. The
explanation of a key is its `Field(description=...)` when it has one, else the comment on
(or the comment lines right above) its line in model.py, else the docstring of its type. So a key
added to the model appears here with no other edit, and tests/unit/config/test_config_reference.py
fails while docs/config-keys.md is older than the model.

Usage: `python -m balancer.config.reference [PATH]` writes PATH (default docs/config-keys.md);
`-` prints to stdout.
"""

from __future__ import annotations

import ast
import inspect
import io
import json
import sys
import tokenize
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from balancer.config import model, values

OUTPUT = Path("docs/config-keys.md")
COMMAND = "make docs"  # or: python -m balancer.config.reference

# Annotated value types of values.py, named by the parser that validates them.
_SCALARS: dict[Any, str] = {
    values.parse_duration: "duration",
    values.parse_positive_duration: "duration > 0",
    values.parse_size: "size",
    values.parse_address: "address",
    values.parse_network: "network",
}
_FORMATTERS: dict[Any, typing.Callable[[Any], str]] = {
    values.parse_duration: values.format_duration,
    values.parse_positive_duration: values.format_duration,
}

# Where configuration.md explains each table in practice.
_SECTIONS: dict[str, str] = {
    "Global": "global",
    "Admin": "admin",
    "Stats": "stats",
    "Frontend": "frontend",
    "FrontendTLS": "tls",
    "FrontendTimeouts": "timeouts",
    "Limits": "limits-and-queues-maxconn",
    "Rule": "frontendrule",
    "Condition": "frontendrule",
    "Redirect": "frontendrule",
    "Backend": "backend",
    "StickTable": "persistence-cookie-and-stick",
    "RateLimit": "rate-and-connection-limits",
    "ConnLimit": "rate-and-connection-limits",
    "Cookie": "persistence-cookie-and-stick",
    "Check": "health-check-agent-observe",
    "Observe": "health-check-agent-observe",
    "Agent": "health-check-agent-observe",
    "BackendTimeouts": "timeouts",
    "Server": "backendserver",
}

# Notes for keys whose line in model.py carries no comment (a comment or a Field description
# there wins: write one when adding a key, and it shows here after `make docs`).
_NOTES: dict[str, str] = {
    "L4.name": "names the table in logs and `ctl show l4`",
    "L4.vip": "the virtual IPv4 address balanced",
    "L4.ports": "TCP/UDP ports balanced; [] = every port",
    "L4.protocol": "the transport balanced",
    "L4.method": "`maglev` (consistent), `source` (client address), `roundrobin`, `random` (pf pools)",
    "L4.table_size": "slots of the lookup table: a prime, above 100 times the nodes for maglev",
    "L4.seed": "the jhash seed; the same on every L4 node of the tier",
    "L4.forward": "`vxlan` tunnel per node, `ipip` where the kernel has it, `direct` (same L2)",
    "L4.check": "health check of each L7 node's own address",
    "L4.node": "the L7 nodes",
    "L4Check.port": "the port probed on the L7 node",
    "L4Node.name": "the node's name",
    "L4Node.address": "the node's own IPv4 address (tunnel endpoint, check target)",
    "L4Node.weight": "its share of the table",
    "L4Node.vni": "VXLAN network id; default the low 16 bits of the address",
    "Dsr.vips": "VIPs put on loopback, never answered for in ARP",
    "Dsr.tunnel": "the decapsulation endpoint",
    "DsrTunnel.type": "`vxlan`, `ipip`, or `direct` (no tunnel)",
    "DsrTunnel.local": "this node's address the L4 nodes tunnel to",
    "DsrTunnel.vni": "VXLAN network id; default the low 16 bits of `local`",
    "Config.l4": "L4 node tables (kernel consistent hashing of flows to L7 nodes)",
    "Config.dsr": "this node is an L7 node behind an L4 tier",
    "Config.bgp": "announce this node's VIPs to routers through ExaBGP while it can serve them",
    "Bgp.router_id": "the BGP identifier of this node (an IPv4 address)",
    "Bgp.local_as": "this node's AS number (1 to 4294967295)",
    "Bgp.local_address": "this node's address the sessions start from",
    "Bgp.hold_time": "BGP hold time: 0 (no keepalives) or whole seconds from 3s",
    "Bgp.announce": "IPv4 prefixes; default every [[l4]] vip, else the frontends' IPv4 bind addresses (/32)",
    "Bgp.neighbor": "the routers",
    "BgpNeighbor.address": "the router's IPv4 address",
    "BgpNeighbor.peer_as": "the router's AS number",
    "BgpNeighbor.port": "the router's BGP port",
    "BgpNeighbor.passive": "wait for the router to connect instead of connecting",
    "Config.dns": "a health-aware authoritative DNS server for one zone",
    "Config.vrrp": "an active/passive pair: keepalived holds the VIPs on the healthy node of higher priority",
    "Vrrp.interface": "the network interface the VIPs go on and the adverts use",
    "Vrrp.virtual_router_id": "VRRP router id, 1 to 255: the same on both nodes, unique on the segment",
    "Vrrp.priority": "1 to 254; the healthy node of higher priority holds the VIPs",
    "Vrrp.advert_interval": "how often the holder advertises: 10ms to 40.95s in hundredths; 3 missed = failover",
    "Vrrp.vips": "the VIPs with their prefix on the interface, such as `10.0.3.100/24`",
    "Vrrp.unicast_peers": "the other nodes' addresses for unicast adverts; `[]` = multicast",
    "Vrrp.unicast_src": "this node's address for unicast adverts; default the interface's first address",
    "Vrrp.preempt": "a healthy node of higher priority takes the VIPs back",
    "Vrrp.track_interval": "how often balancer tells keepalived its health (at most 1s)",
    "Dns.zone": "the zone answered for, such as `example.com`; other names are REFUSED",
    "Dns.soa": "the zone's SOA record",
    "Dns.record": "the names answered, one table per name and type",
    "Dns.site": "client sites for `nearest`: which client addresses belong where",
    "DnsRecord.type": "`A` (IPv4 answers) or `AAAA` (IPv6 answers)",
    "DnsRecord.policy": "`all` healthy answers rotated, `weighted` one by weight, `nearest` the client's site first",
    "DnsRecord.answers": "the addresses, each `{ address, site, weight, check }`",
    "DnsAnswer.address": "an IPv4 (A) or IPv6 (AAAA) address",
    "DnsCheck.port": "the port probed on the answer's address",
    "DnsSite.name": "the site's name, used by answers' `site`",
    "DnsSoa.serial": "the zone's serial number",
    "DnsSoa.refresh": "SOA refresh timer (secondaries)",
    "DnsSoa.retry": "SOA retry timer (secondaries)",
    "Global.log_facility": "syslog facility of the access lines (HAProxy's names, kern … local7)",
    "Frontend.backlog": "listen queue of each bind address (capped by net.core.somaxconn)",
    "Frontend.buffer_request": "read the request body (up to limits.body, else 1 MiB) before choosing a server",
    "Frontend.rate_limit": "requests per client address (TCP mode: connections); over it 429 + Retry-After or a tarpit",
    "Frontend.conn_limit": "open and new connections per client address; over it 429 then close (TCP: close)",
    "RateLimit.requests": "steady rate: requests per `per`",
    "RateLimit.per": "the period of `requests`",
    "RateLimit.burst": "requests over the steady rate a client may send at once (burst + 1 pass at once)",
    "RateLimit.by": "what identifies a client: its source address",
    "RateLimit.action": "over the rate: deny (429, Retry-After) or tarpit (hold timeouts.tarpit, then 429 and close)",
    "RateLimit.allow": "client networks (CIDR) exempt from rate_limit",
    "ConnLimit.per_src": "open connections per client address at most (0: no limit)",
    "ConnLimit.rate": "new connections per client address per `per` at most (0: no limit)",
    "ConnLimit.per": "the period of `rate`",
    "ConnLimit.allow": "client networks (CIDR) exempt from conn_limit",
    "FrontendTimeouts.tarpit": "how long rate_limit's tarpit holds a request before its 429 (HAProxy timeout tarpit)",
    "Frontend.monitor_uri": "a path balancer answers itself: 200, or 503 while stopping or disabled",
    "Frontend.errorfiles": "status → file holding a whole raw HTTP response, sent instead of the built-in page",
    "Frontend.response_rule": "response header rules, applied after the backend's",
    "Rule.add_header": "request headers to add (keeping existing ones)",
    "Rule.realm": 'the realm of `action = "auth"`',
    "BackendRule.if": "the conditions that must match",
    "BackendRule.unless": "the conditions that must not match",
    "BackendRule.action": "`deny` answers 403 (TCP: closes); `allow` stops the rules; `auth` answers 401",
    "BackendRule.realm": 'the realm of `action = "auth"`',
    "BackendRule.redirect": "answer with a redirect",
    "BackendRule.set_header": "request headers to set (replacing)",
    "BackendRule.add_header": "request headers to add (keeping existing ones)",
    "BackendRule.del_header": "request headers to remove",
    "Condition.ignore_case": "every string test of this table ignores case (HAProxy -i)",
    "Condition.path_sub": "substrings of the path",
    "Condition.path_dir": "`/`-delimited segment sequences of the path",
    "Condition.host_beg": "Host prefixes (port ignored)",
    "Condition.host_end": "Host suffixes (port ignored)",
    "Condition.hdr_beg": "header name → value prefixes",
    "Condition.hdr_end": "header name → value suffixes",
    "Condition.hdr_sub": "header name → value substrings",
    "Condition.hdr_reg": "header name → regular expressions searched in the value",
    "Condition.url_param": "query parameter → values; an empty list = present",
    "Condition.dst_port": "the local port the client connected to",
    "Condition.ssl": "the client connection is TLS (HAProxy ssl_fc)",
    "Condition.http_auth": "the request carries valid Basic credentials of this userlist",
    "ResponseCondition.status": "response statuses",
    "Redirect.scheme": "redirect to the same URL with this scheme (`https`)",
    "Redirect.prefix": "redirect to this prefix followed by the request's path and query",
    "ResponseRule.if": "the conditions that must match (request and response status)",
    "ResponseRule.unless": "the conditions that must not match",
    "ResponseRule.set_header": "response headers to set (replacing)",
    "ResponseRule.add_header": "response headers to add",
    "ResponseRule.del_header": "response headers to remove",
    "User.name": "the user name",
    "User.password": "the password in clear (HAProxy insecure-password)",
    "User.password_hash": "a crypt(3) hash: $1$, $5$, $6$, $2b$/$2y$",
    "Userlist.name": "referenced by `http_auth` conditions",
    "Userlist.user": "the users",
    "Cookie.indirect": "insert mode: the server never sees the cookie",
    "Cookie.preserve": "leave a server's own Set-Cookie of this name untouched",
    "Cookie.postonly": "insert only on responses to POST",
    "Backend.persist": "a client pinned to a down or maint server stays pinned (HAProxy option persist)",
    "Backend.rule": "rules evaluated after the frontend's (no use_backend)",
    "Backend.response_rule": "response header rules, applied before the frontend's",
    "Backend.errorfiles": "status → raw HTTP response file; wins over the frontend's",
    "Config.userlist": "users for `auth` rules and `http_auth` conditions",
    "Global.workers": "worker processes sharing the listeners; 0 = one per CPU",
    "Global.grace": "how long a stop or reload waits for requests in flight",
    "Global.log": '`"stdout"`, `"stderr"`, `"none"`, `"file:/path"` or `"syslog:udp://HOST:PORT"`',
    "Global.log_format": "access log as HAProxy httplog text or one JSON object per line",
    "Global.maxconn": "client connections of the node (all workers); accepting pauses at it",
    "Global.user": "drop privileges to this user after binding",
    "Global.group": "drop privileges to this group after binding",
    "Global.tls_session_cache": "TLS sessions all workers share when tickets are off (1 KiB each); 0: per worker",
    "Global.disable_file": "while this file exists, `/health` answers 503",
    "Admin.socket": "unix socket of the admin API (`balancer ctl --socket`)",
    "Admin.bind": "the admin API over TCP, with `/metrics` and `/health`",
    "Stats.bind": "where the stats page listens; not set = no stats page",
    "Stats.uri": "path of the stats page",
    "Stats.auth": "basic-auth credentials of the stats page",
    "Stats.refresh": "how often the page polls (at least every 500 ms)",
    "Auth.user": "basic-auth user name",
    "Auth.password": "basic-auth password (the file holds it in clear: restrict its mode)",
    "Frontend.name": "used in logs, metrics and the admin API",
    "Frontend.bind": "addresses to listen on (one string is accepted too)",
    "Frontend.mode": '`"http"` (L7 proxy) or `"tcp"` (byte relay)',
    "Frontend.default_backend": "backend for requests no rule sends elsewhere",
    "Frontend.maxconn": "client connections of this frontend, all workers; 0 = only the global limit",
    "Frontend.accept_proxy": "expect a PROXY protocol v1/v2 header before the client's bytes",
    "Frontend.tls": "terminate TLS; several certificates are chosen by SNI",
    "Frontend.h2c": "also accept cleartext HTTP/2 with prior knowledge (the connection preface)",
    "Frontend.forwardfor": "add X-Forwarded-For and X-Forwarded-Proto",
    "Frontend.rule": "evaluated in order; the first matching rule acts",
    "FrontendTLS.cert": "PEM files holding certificate chain and key",
    "FrontendTLS.alpn": 'protocols offered in ALPN: "h2" (HTTP/2), "http/1.1", "http/1.0"',
    "FrontendTLS.ciphers": 'OpenSSL cipher list for TLS 1.2; "" = Mozilla intermediate',
    "FrontendTLS.ciphersuites": 'TLS 1.3 suites in the server\'s order, colon-separated; "" = Mozilla intermediate',
    "FrontendTLS.min_version": "oldest TLS version accepted",
    "FrontendTLS.client_ca": "CA file to verify client certificates",
    "FrontendTLS.verify_client": "whether a client certificate is asked for or required",
    "FrontendTLS.tickets": "stateless session tickets; false: resumption from each worker's session cache",
    "FrontendTLS.curves": "key-exchange groups, colon-separated, in the server's order; empty: Mozilla's",
    "FrontendTLS.ticket_keys": "session ticket keys file (HAProxy tls-ticket-keys); default: the master's keys",
    "FrontendTLS.prefer_client_ciphers": "the client's order picks the cipher and TLS 1.3 suite, not the server's",
    "FrontendTimeouts.client": "client inactivity",
    "FrontendTimeouts.http_request": "whole request head; past it 408",
    "FrontendTimeouts.http_keep_alive": "idle time between requests on a kept-alive connection",
    "FrontendTimeouts.tunnel": "inactivity of a WebSocket/Upgrade tunnel",
    "Limits.request_line": "past it 414",
    "Limits.headers": "bytes of the request head; past it 431",
    "Limits.header_count": "past it 431",
    "Rule.if": "the conditions that must match",
    "Rule.unless": "the conditions that must not match",
    "Rule.use_backend": "send matching requests to this backend",
    "Rule.action": "`deny` answers 403 (TCP: closes); `allow` stops the rules and uses `default_backend`",
    "Rule.redirect": "answer with a redirect",
    "Rule.set_header": "request headers to set (replacing)",
    "Rule.del_header": "request headers to remove",
    "Condition.path": "exact paths",
    "Condition.path_beg": "path prefixes",
    "Condition.path_end": "path suffixes",
    "Condition.path_reg": "regular expressions searched (unanchored) in the path",
    "Condition.host": "Host header values (port ignored)",
    "Condition.hdr": "header name → whole values; an empty list = present",
    "Condition.method": "request methods",
    "Condition.src": "client addresses or networks (the only condition in TCP mode)",
    "Condition.query": 'whole query strings (`[""]`: no query)',
    "Redirect.location": "the Location header",
    "Redirect.code": "the status",
    "Backend.name": "used by `default_backend`, `use_backend`, logs and the admin API",
    "Backend.mode": "must match the frontends that use it",
    "Backend.balance": "the algorithm (configuration.md, Algorithms)",
    "Backend.hash_key": "what hash algorithms hash: `src`, `uri`, `5tuple`, `url_param(n)`, `hdr(n)`, `cookie(n)`",
    "Backend.hash_type": '`"map"` (modulo) or `"consistent"` (minimal disruption)',
    "Backend.stick": "stick table on the client address (shared by every worker, kept across reloads)",
    "Backend.cookie": "persistence cookie naming the server",
    "Backend.check": "active health check",
    "Backend.observe": "passive health: consecutive failures eject a server",
    "Backend.agent": "HAProxy-style agent check",
    "Backend.retries": "connection attempts after the first fails",
    "Backend.redispatch": "retry on another server",
    "Backend.send_proxy": '`"v1"` or `"v2"`: send a PROXY header to servers',
    "Backend.source": "local addresses spread over server connections",
    "Backend.pool": "idle keep-alive connections to servers",
    "Backend.server": "the servers",
    "StickTable.on": "the key of the table",
    "StickTable.expire": "an entry unused this long is forgotten",
    "StickTable.size": "entries per worker",
    "Cookie.name": "the cookie's name",
    "Cookie.mode": "`insert` a cookie, `prefix` or `rewrite` the application's",
    "Cookie.httponly": "add HttpOnly",
    "Cookie.secure": "add Secure",
    "Cookie.maxidle": "an inserted cookie idle longer is ignored; 0 = never",
    "Cookie.maxlife": "an inserted cookie older is ignored; 0 = never",
    "Cookie.nocache": "add `Cache-Control: private` to responses that set it",
    "Check.type": "`tcp` connect or `http` request",
    "Check.method": "HTTP method of the probe",
    "Check.path": "HTTP path of the probe",
    "Check.host": 'Host header of the probe; "" = the server address',
    "Check.expect": 'status, list of statuses or a class such as `"2xx"`',
    "Check.body": "regular expression the answer must contain",
    "Check.interval": "between probes",
    "Check.fastinterval": "between probes while a state change is in progress",
    "Check.downinterval": "between probes of a down server",
    "Check.rise": "successes before a down server is up",
    "Check.fall": "failures before an up server is down",
    "Check.timeout": "of one probe",
    "Check.ssl": "probe over TLS",
    "Observe.errors": "consecutive failures that eject a server",
    "Observe.cooldown": "how long an ejection lasts",
    "Observe.max_ejected": "at most this share of the servers ejected at once",
    "Agent.port": "TCP port of the agent on the server's host",
    "Agent.interval": "between agent queries",
    "Agent.address": '"" = the server\'s address',
    "BackendTimeouts.connect": "to connect to a server",
    "BackendTimeouts.server": "server inactivity; past it 504",
    "BackendTimeouts.queue": "waiting for a free server slot; past it 503",
    "Pool.max_idle_per_server": "idle connections kept per server and worker",
    "Pool.idle_timeout": "an idle pooled connection is closed after this",
    "Server.name": "used in logs, cookies, metrics and the admin API",
    "Server.address": "where to connect",
    "Server.weight": "share of the traffic; 0 = none",
    "Server.maxconn": "concurrent requests, all workers; excess requests queue; 0 = unlimited",
    "Server.backup": "serves only while no primary server is usable",
    "Server.slowstart": "ramp the weight up over this time after the server comes up",
    "Server.ssl": "TLS to this server",
    "Server.ca_file": 'CA file to verify the server; "" = the system store',
    "Server.sni": 'SNI sent and verified; "" = the host of `address`',
    "Server.state": "administrative state at start (runtime changes survive a reload when this is unchanged)",
}

_HEADER = """\
# Configuration keys

<!-- Generated from src/balancer/config/model.py by `{command}` (python -m balancer.config.reference).
     Do not edit: tests/unit/config/test_config_reference.py fails when this file is stale. -->

Every table and key `balancer check` accepts, generated from the configuration model, so it
always matches the code. What each setting does in practice (and what an HAProxy or NGINX
user should know about it) is in [configuration.md](configuration.md); the whole user contract
is in [reference.md](reference.md). Unknown keys are refused with `FILE:LINE`.

A key with default "required" must be written. Types ([value syntax](configuration.md#value-syntax)):

- *duration*: a string with a unit, `"250us"`, `"500ms"`, `"5s"`, `"2m"`, `"1h"`, `"1d"`; a bare
  number is refused. `"0s"` means "no limit" for a timeout; a *duration > 0* refuses it.
- *size*: bytes, or a string with `k`, `m`, `g` (powers of 1024): `"64k"`.
- *address*: `"127.0.0.1:8080"`, `"[::1]:8080"`, `":8080"` (every address), `"host:80"`, `"unix:/path"`.
- *network*: `"10.0.0.0/8"`, or one address.
- *table*: written as `[name]` on its own or inline, `timeouts = {{ connect = "2s" }}`.

The tables of the tiers beyond one machine: `[[l4]]`, `[dsr]`, `[bgp]`, `[dns]` and `[vrrp]` are
run by `balancer run` (`[[l4]]`, `[dsr]` and `[vrrp]` as root); `[peers]` is **not built yet**: see
[reference.md](reference.md#the-tiers-beyond-one-machine).
"""


@dataclass(frozen=True)
class Key:
    name: str
    type: str
    default: str
    description: str


@dataclass(frozen=True)
class Table:
    path: str  # as written in TOML: "[global]", "[[frontend]]", "frontend.tls"
    model: type[BaseModel]
    also: tuple[str, ...]  # other places the same table is written (a Condition is `if` and `unless`)
    keys: tuple[Key, ...]


def _source_notes(module: types.ModuleType) -> dict[tuple[str, str], str]:
    """(class, field) -> the comment on the field's line, or the comment lines right above it."""
    source = inspect.getsource(module)
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    notes: dict[tuple[str, str], str] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        for statement in node.body:
            if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
                continue
            above: list[str] = []
            line = statement.lineno - 1
            while line >= 1 and lines[line - 1].strip().startswith("#") and line in comments:
                above.insert(0, comments[line])
                line -= 1
            trailing = comments.get(statement.end_lineno or statement.lineno, "")
            text = " ".join([*above, trailing]).strip()
            if text:
                notes[(node.name, statement.target.id)] = text
    return notes


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _without_none(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return [annotation]


def _nested_models(annotation: Any) -> Iterator[tuple[type[BaseModel], bool]]:
    """The models a field holds: (model, written as an array of tables)."""
    for arg in _without_none(annotation):
        if _is_model(arg):
            yield arg, False
        elif typing.get_origin(arg) is list and _is_model(typing.get_args(arg)[0]):
            yield typing.get_args(arg)[0], True


def _validator(metadata: list[Any]) -> Any:
    for item in metadata:
        function = getattr(item, "func", None)
        if function in _SCALARS:
            return function
    return None


def _type_text(annotation: Any, metadata: list[Any]) -> str:
    validator = _validator(metadata)
    if validator is not None:
        return _SCALARS[validator]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        inner, *extra = typing.get_args(annotation)
        return _type_text(inner, list(extra))
    if origin is Literal:
        return "one of " + ", ".join(f"`{json.dumps(value)}`" for value in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        parts = [_type_text(arg, []) for arg in _without_none(annotation)]
        return " or ".join(parts)
    if origin is list:
        return f"list of {_type_text(typing.get_args(annotation)[0], [])}"
    if origin is dict:
        key, value = typing.get_args(annotation)
        return f"table of {_type_text(key, [])} → {_type_text(value, [])}"
    if _is_model(annotation):
        return "table"
    names = {bool: "boolean", int: "integer", float: "number", str: "string"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _code(text: str) -> str:
    """`text` as a Markdown code span; one holding backticks is fenced with two and spaces."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _bounds(field: FieldInfo) -> str:
    parts: list[str] = []
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            parts.append(f"≥ {item.ge}")
        elif isinstance(item, annotated_types.Gt):
            parts.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Le):
            parts.append(f"≤ {item.le}")
        elif isinstance(item, annotated_types.Lt):
            parts.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.MinLen):
            parts.append(f"at least {item.min_length} entr{'y' if item.min_length == 1 else 'ies'}")
        elif isinstance(item, annotated_types.MaxLen):
            parts.append(f"at most {item.max_length} entries")
        elif (pattern := getattr(item, "pattern", None)) is not None:
            parts.append(f"matching {_code(pattern)}")
    return ", ".join(parts)


def _default_text(field: FieldInfo, annotation: Any) -> str:
    if field.is_required():
        return "required"
    default = field.get_default(call_default_factory=True)
    if default is None:
        return "not set"
    if isinstance(default, BaseModel):
        return "see its table"
    validators = [_validator(field.metadata)]
    if typing.get_origin(annotation) is typing.Annotated:
        validators.append(_validator(list(typing.get_args(annotation)[1:])))
    for validator in validators:
        if validator in _FORMATTERS:
            return f"`{json.dumps(_FORMATTERS[validator](default))}`"
    if default is PydanticUndefined:
        return "required"
    return f"`{json.dumps(default, default=str)}`"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def tables(root: type[BaseModel] = model.Config) -> list[Table]:
    """Every table under `root`, depth first in the model's order; a model met again is listed once."""
    notes = _source_notes(model)
    found: dict[type[BaseModel], tuple[str, list[str]]] = {}
    order: list[type[BaseModel]] = []

    def visit(current: type[BaseModel], path: str) -> None:
        for name, field in current.model_fields.items():
            key = field.alias or name
            for nested, is_array in _nested_models(field.annotation):
                written = f"{path}.{key}" if path else key
                if nested in found:
                    found[nested][1].append(written)
                    continue
                found[nested] = (written, [])
                order.append(nested)
                visit(nested, written)
                if is_array:
                    found[nested] = (f"[[{written}]]", found[nested][1])
                elif "." not in written:
                    found[nested] = (f"[{written}]", found[nested][1])

    visit(root, "")
    result: list[Table] = []
    for current in order:
        keys: list[Key] = []
        for name, field in current.model_fields.items():
            annotation = field.annotation
            type_text = _type_text(annotation, list(field.metadata))
            if bounds := _bounds(field):
                type_text += f" ({bounds})"
            description = (
                field.description
                or notes.get((current.__name__, name), "")
                or next(
                    (
                        _NOTES[f"{base.__name__}.{name}"]
                        for base in current.__mro__
                        if f"{base.__name__}.{name}" in _NOTES
                    ),
                    "",
                )
            )
            if not description:
                for nested, _ in _nested_models(annotation):
                    description = f"see `{found[nested][0]}`"
            keys.append(Key(field.alias or name, type_text, _default_text(field, annotation), description))
        path, also = found[current]
        result.append(Table(path, current, tuple(also), tuple(keys)))
    return result


def render() -> str:
    """docs/config-keys.md as it must read for the model in this checkout."""
    out = [_HEADER.format(command=COMMAND)]
    for table in tables():
        out.append(f"## `{table.path}`\n")
        doc = inspect.getdoc(table.model)
        if doc and table.model.__doc__ is not None and table.model.__doc__ is not BaseModel.__doc__:
            out.append(" ".join(doc.split()) + "\n")
        if (section := _SECTIONS.get(table.model.__name__)) is not None:
            out.append(f"In practice: [configuration.md](configuration.md#{section}).\n")
        if table.also:
            out.append("Also written as " + ", ".join(f"`{path}`" for path in table.also) + ".\n")
        out.append("| key | type | default | notes |\n|---|---|---|---|")
        out.extend(
            f"| `{key.name}` | {_escape(key.type)} | {_escape(key.default)} | {_escape(key.description)} |"
            for key in table.keys
        )
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str]) -> int:
    target = argv[0] if argv else str(OUTPUT)
    text = render()
    if target == "-":
        sys.stdout.write(text)
        return 0
    Path(target).write_text(text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
