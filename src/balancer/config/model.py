"""The validated, frozen configuration model (SPEC.md "Configuration file").

Every table forbids unknown keys, so a typo is an error rather than a silently ignored
setting. The runtime trusts an instance of `Config`: cross-references (default_backend,
use_backend, modes) are checked by `balancer.config.load` before one is handed out.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from balancer.config.values import Address, AddressValue, Duration, Network, PositiveDuration, Size

Mode = Literal["http", "tcp"]
Balance = Literal[
    "roundrobin",
    "static-rr",
    "leastconn",
    "first",
    "random",
    "source",
    "uri",
    "hdr",
    "url_param",
    "maglev",
    "ring",
    "least_time",
    "least_traffic",
    "agent_load",
]
ServerState = Literal["ready", "drain", "maint"]
# Syslog facilities by HAProxy's names, in code order (kern = 0 ... local7 = 23).
Facility = Literal[
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "auth2",
    "ftp",
    "ntp",
    "audit",
    "alert",
    "cron2",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Global(Model):
    workers: int = Field(1, ge=0, le=256)
    grace: Duration = 30.0
    log: str = "stdout"
    # "text" (HAProxy's httplog layout), "json", or an HAProxy log-format template such as
    # "%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %tsc %{+Q}r" (stats.logformat;
    # its variables are checked where the template is compiled: server.unsupported).
    log_format: str = Field("text", min_length=1)
    log_facility: Facility = "local0"  # of access lines sent to syslog
    maxconn: int = Field(100000, ge=1)
    # TLS sessions kept for every worker when tickets are off (net.session_cache), HAProxy's
    # tune.ssl.cachesize; 0: each worker keeps its own (OpenSSL's cache).
    tls_session_cache: int = Field(20000, ge=0, le=10_000_000)
    user: str = ""
    group: str = ""
    disable_file: str = ""

    @field_validator("log")
    @classmethod
    def _log_target(cls, value: str) -> str:
        if value in ("stdout", "stderr", "none") or value.startswith("file:"):
            return value
        if re.fullmatch(r"syslog:udp://[^:/]+:\d+", value):
            return value
        raise ValueError(
            f'invalid log target {value!r}: use "stdout", "stderr", "none", "file:/path" or "syslog:udp://HOST:PORT"'
        )


class Admin(Model):
    socket: str = ""
    bind: AddressValue | None = None


class Auth(Model):
    user: str
    password: str


class Stats(Model):
    bind: AddressValue | None = None
    uri: str = "/stats"
    auth: Auth | None = None
    refresh: PositiveDuration = 2.0


# The TLS 1.3 suites of RFC 8446 by OpenSSL's names: what `tls.ciphersuites` may list.
TLS13_SUITES: frozenset[str] = frozenset(
    {
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_AES_128_CCM_SHA256",
        "TLS_AES_128_CCM_8_SHA256",
    }
)


# The key-exchange groups OpenSSL 3 names, for TLS 1.2's ECDHE/DHE and TLS 1.3: what
# `tls.curves` may list. OpenSSL refuses a whole list for one name it does not know.
TLS_GROUPS: frozenset[str] = frozenset(
    {
        "X25519",
        "X448",
        "prime256v1",
        "P-256",
        "secp384r1",
        "P-384",
        "secp521r1",
        "P-521",
        "ffdhe2048",
        "ffdhe3072",
        "ffdhe4096",
        "ffdhe6144",
        "ffdhe8192",
    }
)


# OpenSSL's lists a frontend's TLS settings name, colon-separated: by `tls` key, what they
# list, the names known, and an example.
TLS_LISTS: dict[str, tuple[str, frozenset[str], str]] = {
    "ciphersuites": ("TLS 1.3 suite", TLS13_SUITES, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256"),
    "curves": ("key-exchange group", TLS_GROUPS, "X25519:prime256v1:secp384r1"),
}


def unknown_names(key: str, value: str) -> list[str]:
    """The names in `value`, OpenSSL's colon-separated list for the `tls` key `key` (of
    TLS_LISTS), that it does not know, in order; an empty name counts as one."""
    known = TLS_LISTS[key][1]
    return [name for name in value.split(":") if name not in known]


class FrontendTLS(Model):
    cert: list[str] = Field(min_length=1)
    alpn: list[str] = ["http/1.1"]
    ciphers: str = ""
    ciphersuites: str = ""
    curves: str = ""
    min_version: Literal["1.2", "1.3"] = "1.2"
    client_ca: str = ""
    verify_client: Literal["none", "optional", "required"] = "none"
    tickets: bool = True
    ticket_keys: str = ""
    prefer_client_ciphers: bool = False

    @field_validator("ciphersuites", "curves")
    @classmethod
    def _known_names(cls, value: str, info: ValidationInfo) -> str:
        """OpenSSL's names, colon-separated. OpenSSL skips a TLS 1.3 suite it does not
        know (a typo would quietly leave a suite out, or all of them) and refuses a whole
        group list for one group it does not know: both are refused here, at their line."""
        key = str(info.field_name)
        unknown = unknown_names(key, value) if value else []
        if unknown:
            what, known, example = TLS_LISTS[key]
            raise ValueError(
                f"unknown {what} {unknown[0]!r}: the {what}s are {', '.join(sorted(known))}, "
                f'colon-separated, in the server\'s order (e.g. "{example}")'
            )
        return value


class FrontendTimeouts(Model):
    client: Duration = 30.0
    http_request: Duration = 10.0
    http_keep_alive: Duration = 5.0
    tunnel: Duration = 3600.0
    tarpit: PositiveDuration = 5.0  # how long rate_limit's tarpit holds a request (HAProxy `timeout tarpit`)


class RateLimit(Model):
    """Requests per client address (SPEC frontend `rate_limit`): a client may send
    `burst + 1` requests at once, then `requests` per `per`; over that: 429 or a tarpit."""

    requests: int = Field(ge=1)
    per: PositiveDuration = 1.0
    burst: int = Field(0, ge=0)
    by: Literal["src"] = "src"
    action: Literal["deny", "tarpit"] = "deny"
    allow: list[Network] = []  # client networks exempt (NGINX geo/map whitelists, HAProxy `src` ACLs)

    @property
    def capacity(self) -> int:
        """Requests a client may send at once: one at the steady rate, plus the burst."""
        return self.burst + 1

    @property
    def window(self) -> float:
        """Seconds over which at most `capacity` requests pass (the same steady rate)."""
        return self.per * self.capacity / self.requests


class ConnLimit(Model):
    """Connections per client address (SPEC frontend `conn_limit`): at most `per_src` open
    at once and `rate` new ones per `per` (0: no such limit)."""

    per_src: int = Field(0, ge=0)
    rate: int = Field(0, ge=0)
    per: PositiveDuration = 1.0
    allow: list[Network] = []

    @model_validator(mode="after")
    def _some_limit(self) -> ConnLimit:
        if not self.per_src and not self.rate:
            raise ValueError("needs per_src (open connections) or rate (new connections per `per`), or both")
        return self


class Limits(Model):
    """Request size limits; past them the client gets 414, 431 or 413."""

    request_line: Size = 8192
    headers: Size = 32768
    header_count: int = Field(100, ge=1)
    body: Size = 0  # 0 = unlimited


def _compiled_regexes(values: list[str]) -> None:
    for value in values:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {value!r}: {exc}") from None


class Condition(Model):
    """ACL conditions: every key given must match (AND); within a key's list any value (OR).

    `ignore_case` makes every string comparison of the table case-insensitive (HAProxy -i).
    """

    ignore_case: bool = False
    path: list[str] | None = None
    path_beg: list[str] | None = None
    path_end: list[str] | None = None
    path_sub: list[str] | None = None
    path_dir: list[str] | None = None
    path_reg: list[str] | None = None
    host: list[str] | None = None
    host_beg: list[str] | None = None
    host_end: list[str] | None = None
    hdr: dict[str, list[str]] | None = None
    hdr_beg: dict[str, list[str]] | None = None
    hdr_end: dict[str, list[str]] | None = None
    hdr_sub: dict[str, list[str]] | None = None
    hdr_reg: dict[str, list[str]] | None = None
    method: list[str] | None = None
    src: list[Network] | None = None
    query: list[str] | None = None
    url_param: dict[str, list[str]] | None = None
    dst_port: list[Annotated[int, Field(ge=1, le=65535)]] | None = None
    ssl: bool | None = None
    http_auth: str | None = None

    @field_validator("path_reg")
    @classmethod
    def _regexes_compile(cls, values: list[str] | None) -> list[str] | None:
        _compiled_regexes(values or [])
        return values

    @field_validator("hdr_reg")
    @classmethod
    def _header_regexes_compile(cls, values: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        for patterns in (values or {}).values():
            _compiled_regexes(patterns)
        return values


class ResponseCondition(Condition):
    """A response rule's condition: the request's tests plus the response status."""

    status: list[Annotated[int, Field(ge=100, le=599)]] | None = None


class Redirect(Model):
    """Exactly one of: `location` (the whole target), `scheme` (same host and URI, another
    scheme), `prefix` (prepended to the request's URI); HAProxy redirect location|scheme|prefix."""

    location: str | None = None
    scheme: str | None = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9+.\-]*$")
    prefix: str | None = None
    code: Literal[301, 302, 303, 307, 308] = 302

    @model_validator(mode="after")
    def _one_target(self) -> Redirect:
        given = [name for name in ("location", "scheme", "prefix") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                f"redirect needs exactly one of location, scheme, prefix (got {', '.join(given) or 'none'})"
            )
        return self


class BackendRule(Model):
    """A rule of [[backend.rule]]: evaluated after the frontend chose the backend."""

    if_: Condition | None = Field(None, alias="if")
    unless: Condition | None = None
    action: Literal["deny", "allow", "auth"] | None = None
    realm: str | None = None  # of action = "auth"
    redirect: Redirect | None = None
    set_header: dict[str, str] = {}
    add_header: dict[str, str] = {}
    del_header: list[str] = []


class Rule(BackendRule):
    """A rule of [[frontend.rule]]: may also choose the backend."""

    use_backend: str | None = None


class ResponseRule(Model):
    """Header edits applied to a response head (HAProxy http-response set/add/del-header)."""

    if_: ResponseCondition | None = Field(None, alias="if")
    unless: ResponseCondition | None = None
    set_header: dict[str, str] = {}
    add_header: dict[str, str] = {}
    del_header: list[str] = []


class User(Model):
    """One user of a userlist: `password` in clear, or `password_hash` in crypt(3) form."""

    name: str = Field(min_length=1, pattern=r"^[^:]+$")
    password: str | None = None
    password_hash: str | None = None

    @model_validator(mode="after")
    def _one_password(self) -> User:
        if (self.password is None) == (self.password_hash is None):
            raise ValueError("a user needs exactly one of password, password_hash")
        return self


class Userlist(Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    user: list[User] = []


def client_speaks_first(mode: str, tls: bool, accept_proxy: bool) -> bool:
    """Whether a frontend's client sends the first bytes (HTTP, a TLS ClientHello, a PROXY
    header): where `defer_accept` is on by default. A plain TCP relay's server may speak
    first (SMTP, MySQL)."""
    return mode == "http" or tls or accept_proxy


class Frontend(Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    bind: list[AddressValue] = Field(min_length=1)
    mode: Mode = "http"
    default_backend: str | None = None
    maxconn: int = Field(0, ge=0)
    backlog: int = Field(4096, ge=1, le=1 << 20)  # listen queue; the kernel caps it at net.core.somaxconn
    accept_proxy: bool = False
    # Hand a connection over once its first bytes arrive (TCP_DEFER_ACCEPT). Not set: on
    # where the client speaks first (HTTP, TLS, accept_proxy), off for a plain TCP relay.
    defer_accept: bool | None = None
    tls: FrontendTLS | None = None
    # Cleartext HTTP/2 with prior knowledge (the connection preface) besides HTTP/1.1.
    h2c: bool = False
    timeouts: FrontendTimeouts = FrontendTimeouts()
    forwardfor: bool = True
    # Read a request's body (up to limits.body, else 1 MiB) before choosing a server.
    buffer_request: bool = False
    limits: Limits = Limits()
    rate_limit: RateLimit | None = None
    conn_limit: ConnLimit | None = None
    rule: list[Rule] = []
    response_rule: list[ResponseRule] = []
    monitor_uri: str = Field("", pattern=r"^(/[^\s?#]*)?$")
    errorfiles: dict[str, str] = {}

    @field_validator("bind", mode="before")
    @classmethod
    def _one_bind(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    def defers_accept(self) -> bool:
        """Whether the kernel hands a connection over only once its first bytes arrive."""
        if self.defer_accept is not None:
            return self.defer_accept
        return client_speaks_first(self.mode, self.tls is not None, self.accept_proxy)


class StickTable(Model):
    on: Literal["src"] = "src"
    expire: PositiveDuration = 1800.0
    size: int = Field(100000, ge=1)


class Cookie(Model):
    name: str = Field(pattern=r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # an RFC 6265 cookie-name (token)
    mode: Literal["insert", "prefix", "rewrite"] = "insert"
    httponly: bool = False
    secure: bool = False
    maxidle: Duration = 0.0
    maxlife: Duration = 0.0
    nocache: bool = True
    indirect: bool = True  # insert mode: the cookie is removed from requests, not re-set when right
    preserve: bool = False  # keep a server's own Set-Cookie of this name untouched
    postonly: bool = False  # insert only on responses to POST


class Check(Model):
    type: Literal["tcp", "http"] = "tcp"
    method: str = "GET"
    path: str = "/"
    host: str = ""
    expect: int | list[int] | str = 200
    body: str = ""
    interval: PositiveDuration = 2.0
    fastinterval: PositiveDuration | None = None
    downinterval: PositiveDuration | None = None
    rise: int = Field(2, ge=1)
    fall: int = Field(3, ge=1)
    timeout: PositiveDuration = 1.0
    ssl: bool = False

    @field_validator("body")
    @classmethod
    def _body_compiles(cls, value: str) -> str:
        # The probe searches the raw bytes of the answer, so compile it as it will be used:
        # a pattern that fails there would make every check crash, and the server never go down.
        try:
            re.compile(value.encode())
        except re.error as exc:
            raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
        return value

    @field_validator("method")
    @classmethod
    def _method_token(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z]+", value):
            raise ValueError(f"check method {value!r} must be an upper-case HTTP method such as GET, HEAD, OPTIONS")
        return value

    @field_validator("expect")
    @classmethod
    def _expect_form(cls, value: int | list[int] | str) -> int | list[int] | str:
        statuses = [value] if isinstance(value, int) else value if isinstance(value, list) else []
        for status in statuses:
            if not 100 <= status <= 599:
                raise ValueError(f"expect status {status} is not an HTTP status (100-599)")
        if isinstance(value, str):
            for part in value.split(","):
                if not re.fullmatch(r"\s*([1-5]xx|[1-5]\d\d(-[1-5]\d\d)?)\s*", part, re.IGNORECASE):
                    raise ValueError(
                        f'expect {value!r}: use statuses, ranges and classes such as "200", "200-399", "2xx,3xx"'
                    )
        return value


class Observe(Model):
    errors: int = Field(5, ge=1)
    cooldown: PositiveDuration = 30.0
    max_ejected: str = "50%"

    @field_validator("max_ejected")
    @classmethod
    def _percentage(cls, value: str) -> str:
        if not re.fullmatch(r"\d{1,3}%", value) or int(value[:-1]) > 100:
            raise ValueError(f'expected a percentage such as "50%", got {value!r}')
        return value


class Agent(Model):
    port: int = Field(ge=1, le=65535)
    interval: PositiveDuration = 5.0
    address: str = ""


class BackendTimeouts(Model):
    connect: Duration = 5.0
    server: Duration = 30.0
    queue: Duration = 5.0


class Pool(Model):
    max_idle_per_server: int = Field(64, ge=0)
    idle_timeout: Duration = 30.0


class Server(Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    address: AddressValue
    weight: int = Field(100, ge=0, le=256)
    maxconn: int = Field(0, ge=0)
    backup: bool = False
    slowstart: Duration = 0.0
    ssl: bool = False
    ca_file: str = ""
    sni: str = ""
    state: ServerState = "ready"


class Backend(Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    mode: Mode = "http"
    balance: Balance = "roundrobin"
    hash_key: str = "src"
    hash_type: Literal["map", "consistent"] = "map"
    stick: StickTable | None = None
    cookie: Cookie | None = None
    check: Check | None = None
    observe: Observe | None = None
    agent: Agent | None = None
    retries: int = Field(2, ge=0, le=100)
    redispatch: bool = True  # a retry may go to another server
    persist: bool = False  # a client pinned to a down/maint server stays pinned (HAProxy option persist)
    timeouts: BackendTimeouts = BackendTimeouts()
    send_proxy: Literal["", "v1", "v2"] = ""
    source: list[str] = []
    pool: Pool = Pool()
    host: str = ""  # rewrite the Host header sent to servers; "" keeps the client's
    server: list[Server] = []
    rule: list[BackendRule] = []
    response_rule: list[ResponseRule] = []
    errorfiles: dict[str, str] = {}

    @field_validator("source")
    @classmethod
    def _source_addresses(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"source {value!r} is not an IP address (one local address per entry)") from None
        return values

    @field_validator("hash_key")
    @classmethod
    def _hash_key(cls, value: str) -> str:
        if value in ("src", "uri", "5tuple") or re.fullmatch(r"(url_param|hdr|cookie)\([^()]+\)", value):
            return value
        raise ValueError(
            f"invalid hash_key {value!r}: use src, uri, 5tuple, url_param(name), hdr(name) or cookie(name)"
        )


# -- the tier tables (SPEC.md "The tiers beyond one machine") ---------------------------
# Shape and single values are checked here; what needs a whole table (a prime table size,
# a node listed twice, a seed for the hashing methods) is checked by balancer.config.load.
# The L4 tier is IPv4 only in this version: its nftables table is `table ip`.

L4Method = Literal["maglev", "source", "roundrobin", "random"]
L4Forward = Literal["vxlan", "ipip", "direct"]
# nftables marks and VNIs are 32 and 24 bits; a jhash seed is 32 bits.
MAX_SEED = 2**32 - 1
MAX_VNI = 2**24 - 1
# Bigger tables cost seconds to build and megabytes of nft text for no better balance.
MAX_TABLE_SIZE = 1_000_003


def ipv4_address(value: str, what: str) -> str:
    """`value` if it is an IPv4 address written canonically; refuses names, networks, IPv6."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not an IP address") from None
    if address.version != 4:
        raise ValueError(f"{what} {value!r}: the L4 tier is IPv4 only in this version")
    return str(address)


class L4Check(Check):
    """A backend's check, plus the port probed on the L7 node's own address
    (default: the first of the table's ports, else 80)."""

    port: int | None = Field(None, ge=1, le=65535)


def default_vni(address: str) -> int:
    """The VXLAN network identifier of the tunnel of the L7 node at underlay `address` when
    none is set (SPEC: its low 16 bits): the L4 side ([[l4.node]]) and the L7 side ([dsr])
    derive it here, so that they agree."""
    return int(ipaddress.IPv4Address(address)) & 0xFFFF


class L4Node(Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    address: str
    weight: int = Field(100, ge=1, le=256)
    vni: int | None = Field(None, ge=1, le=MAX_VNI)  # default: the low 16 bits of address

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return ipv4_address(value, "address")

    def tunnel_vni(self) -> int:
        """The VXLAN network identifier of this node's tunnel."""
        return self.vni if self.vni is not None else default_vni(self.address)


class L4(Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    vip: str
    ports: list[int] = []  # [] = every port
    protocol: Literal["tcp", "udp"] = "tcp"
    method: L4Method = "maglev"
    table_size: int = Field(65537, ge=2, le=MAX_TABLE_SIZE)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)  # required by maglev and source (load.py)
    forward: L4Forward = "vxlan"
    check: L4Check | None = None
    node: list[L4Node] = []

    @field_validator("vip")
    @classmethod
    def _vip(cls, value: str) -> str:
        return ipv4_address(value, "vip")

    @field_validator("ports")
    @classmethod
    def _ports(cls, values: list[int]) -> list[int]:
        for port in values:
            if not 1 <= port <= 65535:
                raise ValueError(f"port {port} is out of range (1 to 65535)")
        seen: set[int] = set()
        for port in values:
            if port in seen:
                raise ValueError(f"port {port} is listed twice")
            seen.add(port)
        return values

    def check_port(self) -> int:
        """The port a health check of this table's L7 nodes probes."""
        if self.check is not None and self.check.port is not None:
            return self.check.port
        return self.ports[0] if self.ports else 80


class DsrTunnel(Model):
    type: L4Forward = "direct"
    local: str = ""  # the decapsulation endpoint: this node's underlay address
    vni: int | None = Field(None, ge=1, le=MAX_VNI)  # default: the low 16 bits of local

    @field_validator("local")
    @classmethod
    def _local(cls, value: str) -> str:
        return ipv4_address(value, "local") if value else value

    def tunnel_vni(self) -> int:
        """The VXLAN network identifier of this node's tunnel (`local` must be set)."""
        return self.vni if self.vni is not None else default_vni(self.local)


class Dsr(Model):
    vips: list[str] = Field(min_length=1)
    tunnel: DsrTunnel = DsrTunnel()

    @field_validator("vips")
    @classmethod
    def _vips(cls, values: list[str]) -> list[str]:
        addresses = [ipv4_address(value, "vip") for value in values]
        for number, address in enumerate(addresses):
            if address in addresses[:number]:
                raise ValueError(f"vip {address} is listed twice")
        return addresses


# BGP autonomous system numbers are 32 bits; 0 is reserved (RFC 7607).
MAX_AS = 2**32 - 1


class BgpNeighbor(Model):
    address: str
    peer_as: int = Field(ge=1, le=MAX_AS)
    port: int = Field(179, ge=1, le=65535)  # the router's BGP port
    passive: bool = False  # wait for the router to connect instead of connecting

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return ipv4_address(value, "neighbor address")


class Bgp(Model):
    """Announce VIPs to routers through ExaBGP (cluster/bgp.py). IPv4 unicast only."""

    router_id: str
    local_as: int = Field(ge=1, le=MAX_AS)
    local_address: str
    hold_time: Duration = 6.0  # 0 (no keepalives) or at least 3 s (RFC 4271)
    announce: list[str] = []  # default: every [[l4]] vip, else the frontends' addresses (/32)
    neighbor: list[BgpNeighbor] = []

    @field_validator("router_id")
    @classmethod
    def _router_id(cls, value: str) -> str:
        return ipv4_address(value, "router_id")

    @field_validator("local_address")
    @classmethod
    def _local_address(cls, value: str) -> str:
        return ipv4_address(value, "local_address")

    @field_validator("hold_time")
    @classmethod
    def _hold_time(cls, value: float) -> float:
        if value != 0 and not 3 <= value <= 65535:
            raise ValueError(f"hold_time {value:g}s: use 0 (no keepalives) or 3s to 65535s (RFC 4271)")
        if value != int(value):
            raise ValueError(f"hold_time {value:g}s: BGP counts it in whole seconds")
        return value

    @field_validator("announce")
    @classmethod
    def _announce(cls, values: list[str]) -> list[str]:
        prefixes: list[str] = []
        for value in values:
            try:
                network = ipaddress.ip_network(value, strict=True)
            except ValueError:
                raise ValueError(
                    f"announce {value!r} is not a prefix such as 10.100.0.1/32 (host bits must be 0)"
                ) from None
            if network.version != 4:
                raise ValueError(f"announce {value!r}: BGP announces IPv4 prefixes only in this version")
            prefix = str(network)
            if prefix in prefixes:
                raise ValueError(f"announce {prefix} is listed twice")
            prefixes.append(prefix)
        return prefixes


# -- [vrrp]: an active/passive pair through keepalived (cluster/vrrp.py) ----------------
# keepalived speaks VRRP version 3 (RFC 5798): adverts counted in centiseconds, so an
# interval below a second is allowed, and no authentication (v3 removed it; v2's PASS
# type sends the password in clear and protects nothing).
MIN_ADVERT = 0.01
MAX_ADVERT = 40.95  # 4095 centiseconds, the 12-bit field of a VRRPv3 advert


def _vrrp_ipv4(value: str, what: str) -> str:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not an IP address") from None
    if address.version != 4:
        raise ValueError(f"{what} {value!r}: [vrrp] is IPv4 only in this version")
    return str(address)


class Vrrp(Model):
    """Hold VIPs on one node of a pair (cluster/vrrp.py). IPv4 only."""

    interface: str = Field(pattern=r"^[A-Za-z0-9_.\-@]{1,15}$")  # where the VIPs go and the adverts flow
    virtual_router_id: int = Field(ge=1, le=255)  # the same on both nodes; unique on the segment
    priority: int = Field(100, ge=1, le=254)  # the higher holds the VIPs
    advert_interval: PositiveDuration = 1.0
    vips: list[str] = Field(min_length=1)  # "10.0.3.100/24": address and its prefix on the interface
    unicast_peers: list[str] = []  # the other nodes' addresses; [] = multicast (224.0.0.18)
    unicast_src: str = ""  # this node's address for unicast adverts; default: the interface's first
    preempt: bool = True  # a node of higher priority takes the VIPs back when it is ready
    track_interval: PositiveDuration = 0.25  # how often the master re-reads its own health

    @field_validator("advert_interval")
    @classmethod
    def _advert(cls, value: float) -> float:
        if not MIN_ADVERT <= value <= MAX_ADVERT or abs(value * 100 - round(value * 100)) > 1e-6:
            raise ValueError(f"advert_interval {value:g}s: VRRPv3 counts it in hundredths of a second, 10ms to 40.95s")
        return value

    @field_validator("track_interval")
    @classmethod
    def _track(cls, value: float) -> float:
        if value > 1.0:
            raise ValueError(f"track_interval {value:g}s: at most 1s (a sick node must give up its VIPs quickly)")
        return value

    @field_validator("vips")
    @classmethod
    def _vips(cls, values: list[str]) -> list[str]:
        interfaces: list[str] = []
        for value in values:
            try:
                interface = ipaddress.ip_interface(value)
            except ValueError:
                raise ValueError(f"vip {value!r} is not an address with its prefix, such as 10.0.3.100/24") from None
            if interface.version != 4:
                raise ValueError(f"vip {value!r}: [vrrp] is IPv4 only in this version")
            written = str(interface)
            if any(str(ipaddress.ip_interface(seen).ip) == str(interface.ip) for seen in interfaces):
                raise ValueError(f"vip {interface.ip} is listed twice")
            interfaces.append(written)
        return interfaces

    @field_validator("unicast_peers")
    @classmethod
    def _peers(cls, values: list[str]) -> list[str]:
        addresses = [_vrrp_ipv4(value, "unicast peer") for value in values]
        for number, address in enumerate(addresses):
            if address in addresses[:number]:
                raise ValueError(f"unicast peer {address} is listed twice")
        return addresses

    @field_validator("unicast_src")
    @classmethod
    def _src(cls, value: str) -> str:
        return _vrrp_ipv4(value, "unicast_src") if value else value

    def addresses(self) -> list[str]:
        """The VIPs without their prefix length."""
        return [str(ipaddress.ip_interface(vip).ip) for vip in self.vips]


# -- [dns]: a health-aware authoritative DNS server (cluster/dns.py) ----------------------
# Names are checked here label by label (RFC 1035 lengths; letters, digits, '-' and '_');
# what needs the whole table (a site named, a record twice, an address family) is checked
# by balancer.config.load.

DnsPolicy = Literal["all", "weighted", "nearest"]
# DNS counts TTLs and SOA timers in whole seconds, in 31 bits (RFC 2181 section 8).
MAX_TTL = 2**31 - 1
MAX_SERIAL = 2**32 - 1
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_\-]{1,63}(?<!-)")


def dns_name(value: str, what: str) -> str:
    """`value` lower-cased without a final dot if it is a DNS name of 1 to 253 characters
    made of labels of letters, digits, '-' and '_' (no '-' at either end); refuses "",
    empty labels, spaces and wildcards."""
    name = value[:-1] if value.endswith(".") else value
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(
            f"invalid {what} {value!r}: not a DNS name (labels of 1 to 63 letters, digits, '-' or '_', joined by dots)"
        )
    return name.lower()


def _whole_seconds(value: float, what: str) -> float:
    if value != int(value) or value > MAX_TTL:
        raise ValueError(f"invalid {what} {value:g}s: DNS counts it in whole seconds, at most {MAX_TTL}")
    return value


class DnsCheck(Check):
    """A backend's check, plus the port probed on the answer's address."""

    port: int = Field(80, ge=1, le=65535)


class DnsAnswer(Model):
    address: str
    site: str = ""  # a [[dns.site]] name; "" = no site ("nearest" serves it after the client's site)
    weight: int = Field(100, ge=1, le=1000)  # "weighted": share of the answers
    check: DnsCheck | None = None  # no check: always served

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"invalid address {value!r}: not an IP address") from None


class DnsRecord(Model):
    name: str  # relative to the zone ("www", "a.b"), "@" for the zone itself, or "www.example.com."
    type: Literal["A", "AAAA"] = "A"
    policy: DnsPolicy = "all"
    ttl: Duration | None = None  # default: [dns] ttl
    answers: list[DnsAnswer] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if value == "@":
            return value
        dns_name(value, "name")
        return value

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: float | None) -> float | None:
        return None if value is None else _whole_seconds(value, "ttl")


class DnsSite(Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    prefixes: list[Network] = Field(min_length=1)  # client addresses, or their EDNS Client Subnet


class DnsSoa(Model):
    """The zone's SOA record (RFC 1035 3.3.13); `minimum` is the negative-caching TTL
    (RFC 2308): how long resolvers remember a NXDOMAIN or an empty answer."""

    mname: str = ""  # default: the first of [dns] ns
    rname: str = ""  # the administrator's mailbox, "hostmaster.example.com" for hostmaster@; default hostmaster.ZONE
    serial: int = Field(1, ge=0, le=MAX_SERIAL)
    refresh: Duration = 3600.0
    retry: Duration = 600.0
    expire: Duration = 1209600.0  # two weeks (RFC 1912)
    minimum: Duration = 30.0

    @field_validator("mname", "rname")
    @classmethod
    def _names(cls, value: str, info: ValidationInfo) -> str:
        return dns_name(value, str(info.field_name)) if value else value

    @field_validator("refresh", "retry", "expire", "minimum")
    @classmethod
    def _timers(cls, value: float, info: ValidationInfo) -> float:
        return _whole_seconds(value, str(info.field_name))


class Dns(Model):
    bind: list[AddressValue] = Field(min_length=1)  # each address: UDP and TCP
    zone: str
    ttl: Duration = 30.0  # of the answers; a record's ttl overrides it
    ns: list[str] = []  # the zone's name servers (NS at the apex); default ["ns1.ZONE"]
    soa: DnsSoa = DnsSoa()
    tcp_idle_timeout: PositiveDuration = 10.0  # a TCP connection without a query this long is closed
    record: list[DnsRecord] = []
    site: list[DnsSite] = []

    @field_validator("bind", mode="before")
    @classmethod
    def _one_bind(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return dns_name(value, "zone")

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: float) -> float:
        return _whole_seconds(value, "ttl")

    @field_validator("ns")
    @classmethod
    def _ns(cls, values: list[str]) -> list[str]:
        names = [dns_name(value, "ns") for value in values]
        for number, name in enumerate(names):
            if name in names[:number]:
                raise ValueError(f"ns {name} is listed twice")
        return names

    def name_servers(self) -> list[str]:
        """The NS names of the zone (absolute, no final dot)."""
        return list(self.ns) or [f"ns1.{self.zone}"]

    def soa_names(self) -> tuple[str, str]:
        """(mname, rname) of the SOA, defaults filled in."""
        return (self.soa.mname or self.name_servers()[0], self.soa.rname or f"hostmaster.{self.zone}")

    def owner(self, record: DnsRecord) -> str:
        """The absolute name (no final dot, lower case) a record answers for."""
        if record.name == "@":
            return self.zone
        if record.name.endswith("."):
            return record.name[:-1].lower()
        return f"{record.name.lower()}.{self.zone}"


# -- [peers]: stick tables replicated between the nodes of a pair (cluster/peers.py) ------


class Peers(Model):
    """This node's end of the replication: where it listens, whom it sends to."""

    bind: AddressValue  # where the other nodes connect (they name this address in their `nodes`)
    nodes: list[AddressValue] = Field(min_length=1)  # the other nodes' `bind` addresses
    key: str = ""  # shared secret both ends prove they know; set it on any network others reach
    heartbeat: PositiveDuration = 2.0  # sent on an idle link; three missed end it

    @field_validator("nodes")
    @classmethod
    def _nodes(cls, values: list[Address]) -> list[Address]:
        for number, address in enumerate(values):
            if address.is_unix or not address.host or not address.port:
                raise ValueError(f"peer node {address}: a host and a port, such as 10.0.3.12:10000")
            if address in values[:number]:
                raise ValueError(f"peer node {address} is listed twice")
        return values

    @model_validator(mode="after")
    def _not_itself(self) -> Peers:
        if self.bind.is_unix or not self.bind.port:
            raise ValueError(f"[peers] bind {self.bind}: an address and a port, such as 10.0.3.11:10000")
        if self.bind in self.nodes:
            raise ValueError(f"[peers] nodes lists this node's own bind {self.bind}")
        return self


class Config(Model):
    global_: Global = Field(Global(), alias="global")
    admin: Admin = Admin()
    stats: Stats = Stats()
    frontend: list[Frontend] = []
    backend: list[Backend] = []
    userlist: list[Userlist] = []
    l4: list[L4] = []
    dsr: Dsr | None = None
    bgp: Bgp | None = None
    dns: Dns | None = None
    vrrp: Vrrp | None = None
    peers: Peers | None = None

    def bgp_announce(self) -> list[str]:
        """The prefixes [bgp] announces: `announce` as written, else every [[l4]] vip, else
        the IPv4 addresses the frontends bind, each /32 (a wildcard, a name, a loopback or
        link-local address gives none: no router can reach it)."""
        if self.bgp is not None and self.bgp.announce:
            return list(self.bgp.announce)
        if self.l4:
            addresses = [table.vip for table in self.l4]
        else:
            addresses = []
            for frontend in self.frontend:
                for address in frontend.bind:
                    try:
                        ip = ipaddress.ip_address(address.host)
                    except ValueError:
                        continue
                    if ip.version == 4 and not (ip.is_unspecified or ip.is_loopback or ip.is_link_local):
                        addresses.append(str(ip))
        return list(dict.fromkeys(f"{address}/32" for address in addresses))

    def backend_named(self, name: str) -> Backend:
        for backend in self.backend:
            if backend.name == name:
                return backend
        raise KeyError(name)
