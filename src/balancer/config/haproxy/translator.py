"""Sections of an haproxy.cfg -> our TOML (the translator of `balancer import-haproxy`).

`translate` walks the sections the way HAProxy reads them: a `defaults` section sets
what every later proxy inherits (mode, timeouts, options, retries, balance, ...); a
`listen` is a frontend plus a backend of the same name; HAProxy's evaluation order of a
proxy's rules (tcp-request, http-request, redirect, use_backend) becomes the order of
`[[frontend.rule]]` / `[[backend.rule]]`. ACL conditions become `if`/`unless` tables
(acl.py), several rules when a condition is an OR of things one table cannot say.

Everything that has no equivalent is skipped and named, one line each, as
`FILE:LINE: cannot translate: <directive>`; a translation whose meaning differs a little
from HAProxy's says so as `FILE:LINE: note: ...`. A skipped directive that allows, denies,
redirects, authenticates or strips is a loss (weaker.py): the import fails unless the
operator accepts it. `validate` runs our own loader on the result: the output of the
translator must always be a valid configuration.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import tomllib
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from balancer.config.haproxy.acl import Decl, condition_tables, parse_criterion
from balancer.config.haproxy.conditions import DEFAULT_VERSION, Conditions
from balancer.config.haproxy.keys import product_keys
from balancer.config.haproxy.parse import Section, SourceLine, parse_haproxy
from balancer.config.haproxy.weaker import weakens_when_lost
from balancer.config.load import ConfigError, addresses_overlap, parse_config
from balancer.config.model import TLS_LISTS, Global, client_speaks_first, unknown_names
from balancer.config.values import Address, parse_address

__all__ = ["Translation", "serves", "translate", "validate"]

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
# Given an HAProxy log-format template: why balancer cannot write it, or "" (the stats layer
# knows; the CLI passes its check in, config imports nothing above it).
LogFormatCheck = Callable[[str], str]

# -- intermediate state --------------------------------------------------------------------


@dataclass
class _Bind:
    line: SourceLine
    addresses: list[str]
    certs: list[str] = field(default_factory=list)
    alpn: list[str] | None = None
    ciphers: str = ""
    ciphersuites: str = ""
    curves: str = ""
    min_version: str = ""
    client_ca: str = ""
    verify: str = ""
    tickets: bool | None = None  # None: the global default (ssl-default-bind-options)
    ticket_keys: str = ""  # tls-ticket-keys
    client_order: bool = False  # prefer-client-ciphers
    accept_proxy: bool = False
    defer_accept: bool = False
    ssl: bool = False

    def group(self) -> tuple[Any, ...]:
        tls = (
            tuple(self.certs),
            tuple(self.alpn or ()),
            self.ciphers,
            self.ciphersuites,
            self.curves,
            self.min_version,
            self.client_ca,
            self.verify,
            self.tickets,
            self.ticket_keys,
            self.client_order,
        )
        return (self.ssl, tls if self.ssl else (), self.accept_proxy, self.defer_accept)


@dataclass
class _PendingRule:
    phase: int  # 0 tcp-request connection, 1 tcp-request content, 2 http-request, 3 redirect, 4 use_backend
    line: SourceLine
    action: dict[str, Any]
    condition: tuple[str, list[str]] | None  # ("if" | "unless", words)


@dataclass
class _Proxy:
    kind: str
    name: str
    header: SourceLine | None = None
    mode: str | None = None
    binds: list[_Bind] = field(default_factory=list)
    maxconn: int | None = None
    frontend_timeouts: dict[str, str] = field(default_factory=dict)
    backend_timeouts: dict[str, str] = field(default_factory=dict)
    tunnel_line: SourceLine | None = None
    check_timeout: str | None = None
    forwardfor: bool | None = None
    redispatch: bool | None = None
    retries: int | None = None
    balance: str | None = None
    hash_key: str | None = None
    hash_type: str | None = None
    balance_factor: bool = False
    httpchk: dict[str, Any] | None = None
    check_expect: int | str | None = None
    check_body: str = ""
    cookie: dict[str, Any] | None = None
    cookie_line: SourceLine | None = None
    stick_table: dict[str, Any] | None = None
    stick_table_line: SourceLine | None = None
    stick_on: bool = False
    default_server: list[tuple[SourceLine, list[str]]] = field(default_factory=list)
    # each server line with the number of default-server lines before it (they apply to it)
    servers: list[tuple[SourceLine, list[str], int]] = field(default_factory=list)
    acls: dict[str, list[Decl]] = field(default_factory=dict)
    acl_notes: dict[str, list[str]] = field(default_factory=dict)  # where a translation is approximate
    rules: list[_PendingRule] = field(default_factory=list)
    response_rules: list[_PendingRule] = field(default_factory=list)
    forwarded_proto: list[SourceLine] = field(default_factory=list)  # set-header X-Forwarded-Proto http(s)
    monitor_uri: str = ""
    errorfiles: dict[str, str] = field(default_factory=dict)
    persist: bool | None = None
    buffer_request: bool = False
    default_backend: str | None = None
    default_backend_line: SourceLine | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    stats_line: SourceLine | None = None
    host: str = ""
    source: list[str] = field(default_factory=list)
    reuse_never: bool = False
    header_count: int | None = None


@dataclass
class Translation:
    """The TOML text and what could not be translated, as `FILE:LINE: message` lines.

    `losses` are directives that allow, deny, redirect, authenticate or strip and could not
    be translated: without them the configuration is weaker than its source, so the import
    fails unless the operator accepts them (then they are comments in `toml`). `errors` are
    what HAProxy itself would refuse (a `.if` it cannot read): the import fails."""

    toml: str
    warnings: list[str]
    losses: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def messages(self) -> list[str]:
        """Warnings, losses and errors in line order (for people reading them together)."""

        def line_of(message: str) -> int:
            number = message.split(":")[1] if message.count(":") >= 2 else "0"
            return int(number) if number.isdigit() else 0

        return sorted(self.warnings + self.losses + self.errors, key=line_of)


# -- values ----------------------------------------------------------------------------------


def _duration(word: str) -> str | None:
    """HAProxy time -> our duration string: a bare number is milliseconds."""
    match = re.fullmatch(r"(\d+)(us|ms|s|m|h|d)?", word)
    if match is None:
        return None
    return f"{match.group(1)}{match.group(2) or 'ms'}"


def _seconds(duration: str) -> float:
    """One of our duration strings (as written by `_duration`) in seconds."""
    match = re.fullmatch(r"(\d+)(us|ms|s|m|h|d)", duration)
    assert match is not None
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}[match.group(2)]
    return int(match.group(1)) * scale


def _positive_duration(word: str) -> str | None:
    """_duration, but None for zero: an interval, a refresh or an expiry of 0 (HAProxy
    refuses `inter 0`; balancer refuses a zero check interval, which would spin a core)."""
    duration = _duration(word)
    return duration if duration is not None and int(re.sub(r"\D", "", duration)) > 0 else None


def _integer(word: str) -> int | None:
    return int(word) if re.fullmatch(r"\d+", word) else None


def _size(word: str) -> int | None:
    """HAProxy sizes: k, m, g are powers of 1024."""
    match = re.fullmatch(r"(\d+)([kmgKMG]?)", word)
    if match is None:
        return None
    return int(match.group(1)) << (10 * " kmg".index(match.group(2).lower() or " "))


def _address(word: str, *, listening: bool) -> tuple[str | None, str]:
    """HAProxy address -> ours, or (None, reason)."""
    text = word
    for prefix in ("ipv4@", "ipv6@", "tcp@", "tcp4@", "tcp6@"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    if text.startswith("unix@"):
        return f"unix:{text[5:]}", ""
    if text.startswith("/"):
        return f"unix:{text}", ""
    if "@" in text or "$" in text:
        return None, f"address {word!r} is not available"
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            return None, f"address {word!r} has no port"
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            return None, f"address {word!r} has no port"
    if "-" in port and listening:
        return None, f"port range {word!r} is not available"
    if port.startswith(("+", "-")):
        return None, f"port offset {word!r} is not available"
    if not port.isdigit():
        return None, f"address {word!r} has no port"
    if not 0 < int(port) < 65536:
        return None, f"port {port} of {word!r} is not between 1 and 65535"
    if host == "*":
        host = ""
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return None, f"{host!r} is not an IPv4 address"
    elif host and ":" not in host and not re.fullmatch(r"[A-Za-z0-9_]([A-Za-z0-9_.\-]*[A-Za-z0-9_])?", host):
        return None, f"{host!r} is not an address or a host name"
    result = f"[{host}]:{port}" if host == "::" or (host and ":" in host) else f"{host}:{port}"
    try:
        parse_address(result)
    except ValueError as exc:
        return None, f"address {word!r}: {exc}"
    return result, ""


def _name(word: str) -> str:
    return word if _NAME.match(word) else re.sub(r"[^A-Za-z0-9_.\-]", "_", word) or "_"


def _toml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_\-]+", key) else _toml_string(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


# -- the translator --------------------------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_SERVER_ARG_OPTIONS = _words(
    """weight inter fastinter downinter rise fall cookie maxconn slowstart verify ca-file sni agent-port
    agent-inter agent-addr agent-send port addr id maxqueue minconn on-error on-marked-down on-marked-up
    error-limit observe resolvers resolve-prefer resolve-net resolve-opts init-addr track redir crt alpn
    check-alpn check-sni check-proto ciphers ciphersuites proto source usesrc ssl-min-ver ssl-max-ver
    pool-max-conn pool-purge-delay pool-low-conn max-reuse tcp-ut namespace log-proto socks4 ws
    proxy-v2-options curves sigalgs client-sigalgs crl-file shard guid hash-key npn set-proxy-v2-tlv-fmt
    interface"""
)
_BIND_ARG_OPTIONS = _words(
    """crt crt-list ca-file crl-file verify alpn npn ciphers ciphersuites tls-ticket-keys ssl-min-ver ssl-max-ver curves
    ecdhe name id maxconn process thread backlog mss interface namespace nice tcp-ut user group uid gid
    mode level severity-output accept-netscaler-cip ca-sign-file ca-sign-pass ca-ignore-err crt-ignore-err
    proto sigalgs client-sigalgs expose-fd guid-prefix label shards"""
)
_FRONTEND_TIMEOUTS = {
    "client": "client",
    "http-request": "http_request",
    "http-keep-alive": "http_keep_alive",
    "tunnel": "tunnel",
}
_BACKEND_TIMEOUTS = {"connect": "connect", "server": "server", "queue": "queue"}
_SILENT_OPTIONS = frozenset({"httplog", "tcplog", "dontlognull", "http-keep-alive", "allbackups"})
_FRAMING_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade", "proxy-connection"}
)
_FACILITIES = frozenset(typing.get_args(Global.model_fields["log_facility"].annotation))  # the names the model accepts
_TLS_VERSIONS = {"TLSv1.0": "1.2", "TLSv1.1": "1.2", "TLSv1.2": "1.2", "TLSv1.3": "1.3", "SSLv3": "1.2"}


class _Translator:
    def __init__(
        self, file: str, base_dir: Path | None, keys: frozenset[str], log_format_problem: LogFormatCheck | None
    ) -> None:
        self.file = file
        self.base_dir = base_dir
        # why balancer cannot write a log-format template (None: it can); None: not translated
        self.log_format_problem = log_format_problem
        self.log_formats: dict[str, SourceLine] = {}  # each distinct log-format, where first seen
        self.keys = keys  # the keys of issue #13 our model accepts (haproxy_keys)
        self.userlists: list[tuple[SourceLine, dict[str, Any]]] = []
        # (line, message) -> "note" | "skip" | "loss", in the order found
        self.messages: dict[tuple[int, str], str] = {}
        self.errors: list[tuple[int, str]] = []
        self.global_: dict[str, Any] = {}
        self.global_line: SourceLine | None = None
        self.admin: dict[str, Any] = {}
        self.crt_base = ""
        self.ca_base = ""
        self.default_ciphers = ""
        self.default_ciphersuites = ""
        self.default_curves = ""
        self.default_min_version = ""
        self.default_tickets = True
        self.default_client_order = False
        self.header_count: int | None = None
        self.proxies: list[_Proxy] = []
        self.stats: dict[str, Any] | None = None
        self.stats_source: SourceLine | None = None
        self.forwarding: dict[str, bool] = {}
        self.listeners: list[tuple[Address, SourceLine]] = []

    # messages
    def skip(self, line: SourceLine, what: str | None = None, reason: str = "", *, loss: bool | None = None) -> None:
        """Name a directive (or part of one: `what`) that is not translated. It is a loss
        (the import fails unless accepted) when `loss`, or by default when the directive
        allows, denies, redirects, authenticates or strips."""
        text = what if what is not None else line.text
        weaker = weakens_when_lost(line.words) if loss is None else loss
        message = f"cannot translate: {_one_line(text)}" + (f" ({reason})" if reason else "")
        self.messages[(line.number, message)] = "loss" if weaker else "skip"

    def note(self, line: SourceLine, message: str) -> None:
        self.messages.setdefault((line.number, f"note: {message}"), "note")

    def error(self, number: int, message: str) -> None:
        self.errors.append((number, message))

    def lines(self, *kinds: str) -> list[str]:
        ordered = sorted((key for key, kind in self.messages.items() if kind in kinds), key=lambda item: item[0])
        return [f"{self.file}:{number}: {message}" for number, message in ordered]

    # files named in the config
    def file_name(self, line: SourceLine, name: str, base: str, what: str) -> str:
        if base and not name.startswith("/"):
            name = f"{base.rstrip('/')}/{name}"
        if self.base_dir is not None and not (self.base_dir / name).exists():
            self.note(line, f"{what} {name!r} not found here: balancer check will want it")
        return name

    # sections
    def run(self, text: str, haproxy_version: str) -> None:
        conditions = Conditions(haproxy_version)
        sections, orphans = parse_haproxy(text, conditions)
        for number, message, fatal in conditions.messages:
            if fatal:
                self.error(number, message)
            else:
                self.messages.setdefault((number, message), "note")
        for line in orphans:
            self.skip(line, reason="outside any section")
        defaults = _Proxy("defaults", "")
        for section in sections:
            if section.kind == "global":
                self.global_line = self.global_line or section.header
                for line in section.lines:
                    self.global_directive(line)
            elif section.kind == "defaults":
                defaults = _Proxy("defaults", section.name, section.header)
                if len(section.header.words) > 2:
                    self.skip(section.header, reason="named defaults with 'from' are not translated")
                for line in section.lines:
                    self.directive(defaults, line)
            elif section.kind in ("frontend", "backend", "listen"):
                proxy = copy.deepcopy(defaults)
                proxy.kind, proxy.name, proxy.header = section.kind, section.name, section.header
                if not section.name:
                    self.skip(section.header, reason="a section without a name")
                    continue
                if len(section.header.words) > 2:
                    self.skip(section.header, " ".join(section.header.words[2:]), "in a section header")
                for line in section.lines:
                    self.directive(proxy, line)
                self.proxies.append(proxy)
            elif section.kind == "userlist" and "userlist" in self.keys:
                self.userlist(section)
            else:
                self.skip(section.header, f"{section.kind} section", "its directives are skipped")

    def global_directive(self, line: SourceLine) -> None:
        words = line.words
        keyword = words[0]
        argument = words[1] if len(words) > 1 else ""
        if keyword in ("nbthread", "nbproc") and _integer(argument) is not None:
            workers = int(argument)
            if workers > 256:
                self.note(line, f"{keyword} {workers}: balancer runs at most 256 workers")
                workers = 256
            self.global_["workers"] = workers
        elif keyword == "maxconn" and _integer(argument):
            self.global_["maxconn"] = int(argument)
        elif keyword in ("user", "group", "uid", "gid") and len(words) == 2:
            self.global_["user" if keyword in ("user", "uid") else "group"] = argument
        elif keyword == "log" and len(words) >= 2:
            self.global_log(line)
        elif keyword == "stats" and argument == "socket" and len(words) >= 3:
            address, _reason = _address(words[2], listening=True)
            if address is not None and address.startswith("unix:"):
                self.admin["socket"] = address[5:]
            elif address is not None and self.claim(address, line):
                self.admin["bind"] = address
                self.note(line, "the admin API over TCP has no authentication: keep it on loopback")
            else:
                self.skip(line)
        elif keyword in ("crt-base", "ca-base") and len(words) == 2:
            if keyword == "crt-base":
                self.crt_base = argument
            else:
                self.ca_base = argument
        elif keyword == "ssl-default-bind-ciphers" and len(words) == 2:
            self.default_ciphers = argument
        elif keyword == "ssl-default-bind-ciphersuites" and len(words) == 2:
            if self.known_names(line, "ciphersuites", "ciphersuites", argument):
                self.default_ciphersuites = argument
        elif keyword == "ssl-default-bind-curves" and len(words) == 2:
            if self.known_names(line, "curves", "curves", argument):
                self.default_curves = argument
        elif keyword == "ssl-default-bind-options":
            for word in words[1:]:
                if word == "ssl-min-ver" or word in _TLS_VERSIONS:
                    continue
                if word in ("no-sslv3", "no-tlsv10", "no-tlsv11"):
                    continue  # balancer never accepts these
                if word == "no-tlsv12":
                    self.default_min_version = "1.3"
                elif word in ("no-tls-tickets", "tls-tickets"):
                    self.default_tickets = word == "tls-tickets"
                elif word == "prefer-client-ciphers":
                    self.default_client_order = True
                else:
                    self.skip(line, f"ssl-default-bind-options {word}")
            if "ssl-min-ver" in words:
                index = words.index("ssl-min-ver")
                version = words[index + 1] if index + 1 < len(words) else ""
                if version in _TLS_VERSIONS:
                    self.default_min_version = _TLS_VERSIONS[version]
        elif keyword == "tune.ssl.cachesize" and _integer(argument):
            self.global_["tls_session_cache"] = int(argument)
        elif keyword == "tune.http.maxhdr" and _integer(argument):
            self.header_count = int(argument)
        else:
            self.skip(line)

    def known_names(self, line: SourceLine, option: str, key: str, value: str) -> bool:
        """Whether `value` (OpenSSL's list given to HAProxy's `option`, balancer's `tls` key
        `key`) names only what balancer knows; else the line is a loss (a policy that
        narrows a list is not widened quietly), naming the first name it does not know."""
        unknown = unknown_names(key, value)
        if unknown:
            reason = f"{unknown[0] or 'an empty name'} is not a {TLS_LISTS[key][0]}"
            self.skip(line, f"{option} {value}", reason, loss=True)
        return not unknown

    def global_log(self, line: SourceLine) -> None:
        target = line.words[1]
        if "log" in self.global_:
            self.skip(line, reason="balancer has one log target")
            return
        if target in ("stdout", "stderr"):
            self.global_["log"] = target
            return
        address = target.removeprefix("udp@").removeprefix("udp4@").removeprefix("ipv4@")
        host, sep, port = address.rpartition(":")
        if not sep:
            host, port = address, "514"
        if host and re.fullmatch(r"[A-Za-z0-9.\-_]+", host) and port.isdigit():
            self.global_["log"] = f"syslog:udp://{host}:{port}"
            # `log TARGET [len N] [format F] [sample S] FACILITY [LEVEL [MINLEVEL]]`
            rest = list(line.words[2:])
            facility = next((word for word in rest if word in _FACILITIES), None)
            if facility is not None and facility != "local0":  # local0 is balancer's default too
                self.global_["log_facility"] = facility
            others = [word for word in rest if word != facility]
            if others:
                self.note(line, f"log level/format words {' '.join(others)!r} are not translated")
        else:
            self.skip(line, reason="only syslog over UDP to HOST:PORT, stdout and stderr")

    # proxies
    def directive(self, proxy: _Proxy, line: SourceLine) -> None:
        words = list(line.words)
        keyword = words[0]
        kind = proxy.kind
        front = kind in ("frontend", "listen")
        back = kind in ("backend", "listen")
        defaults = kind == "defaults"
        if keyword == "no" and len(words) >= 3 and words[1] == "option":
            self.option(proxy, line, words[2], words[3:], enabled=False)
        elif keyword == "option" and len(words) >= 2:
            self.option(proxy, line, words[1], words[2:], enabled=True)
        elif keyword == "mode" and len(words) == 2 and words[1] in ("http", "tcp"):
            proxy.mode = words[1]
        elif keyword == "timeout" and len(words) == 3:
            self.timeout(proxy, line, words[1], words[2])
        elif keyword == "bind" and front and len(words) >= 2:
            self.bind(proxy, line)
        elif keyword == "maxconn" and (front or defaults) and len(words) == 2 and _integer(words[1]) is not None:
            proxy.maxconn = int(words[1])
        elif keyword == "balance" and (back or defaults) and len(words) >= 2:
            self.balance(proxy, line, words[1:])
        elif keyword == "hash-type" and (back or defaults) and len(words) >= 2:
            if words[1] in ("map-based", "consistent"):
                proxy.hash_type = "map" if words[1] == "map-based" else "consistent"
                if len(words) > 2:
                    self.note(line, f"hash function {' '.join(words[2:])!r} ignored: balancer hashes with crc32")
            else:
                self.skip(line)
        elif keyword == "hash-balance-factor" and (back or defaults) and len(words) == 2:
            proxy.balance_factor = True
            if words[1] != "125":
                self.note(line, "balancer's ring uses a balance factor of 125")
        elif keyword == "server" and back and len(words) >= 3:
            proxy.servers.append((line, words[1:], len(proxy.default_server)))
        elif keyword == "default-server" and (back or defaults):
            proxy.default_server.append((line, words[1:]))
        elif keyword == "retries" and (back or defaults) and len(words) == 2 and _integer(words[1]) is not None:
            proxy.retries = min(int(words[1]), 100)
        elif keyword == "cookie" and (back or defaults) and len(words) >= 2:
            self.cookie(proxy, line, words[1:])
        elif keyword == "stick-table" and back:
            self.stick_table(proxy, line, words[1:])
        elif keyword == "stick" and back and words[1:] == ["on", "src"]:
            proxy.stick_on = True
        elif keyword == "http-check" and (back or defaults) and len(words) >= 2:
            self.http_check(proxy, line, words[1:])
        elif keyword == "acl" and not defaults and len(words) >= 3:
            notes: list[str] = []
            decl = parse_criterion(words[2:], notes, self.keys)
            proxy.acls.setdefault(words[1], []).append(decl)
            proxy.acl_notes.setdefault(words[1], []).extend(notes)
            for message in notes:
                self.note(line, message)
            if isinstance(decl, str):
                self.skip(line, reason=f"{decl} has no equivalent")
        elif keyword == "use_backend" and front and len(words) >= 2:
            if "%[" in words[1]:
                self.skip(line, reason="dynamic backend names are not available")
            else:
                proxy.rules.append(_PendingRule(4, line, {"use_backend": words[1]}, self.condition(line, words[2:])))
        elif keyword == "default_backend" and (front or defaults) and len(words) == 2:
            proxy.default_backend = words[1]
            proxy.default_backend_line = line
        elif keyword == "http-request" and len(words) >= 2:
            self.http_request(proxy, line, words[1:])
        elif keyword == "http-response" and len(words) >= 2 and not defaults:
            self.http_response(proxy, line, words[1:])
        elif keyword == "monitor-uri" and front and len(words) == 2 and "monitor_uri" in self.keys:
            proxy.monitor_uri = words[1]
        elif keyword == "errorfile" and len(words) == 3 and re.fullmatch(r"[1-5]\d\d", words[1]):
            if "errorfiles" in self.keys:
                proxy.errorfiles[words[1]] = self.file_name(line, words[2], "", "error file")
            else:
                self.skip(line, reason="this build has no errorfiles")
        elif keyword == "tcp-request" and len(words) >= 3 and words[1] in ("connection", "content"):
            # a backend's (or a listen's) rules see the same connections as its frontend's
            if words[2] not in ("reject", "accept") or defaults or (words[1] == "connection" and not front):
                self.skip(line)
            elif kind == "backend" and "backend_rule" not in self.keys:
                self.skip(line, reason="this build has no backend rules")
            else:
                phase = 0 if words[1] == "connection" else 1
                action = {"action": "deny" if words[2] == "reject" else "allow"}
                proxy.rules.append(_PendingRule(phase, line, action, self.condition(line, words[3:])))
        elif keyword == "redirect" and (front or (back and "backend_rule" in self.keys)) and len(words) >= 3:
            self.redirect(proxy, line, words[1:], phase=3)
        elif keyword == "stats" and front and len(words) >= 2:
            self.stats_directive(proxy, line, words[1:])
        elif keyword == "log-format" and len(words) == 2 and self.log_format_problem is not None:
            problem = self.log_format_problem(words[1])
            if problem:
                self.skip(line, reason=problem)
            else:
                self.log_formats.setdefault(words[1], line)
        elif keyword == "log" and words[1:] == ["global"]:
            pass  # the global log target is the only one
        elif keyword == "source" and back and len(words) == 2:
            try:
                ipaddress.ip_address(words[1])
            except ValueError:
                self.skip(line, reason="only a local IP address is translated")
            else:
                proxy.source.append(words[1])
        elif keyword == "http-reuse" and (back or defaults) and len(words) == 2:
            proxy.reuse_never = words[1] == "never"
        else:
            misplaced = (keyword in ("bind", "use_backend") and not front) or (
                keyword in ("server", "balance", "cookie") and not back
            )
            self.skip(line, reason=f"not valid in a {kind} section" if misplaced else "")

    def condition(self, line: SourceLine, words: list[str]) -> tuple[str, list[str]] | None:
        if not words:
            return None
        if words[0] in ("if", "unless"):
            return (words[0], words[1:])
        self.skip(line, reason=f"unexpected {words[0]!r}")
        return ("if", ["FALSE"])

    def option(self, proxy: _Proxy, line: SourceLine, name: str, rest: list[str], *, enabled: bool) -> None:
        if name == "forwardfor":
            proxy.forwardfor = enabled
            if rest:
                self.note(line, f"option forwardfor {' '.join(rest)!r}: balancer always sends X-Forwarded-For")
        elif name == "redispatch":
            proxy.redispatch = enabled
            if rest:
                self.note(line, "balancer redispatches on every retry")
        elif name == "http-buffer-request" and proxy.kind != "backend" and "buffer_request" in self.keys:
            proxy.buffer_request = enabled
        elif name == "persist":
            if "persist" in self.keys:
                proxy.persist = enabled
            else:
                self.skip(line, reason="this build ties persistence to redispatch")
        elif name == "httpchk" and enabled:
            # HAProxy: `option httpchk [[METHOD] URI [VERSION]]`, OPTIONS / by default; the
            # version word may carry headers ("HTTP/1.1\r\nHost:\ www").
            check: dict[str, Any] = {"type": "http", "method": "OPTIONS", "path": "/"}
            if len(rest) == 1:
                check["path"] = rest[0]
            elif len(rest) >= 2:
                check["method"], check["path"] = rest[0].upper(), rest[1]
            if len(rest) >= 3:
                host = re.search(r"\r\nHost:\s*([^\r\n]+)", rest[2], re.IGNORECASE)
                if host:
                    check["host"] = host.group(1).strip()
            if check["method"] not in ("OPTIONS", "HEAD", "GET"):
                self.note(
                    line, f"check method {check['method']}: balancer checks with OPTIONS, HEAD or GET; GET is used"
                )
                check["method"] = "GET"
            proxy.httpchk = check
        elif name == "httpchk" or name == "tcp-check":
            proxy.httpchk = None
        elif name in _SILENT_OPTIONS:
            pass
        elif name in ("ssl-hello-chk", "mysql-check", "pgsql-check", "redis-check", "smtpchk", "ldap-check"):
            self.skip(line, reason="balancer's checks are tcp or http: a connect check is used")
            proxy.httpchk = None
        elif name in ("http-server-close", "httpclose", "forceclose"):
            self.skip(line, reason="balancer keeps connections alive on both sides")
        else:
            self.skip(line)

    def timeout(self, proxy: _Proxy, line: SourceLine, which: str, value: str) -> None:
        duration = _duration(value)
        if duration is None:
            self.skip(line, reason=f"invalid time {value!r}")
        elif which in _FRONTEND_TIMEOUTS:
            proxy.frontend_timeouts[_FRONTEND_TIMEOUTS[which]] = duration
            if which == "tunnel" and proxy.kind == "backend":
                proxy.tunnel_line = line
        elif which in _BACKEND_TIMEOUTS:
            proxy.backend_timeouts[_BACKEND_TIMEOUTS[which]] = duration
        elif which == "check":
            proxy.check_timeout = duration
        else:
            self.skip(line)

    def bind(self, proxy: _Proxy, line: SourceLine) -> None:
        words = line.words
        addresses: list[str] = []
        for word in words[1].split(","):
            address, reason = _address(word, listening=True)
            if address is None:
                self.skip(line, f"bind {word}", reason)
            elif address.startswith(":") and "v4v6" not in words:
                addresses.append(f"0.0.0.0{address}")  # HAProxy binds `*:P` and `:P` on IPv4 only
            else:
                addresses.append(address)
        if not addresses:
            return
        bind = _Bind(line, addresses)
        index = 2
        while index < len(words):
            option = words[index]
            argument = words[index + 1] if index + 1 < len(words) else ""
            takes = option in _BIND_ARG_OPTIONS
            if option == "ssl":
                bind.ssl = True
            elif option == "accept-proxy":
                bind.accept_proxy = True
            elif option == "defer-accept":
                bind.defer_accept = True
            elif option == "crt" and argument:
                bind.certs.append(self.file_name(line, argument, self.crt_base, "certificate"))
            elif option == "alpn" and argument:
                protocols = argument.split(",")
                kept = [p for p in protocols if p in ("h2", "http/1.1", "http/1.0")]
                if kept != protocols:
                    dropped = ", ".join(p for p in protocols if p not in kept)
                    self.note(line, f"alpn {dropped} dropped: balancer speaks h2, http/1.1 and http/1.0")
                bind.alpn = kept
            elif option == "ciphers" and argument:
                bind.ciphers = argument
            elif option == "ciphersuites" and argument:
                if self.known_names(line, "ciphersuites", "ciphersuites", argument):
                    bind.ciphersuites = argument
            elif option == "curves" and argument:
                if self.known_names(line, "curves", "curves", argument):
                    bind.curves = argument
            elif option == "ssl-min-ver" and argument in _TLS_VERSIONS:
                bind.min_version = _TLS_VERSIONS[argument]
                if argument not in ("TLSv1.2", "TLSv1.3"):
                    self.note(line, f"ssl-min-ver {argument}: balancer accepts TLS 1.2 and newer only")
            elif option == "ca-file" and argument:
                bind.client_ca = self.file_name(line, argument, self.ca_base, "CA file")
            elif option == "verify" and argument in ("none", "optional", "required"):
                bind.verify = argument
            elif option in ("v4v6", "no-sslv3", "no-tlsv10", "no-tlsv11"):
                pass  # what balancer does anyway
            elif option == "no-tlsv12":
                bind.min_version = "1.3"
            elif option in ("no-tls-tickets", "tls-tickets"):
                bind.tickets = option == "tls-tickets"
            elif option == "tls-ticket-keys" and argument:
                bind.ticket_keys = self.file_name(line, argument, "", "ticket keys file")
            elif option == "prefer-client-ciphers":
                bind.client_order = True
            else:
                self.skip(line, f"bind option {option}" + (f" {argument}" if takes else ""))
            index += 2 if takes else 1
        if bind.ssl and not bind.certs:
            self.skip(line, reason="ssl without crt")
            return
        if bind.verify in ("optional", "required") and not bind.client_ca:
            self.skip(line, "bind option verify", "needs ca-file")
            bind.verify = ""
        proxy.binds.append(bind)

    def balance(self, proxy: _Proxy, line: SourceLine, words: list[str]) -> None:
        algorithm = words[0]
        simple = {"roundrobin", "static-rr", "leastconn", "first", "source"}
        header = re.fullmatch(r"hdr\(([^()]+)\)", algorithm)
        random = re.fullmatch(r"random(?:\((\d+)\))?", algorithm)
        if algorithm in simple:
            proxy.balance, proxy.hash_key = algorithm, "src" if algorithm == "source" else None
        elif algorithm == "uri":
            proxy.balance, proxy.hash_key = "uri", "uri"
        elif algorithm == "url_param" and len(words) >= 2:
            proxy.balance, proxy.hash_key = "url_param", f"url_param({words[1]})"
            words = words[1:]
        elif header:
            proxy.balance, proxy.hash_key = "hdr", f"hdr({header.group(1)})"
        elif random:
            proxy.balance, proxy.hash_key = "random", None
            if random.group(1) not in (None, "2"):
                self.note(line, "balancer's random draws two servers (power of two choices)")
        else:
            self.skip(line)
            return
        if len(words) > 1:
            self.note(line, f"balance options {' '.join(words[1:])!r} are not translated")

    def cookie(self, proxy: _Proxy, line: SourceLine, words: list[str]) -> None:
        name = words[0]
        if not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name):
            self.skip(line, reason=f"cookie name {name!r}")
            return
        cookie: dict[str, Any] = {"name": name, "mode": "rewrite", "nocache": False}
        modes = [word for word in words[1:] if word in ("insert", "prefix", "rewrite")]
        if modes:
            cookie["mode"] = modes[0]
        else:
            self.note(line, "cookie without insert/prefix/rewrite translated as rewrite")
        index = 1
        while index < len(words):
            word = words[index]
            argument = words[index + 1] if index + 1 < len(words) else ""
            if word in ("insert", "prefix", "rewrite"):
                pass
            elif word in ("indirect", "preserve", "postonly") and "cookie_options" in self.keys:
                cookie[word] = True
            elif word == "indirect":
                pass  # balancer's insert mode always removes its cookie from requests
            elif word in ("nocache", "httponly", "secure"):
                cookie[word] = True
            elif word in ("maxidle", "maxlife") and _duration(argument):
                cookie[word] = _duration(argument)
                index += 1
            elif word in ("domain", "attr"):
                self.skip(line, f"cookie option {word} {argument}")
                index += 1
            else:
                self.skip(line, f"cookie option {word}")
            index += 1
        if cookie["mode"] == "insert" and "cookie_options" in self.keys:
            # HAProxy's defaults: the server sees the cookie, HAProxy may overwrite the server's
            cookie = cookie | {key: False for key in ("indirect", "preserve", "postonly") if key not in cookie}
        if cookie["mode"] != "insert":
            for key in ("nocache", "httponly", "secure", "maxidle", "maxlife", "indirect", "preserve", "postonly"):
                cookie.pop(key, None)
        proxy.cookie = cookie
        proxy.cookie_line = line

    def stick_table(self, proxy: _Proxy, line: SourceLine, words: list[str]) -> None:
        options = dict(zip(words[::2], words[1::2], strict=False))
        if options.get("type") not in ("ip", "ipv6"):
            self.skip(line, reason="only 'type ip' tables (stick on src) are translated")
            return
        table: dict[str, Any] = {"on": "src"}
        for key, value in options.items():
            if key == "size" and _size(value):
                table["size"] = _size(value)
            elif key == "expire" and _positive_duration(value):
                table["expire"] = _positive_duration(value)
            elif key != "type":
                self.skip(line, f"stick-table {key} {value}")
        proxy.stick_table = table
        proxy.stick_table_line = line

    def http_check(self, proxy: _Proxy, line: SourceLine, words: list[str]) -> None:
        if words[0] == "expect":
            rest = words[1:]
            if rest[:1] == ["status"] and len(rest) == 2:
                code = _integer(rest[1])
                if code is not None:
                    proxy.check_expect = code
                elif re.fullmatch(r"[0-9x,\-]+", rest[1]):
                    proxy.check_expect = rest[1]
                else:
                    self.skip(line)
            elif rest[:1] == ["string"] and len(rest) == 2:
                proxy.check_body = re.escape(rest[1])
            elif rest[:1] == ["rstring"] and len(rest) == 2:
                proxy.check_body = rest[1]
            else:
                self.skip(line)
        elif words[0] == "connect":
            options = words[1:]
            check = proxy.httpchk or {"type": "http", "method": "OPTIONS", "path": "/"}
            if "ssl" in options:
                check["ssl"] = True
            for option in options:
                if option != "ssl":
                    self.skip(line, f"http-check connect {option}")
            proxy.httpchk = check
        elif words[0] == "send":
            check = proxy.httpchk or {"type": "http", "method": "OPTIONS", "path": "/"}
            index = 1
            while index + 1 < len(words):
                key, value = words[index], words[index + 1]
                if key == "meth" and value.upper() in ("OPTIONS", "HEAD", "GET"):
                    check["method"] = value.upper()
                elif key == "uri":
                    check["path"] = value
                elif key == "hdr" and index + 2 < len(words) and value.lower() == "host":
                    check["host"] = words[index + 2]
                    index += 1
                elif key != "ver":
                    self.skip(line, f"http-check send {key}")
                index += 2
            proxy.httpchk = check
        else:
            self.skip(line)

    def http_request(self, proxy: _Proxy, line: SourceLine, words: list[str]) -> None:
        """`http-request ACTION ... [if|unless COND]` in a frontend, listen or backend."""
        action = words[0]
        if proxy.kind == "defaults":
            self.skip(line, reason="not translated in defaults")
            return
        split = next((i for i, word in enumerate(words) if word in ("if", "unless")), len(words))
        args, condition = words[1:split], self.condition(line, words[split:])
        if proxy.kind == "backend":
            host = action == "set-header" and len(args) == 2 and args[0].lower() == "host" and "%[" not in args[1]
            if host and condition is None:
                proxy.host = args[1]
                return
            if "backend_rule" not in self.keys:
                self.skip(line, reason="this build has no backend rules")
                return
        if action in ("deny", "allow"):
            if action == "deny" and args[:1] == ["deny_status"] and args[1:2] != ["403"]:
                self.note(line, "balancer denies with 403")
            proxy.rules.append(_PendingRule(2, line, {"action": action}, condition))
        elif action == "auth" and "auth" in self.keys:
            realm = args[1] if args[:1] == ["realm"] and len(args) >= 2 else proxy.name  # HAProxy's default realm
            proxy.rules.append(_PendingRule(2, line, {"action": "auth", "realm": realm}, condition))
        elif action == "redirect":
            self.redirect(proxy, line, words[1:], phase=2)
        elif action in ("set-header", "add-header", "del-header"):
            rule = self.header_action(proxy, line, action, args, response=False, condition=condition)
            if rule is not None:
                proxy.rules.append(_PendingRule(2, line, rule, condition))
        else:
            self.skip(line)

    def http_response(self, proxy: _Proxy, line: SourceLine, words: list[str]) -> None:
        """`http-response set-header|add-header|del-header ...` -> a response rule."""
        action = words[0]
        split = next((i for i, word in enumerate(words) if word in ("if", "unless")), len(words))
        args, condition = words[1:split], self.condition(line, words[split:])
        if "response_rule" not in self.keys:
            self.skip(line, reason="this build has no response rules")
        elif action in ("set-header", "add-header", "del-header"):
            rule = self.header_action(proxy, line, action, args, response=True, condition=condition)
            if rule is not None:
                proxy.response_rules.append(_PendingRule(0, line, rule, condition))
        else:
            self.skip(line)

    def header_action(
        self,
        proxy: _Proxy,
        line: SourceLine,
        action: str,
        args: list[str],
        *,
        response: bool,
        condition: tuple[str, list[str]] | None,
    ) -> dict[str, Any] | None:
        """set-header / add-header / del-header -> the rule's action keys, or None (named)."""
        header = args[0] if args else ""
        if (action != "del-header" and len(args) != 2) or (action == "del-header" and len(args) != 1):
            self.skip(line, reason="only NAME VALUE (set/add) or NAME (del) are translated")
            return None
        lowered = header.lower()
        if not response and lowered == "x-forwarded-proto" and _scheme_of_connection(args[1:], condition):
            if proxy.kind == "backend":
                self.skip(line, reason="balancer writes X-Forwarded-Proto in the frontend (forwardfor = true)")
            else:
                proxy.forwarded_proto.append(line)  # decided with the frontend's forwardfor
            return None
        if not response and action == "del-header" and lowered == "x-forwarded-for":
            # balancer's del_header drops the client's values too, as HAProxy's does before
            # option forwardfor appends the client.
            return {"del_header": [header]}
        if not response and lowered in ("x-forwarded-proto", "x-forwarded-for"):
            self.skip(line, reason=f"balancer writes {header} itself when forwardfor = true, after the client's")
            return None
        if lowered in _FRAMING_HEADERS:
            self.skip(line, reason=f"balancer owns the {header} header")
            return None
        if action != "del-header" and "%[" in args[1]:
            self.skip(line, reason="header values are fixed strings in balancer")
            return None
        if action == "add-header" and "add_header" not in self.keys:
            self.skip(line, reason="this build has no add_header")
            return None
        if action == "del-header":
            return {"del_header": [header]}
        return {action.replace("-", "_"): {header: args[1]}}

    def redirect(self, proxy: _Proxy, line: SourceLine, words: list[str], phase: int) -> None:
        """`redirect location|prefix|scheme TARGET [code N] [option...] [if|unless COND]`."""
        split = next((i for i, word in enumerate(words) if word in ("if", "unless")), len(words))
        args, condition = words[:split], self.condition(line, words[split:])
        kind = args[0] if args else ""
        if len(args) < 2 or kind not in ("location", "prefix", "scheme"):
            self.skip(line, reason="expected redirect location|prefix|scheme TARGET")
            return
        if kind != "location" and "redirect_scheme" not in self.keys:
            self.skip(line, reason="only 'redirect location' (a fixed URL) is available in this build")
            return
        target = args[1]
        code = 302
        index = 2
        while index < len(args):
            if args[index] == "code" and args[index + 1 : index + 2] in (["301"], ["302"], ["303"], ["307"], ["308"]):
                code = int(args[index + 1])
                index += 2
                continue
            if args[index] in ("drop-query", "append-slash", "ignore-empty"):
                self.note(line, f"redirect option {args[index]} is not translated (the redirect is)")
            else:
                self.skip(line, f"redirect option {args[index]}")
            index += 1
        if "%[" in target:
            self.skip(line, reason="redirect targets are fixed strings in balancer")
            return
        redirect: dict[str, Any] = {kind: target, "code": code}
        proxy.rules.append(_PendingRule(phase, line, {"redirect": redirect}, condition))

    def userlist(self, section: Section) -> None:
        """`userlist NAME` with `user NAME password HASH | insecure-password PLAIN` lines."""
        users: list[tuple[SourceLine, dict[str, Any]]] = []
        for line in section.lines:
            words = line.words
            if words[0] == "user" and len(words) >= 4 and words[2] in ("password", "insecure-password"):
                user: dict[str, Any] = {"name": words[1]}
                if words[2] == "insecure-password":
                    user["password"] = words[3]
                elif re.match(r"^\$(1|5|6|2[aby])\$", words[3]):
                    user["password_hash"] = words[3]
                else:
                    self.skip(line, reason="only $1$, $5$, $6$ and bcrypt password hashes")
                    continue
                if len(words) > 4:
                    self.note(line, f"{' '.join(words[4:])!r}: groups are not translated")
                users.append((line, user))
            else:
                self.skip(line, reason="groups are not translated" if words[0] == "group" else "")
        if not section.name:
            self.skip(section.header, reason="a userlist without a name")
            return
        self.userlists.append((section.header, {"name": section.name, "user": users}))

    def stats_directive(self, proxy: _Proxy, line: SourceLine, words: list[str]) -> None:
        what = words[0]
        if proxy.stats_line is None:
            proxy.stats_line = line
        if what == "enable" and len(words) == 1:
            proxy.stats["enable"] = True
        elif what == "uri" and len(words) == 2:
            proxy.stats["uri"] = words[1]
        elif what == "refresh" and len(words) == 2 and _positive_duration(words[1]):
            proxy.stats["refresh"] = _positive_duration(words[1])
        elif what == "auth" and len(words) == 2 and ":" in words[1]:
            if "auth" in proxy.stats:
                self.skip(line, "stats auth", "balancer's stats page has one user")
            else:
                user, _, password = words[1].partition(":")
                proxy.stats["auth"] = {"user": user, "password": password}
        else:
            self.skip(line)

    # output
    def server_table(
        self, backend: _Proxy, source: SourceLine, words: list[str], defaults: int, state: dict[str, Any]
    ) -> None:
        """One `server` line -> a [[backend.server]] table, and backend-wide settings into `state`."""
        name = words[0]
        address, reason = _address(words[1], listening=False)
        if address is None:
            self.skip(
                source, reason=f"{reason} (HAProxy then uses the client's port)" if "no port" in reason else reason
            )
            return
        options: list[tuple[SourceLine, str, str]] = []
        for line, default_words in backend.default_server[:defaults]:
            options += self.options_of(line, default_words)
        options += self.options_of(source, words[2:])
        server: dict[str, Any] = {"name": _name(name), "address": address}
        if server["name"] != name:
            self.note(source, f"server name {name!r} written as {server['name']!r}")
        flags: dict[str, bool] = {}
        values: dict[str, tuple[SourceLine, str]] = {}
        for line, option, argument in options:
            if option.startswith("no-") and option[3:] in ("check", "backup", "send-proxy", "send-proxy-v2", "ssl"):
                flags[option[3:]] = False
            elif option in ("check", "backup", "disabled", "send-proxy", "send-proxy-v2", "ssl", "agent-check"):
                flags[option] = True
            elif option in ("check-ssl", "enabled"):
                flags[option] = option == "check-ssl"
            elif option in (
                "weight",
                "maxconn",
                "slowstart",
                "cookie",
                "inter",
                "fastinter",
                "downinter",
                "rise",
                "fall",
                "verify",
                "ca-file",
                "sni",
                "agent-port",
                "agent-inter",
                "agent-addr",
                "observe",
                "error-limit",
            ):
                values[option] = (line, argument)
            else:
                self.skip(line, f"server option {option}" + (f" {argument}" if argument else ""))
        for option, (line, argument) in values.items():
            if option == "weight" and _integer(argument) is not None and int(argument) <= 256:
                server["weight"] = int(argument)
            elif option == "maxconn" and _integer(argument) is not None:
                server["maxconn"] = int(argument)
            elif option == "slowstart" and _duration(argument):
                server["slowstart"] = _duration(argument)
            elif option == "cookie":
                if argument != server["name"]:
                    self.note(
                        line,
                        f"cookie value {argument!r} of server {name!r}: balancer's cookie value is the server name",
                    )
            elif option in ("inter", "fastinter", "downinter") and _positive_duration(argument):
                key = {"inter": "interval", "fastinter": "fastinterval", "downinter": "downinterval"}[option]
                state.setdefault("check_params", {}).setdefault(key, (line, _positive_duration(argument)))
            elif option in ("rise", "fall") and _integer(argument):
                state.setdefault("check_params", {}).setdefault(option, (line, int(argument)))
            elif option == "verify":
                if argument == "none":
                    self.note(line, "verify none: balancer always verifies server certificates")
            elif option == "ca-file":
                server["ca_file"] = self.file_name(line, argument, self.ca_base, "CA file")
            elif option == "sni":
                sni = re.fullmatch(r"str\(([^()]+)\)", argument)
                if sni:
                    server["sni"] = sni.group(1)
                else:
                    self.skip(line, f"server option sni {argument}", "only sni str(NAME)")
            elif option == "agent-port" and _integer(argument) and 0 < int(argument) < 65536:
                state.setdefault("agent", {}).setdefault("port", int(argument))
            elif option == "agent-inter" and _positive_duration(argument):
                state.setdefault("agent", {}).setdefault("interval", _positive_duration(argument))
            elif option == "agent-addr":
                state.setdefault("agent", {}).setdefault("address", argument)
            elif option == "observe" and argument in ("layer4", "layer7"):
                state.setdefault("observe", {}).setdefault("errors", 10)
            elif option == "error-limit" and _integer(argument):
                state.setdefault("observe", {})["errors"] = max(1, int(argument))
            else:
                self.skip(line, f"server option {option} {argument}")
        if flags.get("backup"):
            server["backup"] = True
        if flags.get("ssl"):
            server["ssl"] = True
        if flags.get("disabled"):
            server["state"] = "maint"
        if flags.get("check"):
            state["checked"] = True
            state["check_ssl"] = state.get("check_ssl", False) or flags.get("check-ssl", False)
        else:
            state.setdefault("unchecked", []).append(source)
        if flags.get("agent-check"):
            state["agent_on"] = True
        for proxy_version in ("send-proxy", "send-proxy-v2"):
            if flags.get(proxy_version):
                state.setdefault("send_proxy", {})[name] = "v2" if proxy_version.endswith("v2") else "v1"
        state.setdefault("servers", []).append((source, server))

    def options_of(self, line: SourceLine, words: list[str]) -> list[tuple[SourceLine, str, str]]:
        result: list[tuple[SourceLine, str, str]] = []
        index = 0
        while index < len(words):
            option = words[index]
            if option in _SERVER_ARG_OPTIONS and index + 1 < len(words):
                result.append((line, option, words[index + 1]))
                index += 2
            else:
                result.append((line, option, ""))
                index += 1
        return result

    def backend_table(self, proxy: _Proxy) -> dict[str, Any]:
        header = proxy.header
        assert header is not None
        mode = proxy.mode or "tcp"
        table: dict[str, Any] = {"name": _name(proxy.name), "mode": mode}
        balance = proxy.balance or "roundrobin"
        hash_key = proxy.hash_key
        if mode == "tcp" and balance in ("uri", "hdr", "url_param"):
            self.note(header, f"balance {balance} needs mode http: roundrobin is used, as HAProxy does")
            balance, hash_key = "roundrobin", None
        hashing = balance in ("source", "uri", "hdr", "url_param")
        if hashing and proxy.balance_factor and proxy.hash_type == "consistent":
            balance = "ring"
        table["balance"] = balance
        if hashing and hash_key:
            table["hash_key"] = hash_key
        if hashing and proxy.hash_type and balance != "ring":
            table["hash_type"] = proxy.hash_type
        if proxy.host:
            table["host"] = proxy.host
        if proxy.stick_on:
            table["stick"] = proxy.stick_table or {"on": "src"}
        elif proxy.stick_table_line is not None:
            self.skip(proxy.stick_table_line, reason="without 'stick on src' the table is not used for persistence")
        if proxy.cookie is not None:
            if mode == "tcp":
                assert proxy.cookie_line is not None
                self.skip(proxy.cookie_line, reason="cookie persistence needs mode http")
            else:
                table["cookie"] = proxy.cookie
        state: dict[str, Any] = {}
        for line, words, defaults in proxy.servers:
            self.server_table(proxy, line, words, defaults, state)
        if state.get("checked"):
            check: dict[str, Any] = dict(proxy.httpchk or {"type": "tcp"})
            if check["type"] == "http":
                # without `http-check expect`, HAProxy passes any 2xx or 3xx status
                check["expect"] = proxy.check_expect if proxy.check_expect is not None else "2xx,3xx"
                if proxy.check_body:
                    check["body"] = proxy.check_body
            params: dict[str, tuple[SourceLine, Any]] = state.get("check_params", {})
            for key in ("interval", "fastinterval", "downinterval", "rise", "fall"):
                if key in params:
                    check[key] = params[key][1]
            if proxy.check_timeout:
                check["timeout"] = proxy.check_timeout
            if state.get("check_ssl"):
                check["ssl"] = True
            table["check"] = check
            for line in state.get("unchecked", []):
                self.note(line, "server without 'check': balancer checks every server of a checked backend")
        if state.get("agent_on"):
            agent = state.get("agent", {})
            if "port" in agent:
                table["agent"] = agent
            else:
                self.note(header, "agent-check without agent-port is not translated")
        if "observe" in state:
            table["observe"] = state["observe"]
        table["retries"] = proxy.retries if proxy.retries is not None else 3
        table["redispatch"] = bool(proxy.redispatch)
        if proxy.persist:
            table["persist"] = True
        if proxy.kind == "backend":
            if mode == "http" and proxy.errorfiles:
                table["errorfiles"] = dict(proxy.errorfiles)
            rules = self.rules(proxy, mode, None, {})
            if rules:
                table["rule"] = rules
            response_rules = self.rules(proxy, mode, None, {}, response=True)
            if response_rules:
                table["response_rule"] = response_rules
        if proxy.backend_timeouts:
            table["timeouts"] = dict(proxy.backend_timeouts)
        if proxy.tunnel_line is not None:
            self.note(proxy.tunnel_line, "timeout tunnel is a frontend setting in balancer: set it there")
        send_proxy: dict[str, str] = state.get("send_proxy", {})
        if send_proxy:
            versions = sorted(set(send_proxy.values()))
            table["send_proxy"] = versions[-1]
            if len(send_proxy) != len(state.get("servers", [])) or len(versions) > 1:
                self.note(header, f"send_proxy = {versions[-1]!r} applies to every server of backend {proxy.name}")
        if proxy.source:
            table["source"] = proxy.source
        if proxy.reuse_never:
            table["pool"] = {"max_idle_per_server": 0}
        servers: list[tuple[SourceLine, dict[str, Any]]] = state.get("servers", [])
        if any("weight" in server for _line, server in servers):
            for _line, server in servers:
                server.setdefault("weight", 1)  # HAProxy's default weight
        seen: set[str] = set()
        kept: list[tuple[SourceLine, dict[str, Any]]] = []
        for line, server in servers:
            if server["name"] in seen:
                self.skip(line, reason=f"duplicate server name {server['name']!r}")
                continue
            seen.add(server["name"])
            kept.append((line, server))
        table["server"] = kept
        return table

    def frontend_tables(self, proxy: _Proxy, backends: dict[str, str]) -> list[dict[str, Any]]:
        """A frontend (or the frontend half of a listen) -> one [[frontend]] per kind of bind
        (HAProxy sets TLS per bind line, balancer per frontend)."""
        header = proxy.header
        assert header is not None
        mode = proxy.mode or "tcp"
        groups: dict[tuple[Any, ...], list[_Bind]] = {}
        for bind in proxy.binds:
            groups.setdefault(bind.group(), []).append(bind)
        if not groups:
            self.skip(header, reason="no bind line could be translated")
            return []
        result: list[dict[str, Any]] = []
        base = _name(proxy.name)
        if base != proxy.name:
            self.note(header, f"name {proxy.name!r} written as {base!r}")
        names: list[str] = []
        for number, binds in enumerate(groups.values()):
            first = binds[0]
            name = base if number == 0 else f"{base}-{'tls' if first.ssl else number + 1}"
            names.append(name)
            table: dict[str, Any] = {"name": name, "bind": [a for bind in binds for a in bind.addresses], "mode": mode}
            default = proxy.default_backend
            if proxy.kind == "listen" and default is None:
                default = proxy.name
            if default is not None:
                target = backends.get(default)
                line = proxy.default_backend_line or header
                if target is None:
                    self.skip(line, f"default_backend {default}", "no such backend")
                elif target != mode:
                    self.skip(line, f"default_backend {default}", f"backend is mode {target}, frontend mode {mode}")
                else:
                    table["default_backend"] = _name(default)
            if proxy.maxconn is not None:
                table["maxconn"] = proxy.maxconn
            if first.accept_proxy:
                table["accept_proxy"] = True
            if first.defer_accept != client_speaks_first(mode, first.ssl, first.accept_proxy):
                table["defer_accept"] = first.defer_accept  # HAProxy defers only when told to
            if first.ssl:
                tls: dict[str, Any] = {"cert": first.certs}
                if first.alpn is not None:
                    tls["alpn"] = first.alpn
                if first.ciphers or self.default_ciphers:
                    tls["ciphers"] = first.ciphers or self.default_ciphers
                if first.ciphersuites or self.default_ciphersuites:
                    tls["ciphersuites"] = first.ciphersuites or self.default_ciphersuites
                if first.curves or self.default_curves:
                    tls["curves"] = first.curves or self.default_curves
                if first.min_version or self.default_min_version:
                    tls["min_version"] = first.min_version or self.default_min_version
                if first.client_ca:
                    tls["client_ca"] = first.client_ca
                if first.verify and first.client_ca:
                    tls["verify_client"] = first.verify
                if not (self.default_tickets if first.tickets is None else first.tickets):
                    tls["tickets"] = False
                if first.ticket_keys:
                    tls["ticket_keys"] = first.ticket_keys
                if first.client_order or self.default_client_order:
                    tls["prefer_client_ciphers"] = True
                table["tls"] = tls
            timeouts = dict(proxy.frontend_timeouts)
            if mode == "tcp":
                self.tcp_idle_timeout(proxy, timeouts)
            if timeouts:
                table["timeouts"] = timeouts
            if mode == "http":
                table["forwardfor"] = bool(proxy.forwardfor) or self.backends_forward(proxy, backends)
                if self.header_count is not None:
                    table["limits"] = {"header_count": self.header_count}
            if mode == "http":
                self.forwarded_proto(proxy, bool(table["forwardfor"]))
                if proxy.monitor_uri:
                    table["monitor_uri"] = proxy.monitor_uri
                if proxy.buffer_request:
                    table["buffer_request"] = True
                if proxy.errorfiles:
                    table["errorfiles"] = dict(proxy.errorfiles)
            elif proxy.monitor_uri:
                self.note(header, "monitor-uri needs mode http (HAProxy ignores it in mode tcp too)")
            table["rule"] = self.rules(proxy, mode, first.ssl, backends)
            table["response_rule"] = self.rules(proxy, mode, first.ssl, backends, response=True)
            if not table["response_rule"]:
                del table["response_rule"]
            routed = "default_backend" in table or "monitor_uri" in table
            if not routed and not self.reachable(table["rule"]):
                self.skip(header, f"{proxy.kind} {proxy.name}", "nothing left to route to (no default_backend)")
                continue
            table["bind"] = [a for bind in binds for a in bind.addresses if self.claim(a, bind.line)]
            if not table["bind"]:
                self.skip(header, f"{proxy.kind} {proxy.name}", "no address left to listen on")
                continue
            result.append(table)
        if len(names) > 1:
            self.note(header, f"split into frontends {', '.join(names)}: balancer sets TLS/PROXY per frontend")
        return result

    def forwarded_proto(self, proxy: _Proxy, forwardfor: bool) -> None:
        """`http-request set-header X-Forwarded-Proto https if { ssl_fc }` (or http): with
        forwardfor = true balancer sends X-Forwarded-Proto itself, http or https as the
        client connected, replacing the client's; without it the header is lost."""
        for line in proxy.forwarded_proto:
            if forwardfor:
                self.note(line, "balancer sets X-Forwarded-Proto to http or https itself (forwardfor = true)")
            else:
                self.skip(line, reason="balancer sets X-Forwarded-Proto only with forwardfor (option forwardfor)")
        proxy.forwarded_proto = []

    def tcp_idle_timeout(self, proxy: _Proxy, timeouts: dict[str, str]) -> None:
        """HAProxy closes an idle TCP connection after `timeout client` or `timeout server`,
        whichever expires first, unless `timeout tunnel` (frontend or backend) is set; bytes in
        either direction keep it open (a server streaming to a silent client is not cut:
        checked with HAProxy 2.6). balancer's TCP mode has one idle timeout once connected,
        `timeouts.tunnel`, reset by bytes in either direction: it becomes HAProxy's tunnel
        timeout, else the smaller of client and server."""
        header = proxy.header
        assert header is not None
        backend = self.proxy_named(proxy.default_backend or (proxy.name if proxy.kind == "listen" else ""))
        tunnel = proxy.frontend_timeouts.get("tunnel") or (backend.frontend_timeouts.get("tunnel") if backend else None)
        if tunnel is not None:
            timeouts["tunnel"] = tunnel
            return
        server = (backend.backend_timeouts if backend else proxy.backend_timeouts).get("server")
        candidates = [value for value in (proxy.frontend_timeouts.get("client"), server) if value is not None]
        if not candidates:
            return  # HAProxy never closes it (and warns at start-up); balancer after its default 1h
        timeouts["tunnel"] = min(candidates, key=_seconds)

    def proxy_named(self, name: str) -> _Proxy | None:
        return next((p for p in self.proxies if p.name == name and p.kind in ("backend", "listen")), None)

    def claim(self, address: str, line: SourceLine) -> bool:
        """Take a listening address; False (and a message) if an earlier listener overlaps it:
        HAProxy may share a port between sections (SO_REUSEPORT), balancer refuses that."""
        wanted = parse_address(address)
        for earlier, where in self.listeners:
            if addresses_overlap(wanted, earlier):
                self.skip(line, f"bind {address}", f"{earlier} is already bound (line {where.number})")
                return False
        self.listeners.append((wanted, line))
        return True

    def backends_forward(self, proxy: _Proxy, backends: dict[str, str]) -> bool:
        """HAProxy's `option forwardfor` may sit in a backend: then its frontends add the header."""
        names = {rule.action["use_backend"] for rule in proxy.rules if "use_backend" in rule.action}
        names |= {proxy.default_backend or (proxy.name if proxy.kind == "listen" else "")}
        return any(self.forwarding.get(name, False) for name in names)

    @staticmethod
    def reachable(rules: list[tuple[SourceLine, dict[str, Any]]]) -> bool:
        for _line, rule in rules:
            if rule.get("use_backend"):
                return True
            unconditional = "if" not in rule and "unless" not in rule
            if unconditional and ("redirect" in rule or rule.get("action") == "deny"):
                return True
        return False

    def rules(
        self,
        proxy: _Proxy,
        mode: str,
        ssl: bool | None,
        backends: dict[str, str],
        *,
        response: bool = False,
    ) -> list[tuple[SourceLine, dict[str, Any]]]:
        """A proxy's request rules (or with `response`, its response rules) in HAProxy's
        evaluation order -> (source line, rule table) pairs. `ssl`: see condition_tables."""
        result: list[tuple[SourceLine, dict[str, Any]]] = []
        pending_rules = proxy.response_rules if response else proxy.rules
        for pending in sorted(pending_rules, key=lambda rule: rule.phase):
            line = pending.line
            action = dict(pending.action)
            if action.get("action") == "allow" and any(other.phase > pending.phase for other in pending_rules):
                # balancer's allow ends every later rule; HAProxy's accept/allow only its own
                # ruleset (tcp-request connection, content, http-request): later rules would be lost
                self.skip(line, reason="rules of a later HAProxy ruleset follow, which balancer's allow would skip")
                continue
            if "use_backend" in action:
                target = backends.get(action["use_backend"])
                if target is None:
                    self.skip(line, reason=f"no backend {action['use_backend']!r}")
                    continue
                if target != mode:
                    self.skip(line, reason=f"backend is mode {target}, frontend mode {mode}")
                    continue
                action["use_backend"] = _name(action["use_backend"])
            if mode == "tcp" and line.words[0] in ("http-request", "http-response", "redirect"):
                self.skip(line, reason="HAProxy ignores HTTP rules in mode tcp too", loss=False)
                continue
            tables = condition_tables(pending.condition, proxy.acls, ssl, self.keys)
            if isinstance(tables, str):
                self.skip(line, reason=tables)
                continue
            if not response and any("status" in table for pair in tables for table in pair if table is not None):
                self.skip(line, reason="the response status is not known when a request rule runs")
                continue
            userlists = {userlist["name"] for _header, userlist in self.userlists}
            unknown = {
                table["http_auth"]
                for pair in tables
                for table in pair
                if table is not None and "http_auth" in table and table["http_auth"] not in userlists
            }
            if unknown:
                self.skip(line, reason=f"userlist {sorted(unknown)[0]!r} is not translated")
                continue
            approximations = self.approximations(pending.condition, proxy, self.keys)
            if approximations and weakens_when_lost(line.words):
                self.skip(line, reason=f"its condition would be approximate: {approximations[0]}")
                continue
            for message in approximations:
                self.note(line, message)
            if mode == "tcp" and any(
                key != "src" for pair in tables for table in pair if table is not None for key in table
            ):
                self.skip(line, reason="a tcp frontend's rules may only test src")
                continue
            for if_table, unless_table in tables:
                rule: dict[str, Any] = {}
                if if_table:
                    rule["if"] = if_table
                if unless_table:
                    rule["unless"] = unless_table
                rule.update(copy.deepcopy(action))
                result.append((line, rule))
            if len(tables) > 1:
                self.note(line, f"written as {len(tables)} rules (one per alternative of the condition)")
        return result

    @staticmethod
    def approximations(condition: tuple[str, list[str]] | None, proxy: _Proxy, keys: frozenset[str]) -> list[str]:
        """How the translation of a condition's ACLs differs from HAProxy's, if it does."""
        if condition is None:
            return []
        found: list[str] = []
        words = condition[1]
        index = 0
        while index < len(words):
            word = words[index].lstrip("!")
            if word == "{":
                end = words.index("}", index) if "}" in words[index:] else len(words)
                parse_criterion(words[index + 1 : end], found, keys)
                index = end
            else:
                found += proxy.acl_notes.get(word, [])
            index += 1
        return found

    def stats_table(self, proxy: _Proxy, bound: bool) -> None:
        line = proxy.stats_line
        assert line is not None
        if self.stats is not None:
            self.skip(line, "stats", "balancer has one stats page")
            return
        stats: dict[str, Any] = {}
        if bound and proxy.binds:
            first = proxy.binds[0]
            if not self.claim(first.addresses[0], first.line):
                return
            stats["bind"] = first.addresses[0]
            if first.ssl and "auth" in proxy.stats:
                # its password would cross in clear: weaker than the source
                self.skip(first.line, "ssl of the stats page", "balancer's stats page has no TLS", loss=True)
            if len(proxy.binds) > 1 or len(first.addresses) > 1 or first.ssl:
                self.note(line, f"the stats page listens on {first.addresses[0]} only, without TLS")
        elif not bound:
            self.note(line, f"{proxy.kind} {proxy.name} also serves traffic: give [stats] its own bind")
        for key in ("uri", "auth", "refresh"):
            if key in proxy.stats:
                stats[key] = proxy.stats[key]
        self.stats = stats
        self.stats_source = proxy.header

    def output(self) -> str:
        if len(self.log_formats) == 1:
            self.global_["log_format"] = next(iter(self.log_formats))  # balancer's is global
        elif self.log_formats:
            for line in list(self.log_formats.values())[1:]:
                self.skip(line, reason="balancer has one log format: the first one is used")
            self.global_["log_format"] = next(iter(self.log_formats))
        backends: dict[str, str] = {}
        stats_only: set[int] = set()
        for index, proxy in enumerate(self.proxies):
            if proxy.kind == "listen" and not proxy.servers and self.stats_only(proxy):
                stats_only.add(index)
                continue
            if proxy.kind in ("backend", "listen"):
                if proxy.name in backends:
                    assert proxy.header is not None
                    self.skip(proxy.header, reason=f"a second backend named {proxy.name!r}")
                    continue
                backends[proxy.name] = proxy.mode or "tcp"
                self.forwarding[proxy.name] = bool(proxy.forwardfor)
        for index, proxy in enumerate(self.proxies):
            if proxy.kind == "frontend" and self.stats_only(proxy):
                stats_only.add(index)

        out: list[str] = [f"# Translated from {self.file} by `balancer import-haproxy`.", ""]
        if self.global_:
            if self.global_line is not None:
                out.append(f"# from {self.file}:{self.global_line.number} global")
            out += ["[global]"] + [f"{key} = {_toml_value(value)}" for key, value in self.global_.items()] + [""]
        if self.admin:
            out += ["[admin]"] + [f"{key} = {_toml_value(value)}" for key, value in self.admin.items()] + [""]

        frontends: list[tuple[_Proxy, dict[str, Any]]] = []
        backend_tables: list[tuple[_Proxy, dict[str, Any]]] = []
        seen_backends: set[str] = set()
        for index, proxy in enumerate(self.proxies):
            if index in stats_only:
                self.stats_table(proxy, bound=True)
                continue
            if proxy.kind in ("frontend", "listen"):
                if proxy.stats:
                    self.stats_table(proxy, bound=False)
                for table in self.frontend_tables(proxy, backends):
                    frontends.append((proxy, table))
            if proxy.kind in ("backend", "listen") and proxy.name not in seen_backends:
                seen_backends.add(proxy.name)
                backend_tables.append((proxy, self.backend_table(proxy)))
        self.check_listener_names(frontends)

        if self.stats:
            if self.stats_source is not None:
                out.append(f"# from {self.file}:{self.stats_source.number} {' '.join(self.stats_source.words[:2])}")
            out += ["[stats]"] + [f"{key} = {_toml_value(value)}" for key, value in self.stats.items()] + [""]
        for header, table in self.userlists:
            out += self.render_section(header, "userlist", table)
        for proxy, table in frontends:
            assert proxy.header is not None
            out += self.render_section(proxy.header, "frontend", table)
        for proxy, table in backend_tables:
            assert proxy.header is not None
            out += self.render_section(proxy.header, "backend", table)
        return "\n".join(out).rstrip("\n") + "\n"

    @staticmethod
    def stats_only(proxy: _Proxy) -> bool:
        """A frontend/listen that only serves the stats page."""
        routes = proxy.default_backend is not None or any("use_backend" in rule.action for rule in proxy.rules)
        return bool(proxy.stats) and not routes

    def check_listener_names(self, frontends: list[tuple[_Proxy, dict[str, Any]]]) -> None:
        names: set[str] = set()
        for proxy, table in frontends:
            if table["name"] in names:
                table["name"] = f"{table['name']}-frontend"
                assert proxy.header is not None
                self.note(proxy.header, f"frontend written as {table['name']!r} (name already used)")
            names.add(table["name"])

    def render_section(self, header: SourceLine, kind: str, table: dict[str, Any]) -> list[str]:
        """One [[frontend]] / [[backend]] / [[userlist]]: its keys, then its array tables
        (rule, response_rule, server, user), each after a comment naming its source line."""
        out = [f"# from {self.file}:{header.number} {' '.join(header.words[:2])}", f"[[{kind}]]"]
        children = [key for key in _CHILD_TABLES if key in table]
        for key, value in table.items():
            if key not in children:
                out.append(f"{key} = {_toml_value(value)}")
        out.append("")
        for child in children:
            for line, item in table[child]:
                out.append(f"  # {self.file}:{line.number}: {_one_line(line.text)}")
                out.append(f"  [[{kind}.{child}]]")
                out += [f"  {key} = {_toml_value(value)}" for key, value in item.items()]
                out.append("")
        return out


_CHILD_TABLES = ("rule", "response_rule", "server", "user")


def _scheme_of_connection(value: list[str], condition: tuple[str, list[str]] | None) -> bool:
    """Whether `set-header X-Forwarded-Proto VALUE COND` says what balancer's forwardfor
    writes: https when the client connection is TLS, http when it is not."""
    words = condition[1] if condition is not None else []
    tls = words in (["{", "ssl_fc", "}"], ["ssl_fc"])
    plain = words in (["!{", "ssl_fc", "}"], ["!", "{", "ssl_fc", "}"], ["!ssl_fc"])
    if condition is not None and condition[0] == "unless":
        tls, plain = plain, tls
    return (value == ["https"] and tls) or (value == ["http"] and plain)


def _one_line(text: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f]", " ", text)


def translate(
    text: str,
    file: str = "haproxy.cfg",
    base_dir: str | Path | None = None,
    *,
    accept_loss: bool = False,
    haproxy_version: str = DEFAULT_VERSION,
    keys: frozenset[str] | None = None,
    log_format_problem: LogFormatCheck | None = None,
) -> Translation:
    """Translate haproxy.cfg `text`; `file` names it in messages and comments. With
    `base_dir`, certificate and CA files are looked for there (a note when missing).
    `.if` blocks are evaluated for `haproxy_version`. With `accept_loss`, each directive
    whose loss weakens the configuration is written into the TOML as a comment
    `# NOT TRANSLATED (accepted loss): FILE:LINE: ...` (the caller decides the exit status
    from `Translation.losses` otherwise). `keys`: the keys of issue #13 to write (default:
    those this build's model accepts, keys.product_keys). `log_format_problem`: with it,
    `log-format` becomes `global.log_format` when it says the template can be written."""
    keys = product_keys() if keys is None else keys
    translator = _Translator(file, Path(base_dir) if base_dir is not None else None, keys, log_format_problem)
    translator.run(text, haproxy_version)
    toml = translator.output()
    losses = translator.lines("loss")
    if accept_loss and losses:
        comments = [f"# NOT TRANSLATED (accepted loss): {loss}" for loss in losses]
        head, _, rest = toml.partition("\n")
        toml = "\n".join([head, *comments, rest])
    errors = [f"{file}:{number}: {message}" for number, message in translator.errors]
    return Translation(toml, translator.lines("note", "skip"), losses, errors)


def validate(toml: str, file: str = "<import-haproxy>", base_dir: str | Path | None = None) -> list[str]:
    """Problems our loader finds in a translation, as `FILE:LINE: message` lines. A missing
    certificate or CA file is not a problem of the translation (it is noted when found)."""
    try:
        parse_config(toml, file, base_dir=base_dir)
    except ConfigError as exc:
        return [str(problem) for problem in _real_problems(exc.problems, base_dir)]
    return []


def serves(toml: str) -> bool:
    """Whether a translation listens anywhere (a frontend, or a stats page with a bind):
    `balancer check` refuses a file that serves nothing."""
    data = tomllib.loads(toml)
    return bool(data.get("frontend")) or "bind" in data.get("stats", {})


def _real_problems(problems: Iterable[Any], base_dir: str | Path | None) -> list[Any]:
    """Leave out problems that name a file absent here (a certificate, CA or error file of
    the machine HAProxy runs on): they are noted, not faults of the translation."""
    base = Path(base_dir) if base_dir is not None else Path()
    kept = []
    for problem in problems:
        named = re.findall(r"'([^']+)'", problem.message)
        if any(
            ("file" in problem.message or "director" in problem.message) and not (base / name).exists()
            for name in named
        ):
            continue
        kept.append(problem)
    return kept
