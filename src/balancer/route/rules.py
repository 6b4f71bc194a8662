"""Frontend rules: ACL conditions compiled once at load, evaluated in order per request.

Semantics (documented for operators in docs/configuration.md):
- every key in one `if` table must match (AND); within a key's list any value matches (OR);
  `unless` negates a second table; a rule with neither always matches;
- `use_backend`, `action = "deny"` (403), `action = "auth"` (401 with a Basic challenge),
  `action = "allow"` and `redirect` end the evaluation: first match wins;
  `set_header`/`add_header`/`del_header` rules change the request and evaluation goes on,
  so several of them can apply before the deciding rule;
- when no deciding rule matched, `default_backend` serves the request.
- a backend's rules (`[[backend.rule]]`) run the same way once the frontend chose it;
  they cannot choose a backend, and "allow" or no deciding rule lets the request through.
Conditions see the request as the client sent it, after earlier set/add/del rules.
`ignore_case` lower-cases both sides of every string test of its table (HAProxy -i): the
patterns once here, the request's strings when tested. A table compiles to one predicate,
so a rule set pays at request time only for the tests it has.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from balancer.config.model import BackendRule, Condition, Frontend
from balancer.proto.basic_auth import Userlist

# A client address as (IP version, address as an integer): what src conditions compare.
NumericIP = tuple[int, int]


def numeric_ip(text: str) -> NumericIP | None:
    """(4 or 6, integer) for an address in text form; None for anything else (unix peers).
    inet_pton is C: ipaddress.ip_address would be Python code on every new connection."""
    try:
        if ":" in text:
            return (6, int.from_bytes(socket.inet_pton(socket.AF_INET6, text.partition("%")[0]), "big"))
        return (4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big"))
    except OSError:
        return None


class RequestView(Protocol):
    """What conditions may look at. Header names are compared lower-cased."""

    method: bytes
    path: bytes
    query: bytes
    host: bytes
    headers: list[tuple[bytes, bytes]]
    hop_headers: list[tuple[bytes, bytes]] | None  # connection-level headers: matched, not forwarded

    def source_ip(self) -> NumericIP | None: ...

    def local_port(self) -> int:
        """The port of the listener the client connected to (0 when unknown)."""
        ...

    def over_tls(self) -> bool:
        """Whether the client connection is TLS (HAProxy ssl_fc)."""
        ...

    def forget_forwarded_for(self) -> None:
        """Send the server no X-Forwarded-For values of the client's own (a del_header rule)."""
        ...


Predicate = Callable[[RequestView], bool]
Verdict = Literal["backend", "deny", "redirect", "auth"]
# How a redirect's Location is made: the configured text, or from the request.
RedirectKind = Literal["location", "scheme", "prefix"]


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    backend: str | None = None
    redirect_code: int = 0
    redirect_location: bytes = b""  # the location, scheme or prefix, as redirect_kind says
    redirect_kind: RedirectKind = "location"
    realm: bytes = b""  # of an auth verdict


def redirect_target(decision: Decision, request: RequestView) -> bytes:
    """The Location of a redirect decision for `request`: `scheme` keeps the Host and the
    URI (HAProxy `redirect scheme`), `prefix` is put before the URI (`redirect prefix`; a
    prefix of "/" leaves the URI alone)."""
    if decision.redirect_kind == "location":
        return decision.redirect_location
    uri = request.path + b"?" + request.query if request.query else request.path
    if decision.redirect_kind == "scheme":
        return decision.redirect_location + b"://" + request.host + uri
    prefix = decision.redirect_location
    return uri if prefix == b"/" else prefix.rstrip(b"/") + uri


def _host_of(request: RequestView) -> bytes:
    host = request.host.lower()
    if host.startswith(b"["):
        return host.partition(b"]")[0] + b"]"
    return host.partition(b":")[0]


def _begins(path: bytes, prefixes: list[bytes]) -> bool:
    for prefix in prefixes:  # noqa: SIM110 (a loop beats a generator compiled)
        if path.startswith(prefix):
            return True
    return False


def _ends(path: bytes, suffixes: list[bytes]) -> bool:
    for suffix in suffixes:  # noqa: SIM110
        if path.endswith(suffix):
            return True
    return False


def _contains(text: bytes, parts: list[bytes]) -> bool:
    for part in parts:  # noqa: SIM110
        if part in text:
            return True
    return False


def _has_dir(path: bytes, dirs: list[bytes]) -> bool:
    """HAProxy -m dir: a pattern found in `path` as whole `/`-delimited segments."""
    framed = b"/" + path + b"/"
    for segment in dirs:  # noqa: SIM110
        if segment in framed:
            return True
    return False


def _header_values(request: RequestView, name: bytes) -> list[bytes]:
    values = [v for n, v in request.headers if n.lower() == name]
    if request.hop_headers:
        values += [v for n, v in request.hop_headers if n.lower() == name]
    return values


def _query_param(query: bytes, name: bytes, fold: bool) -> list[bytes]:
    """The values of query parameter `name` (`&`- or `;`-separated, undecoded)."""
    found: list[bytes] = []
    for pair in query.replace(b";", b"&").split(b"&"):
        key, _, value = pair.partition(b"=")
        if (key.lower() if fold else key) == name:
            found.append(value)
    return found


# How a header or query value is compared with a table's patterns: exact, beginning, end,
# substring, regular expression.
_Match = Literal["exact", "beg", "end", "sub", "reg"]


def _value_test(kind: _Match, patterns: list[str], fold: bool) -> Callable[[bytes], bool]:
    """A test of one value against `patterns` (any of them)."""
    encoded = [p.lower().encode() if fold else p.encode() for p in patterns]
    if kind == "reg":
        regex = re.compile(b"|".join(b"(?:" + p.encode() + b")" for p in patterns), re.IGNORECASE if fold else 0)
        return lambda value: regex.search(value) is not None
    if kind == "exact":
        exact = frozenset(encoded)
        if fold:
            return lambda value: value.lower() in exact
        return lambda value: value in exact
    if kind == "beg":
        if fold:
            return lambda value: _begins(value.lower(), encoded)
        return lambda value: _begins(value, encoded)
    if kind == "end":
        if fold:
            return lambda value: _ends(value.lower(), encoded)
        return lambda value: _ends(value, encoded)
    if fold:
        return lambda value: _contains(value.lower(), encoded)
    return lambda value: _contains(value, encoded)


def _header_test(name: bytes, kind: _Match, patterns: list[str], fold: bool) -> Predicate:
    """Header `name` present (no patterns) or with a value matching one of them."""
    if not patterns:
        return lambda r: bool(_header_values(r, name))
    test = _value_test(kind, patterns, fold)
    return lambda r: any(test(v) for v in _header_values(r, name))


def _url_param_test(name: str, patterns: list[str], fold: bool) -> Predicate:
    key = name.lower().encode() if fold else name.encode()
    if not patterns:
        return lambda r: bool(r.query) and bool(_query_param(r.query, key, fold))
    test = _value_test("exact", patterns, fold)
    return lambda r: bool(r.query) and any(test(v) for v in _query_param(r.query, key, fold))


def _path_test(kind: _Match, patterns: list[str], fold: bool) -> Predicate:
    test = _value_test(kind, patterns, fold)
    return lambda r: test(r.path)


def compile_condition(condition: Condition, userlists: dict[str, Userlist] | None = None) -> Predicate:
    """One predicate that is true when every key of `condition` matches. `userlists` are
    the compiled [[userlist]] tables an `http_auth` test names (load checked the names)."""
    fold = condition.ignore_case
    tests: list[Predicate] = []
    if condition.path is not None:
        if fold:
            tests.append(_path_test("exact", condition.path, True))
        else:
            exact = frozenset(p.encode() for p in condition.path)
            tests.append(lambda r: r.path in exact)
    # startswith/endswith with one bytes argument compile to a direct call; with a tuple
    # they are a Python method call, several times dearer.
    if condition.path_beg is not None:
        if fold:
            tests.append(_path_test("beg", condition.path_beg, True))
        else:
            prefixes = [p.encode() for p in condition.path_beg]
            tests.append(lambda r: _begins(r.path, prefixes))
    if condition.path_end is not None:
        if fold:
            tests.append(_path_test("end", condition.path_end, True))
        else:
            suffixes = [p.encode() for p in condition.path_end]
            tests.append(lambda r: _ends(r.path, suffixes))
    if condition.path_sub is not None:
        tests.append(_path_test("sub", condition.path_sub, fold))
    if condition.path_dir is not None:
        dirs = [b"/" + (p.lower() if fold else p).strip("/").encode() + b"/" for p in condition.path_dir]
        if fold:
            tests.append(lambda r: _has_dir(r.path.lower(), dirs))
        else:
            tests.append(lambda r: _has_dir(r.path, dirs))
    if condition.path_reg is not None:
        tests.append(_path_test("reg", condition.path_reg, fold))
    # Host names are case-insensitive whatever ignore_case says: compared lower-cased.
    if condition.host is not None:
        hosts = frozenset(h.lower().encode() for h in condition.host)
        tests.append(lambda r: _host_of(r) in hosts)
    if condition.host_beg is not None:
        host_prefixes = [h.lower().encode() for h in condition.host_beg]
        tests.append(lambda r: _begins(_host_of(r), host_prefixes))
    if condition.host_end is not None:
        host_suffixes = [h.lower().encode() for h in condition.host_end]
        tests.append(lambda r: _ends(_host_of(r), host_suffixes))
    if condition.method is not None:
        methods = frozenset(m.encode() for m in condition.method)
        tests.append(lambda r: r.method in methods)
    if condition.query is not None:
        if fold:
            folded = frozenset(q.lower().encode() for q in condition.query)
            tests.append(lambda r: r.query.lower() in folded)
        else:
            queries = frozenset(q.encode() for q in condition.query)
            tests.append(lambda r: r.query in queries)
    if condition.src is not None:
        # Integer masks: ipaddress's `in` is Python code and would run on every request.
        networks = [(net.version, int(net.network_address), int(net.netmask)) for net in condition.src]

        def src_matches(r: RequestView) -> bool:
            ip = r.source_ip()
            if ip is None:
                return False
            version, value = ip
            for net_version, address, mask in networks:  # noqa: SIM110 (a loop beats a generator here)
                if version == net_version and value & mask == address:
                    return True
            return False

        tests.append(src_matches)
    kinds: tuple[tuple[_Match, dict[str, list[str]] | None], ...] = (
        ("exact", condition.hdr),
        ("beg", condition.hdr_beg),
        ("end", condition.hdr_end),
        ("sub", condition.hdr_sub),
        ("reg", condition.hdr_reg),
    )
    for kind, table in kinds:
        for name, values in (table or {}).items():
            tests.append(_header_test(name.lower().encode(), kind, values, fold))
    for name, values in (condition.url_param or {}).items():
        tests.append(_url_param_test(name, values, fold))
    if condition.dst_port is not None:
        ports = frozenset(condition.dst_port)
        tests.append(lambda r: r.local_port() in ports)
    if condition.ssl is not None:
        wanted_tls = condition.ssl
        tests.append(lambda r: r.over_tls() == wanted_tls)
    if condition.http_auth is not None:
        users = (userlists or {}).get(condition.http_auth)
        if users is None:
            tests.append(lambda r: False)
        else:
            checked = users
            tests.append(lambda r: any(checked.check(v) for v in _header_values(r, b"authorization")))
    if not tests:
        return lambda r: True
    if len(tests) == 1:
        return tests[0]
    return lambda r: all(test(r) for test in tests)


class CompiledRule:
    __slots__ = ("add_header", "decision", "del_header", "drops_forwarded_for", "edits", "matches", "set_header")

    def __init__(self, rule: BackendRule, owner: str = "", userlists: dict[str, Userlist] | None = None) -> None:
        """`owner` names the frontend or backend: the default realm of an auth rule."""
        positive = compile_condition(rule.if_, userlists) if rule.if_ is not None else None
        negative = compile_condition(rule.unless, userlists) if rule.unless is not None else None
        if positive and negative:
            self.matches: Predicate = lambda r: positive(r) and not negative(r)
        elif positive:
            self.matches = positive
        elif negative:
            self.matches = lambda r: not negative(r)
        else:
            self.matches = lambda r: True
        self.set_header = [(k.encode(), v.encode()) for k, v in rule.set_header.items()]
        self.add_header = [(k.encode(), v.encode()) for k, v in rule.add_header.items()]
        self.del_header = frozenset(h.lower().encode() for h in rule.del_header)
        self.edits = bool(self.set_header or self.add_header or self.del_header)
        # With forwardfor the client's X-Forwarded-For is not among the headers (the proxy
        # appends the client to it): deleting it drops what the client sent (HAProxy's
        # `http-request del-header X-Forwarded-For` + `option forwardfor`).
        self.drops_forwarded_for = b"x-forwarded-for" in self.del_header
        self.decision: Decision | None = None
        use_backend: str | None = getattr(rule, "use_backend", None)
        if use_backend is not None:
            self.decision = Decision("backend", backend=use_backend)
        elif rule.action == "deny":
            self.decision = Decision("deny")
        elif rule.action == "auth":
            realm = rule.realm if rule.realm is not None else owner
            self.decision = Decision("auth", realm=realm.encode())
        elif rule.redirect is not None:
            redirect = rule.redirect
            kind: RedirectKind = "location"
            target = redirect.location or ""
            if redirect.scheme is not None:
                kind, target = "scheme", redirect.scheme
            elif redirect.prefix is not None:
                kind, target = "prefix", redirect.prefix
            self.decision = Decision(
                "redirect", redirect_code=redirect.code, redirect_location=target.encode(), redirect_kind=kind
            )
        elif rule.action == "allow":
            self.decision = _ALLOW

    def rewrite(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Apply del_header, then set_header (set replaces every header of that name), then
        add_header (appended, existing ones kept)."""
        drop = self.del_header | {name.lower() for name, _ in self.set_header}
        if drop:
            headers[:] = [(n, v) for n, v in headers if n.lower() not in drop]
        headers.extend(self.set_header)
        headers.extend(self.add_header)


_ALLOW: Final = Decision("backend", backend=None)


class RuleSet:
    """A frontend's rules plus its default backend, or a backend's rules (no default:
    a request no rule stops goes on to the backend's servers)."""

    __slots__ = ("default", "rewrites", "rules")

    def __init__(
        self, owner: str, rules: Sequence[BackendRule], default: Decision, userlists: dict[str, Userlist] | None = None
    ) -> None:
        """`owner` names the frontend or backend (the default realm of auth rules)."""
        self.rules = [CompiledRule(rule, owner, userlists) for rule in rules]
        self.default = default
        # Whether evaluate() may change a request's headers (set/add/del_header).
        self.rewrites = any(rule.edits for rule in self.rules)

    def evaluate(self, request: RequestView) -> Decision:
        """The decision for `request`; header rewrites of matching rules are applied to it."""
        for rule in self.rules:
            if rule.matches(request):
                if rule.edits:
                    rule.rewrite(request.headers)
                    if rule.drops_forwarded_for:
                        request.forget_forwarded_for()
                if rule.decision is not None:
                    if rule.decision is _ALLOW:
                        return self.default
                    return rule.decision
        return self.default


def frontend_rules(frontend: Frontend, userlists: dict[str, Userlist] | None = None) -> RuleSet:
    """A frontend's compiled rules; what no rule decides goes to its default_backend."""
    return RuleSet(frontend.name, frontend.rule, Decision("backend", backend=frontend.default_backend), userlists)


def backend_rules(name: str, rules: list[BackendRule], userlists: dict[str, Userlist] | None = None) -> RuleSet | None:
    """A backend's compiled rules; None when it has none (nothing to pay per request).
    What no rule decides, or "allow", goes on to the backend's servers."""
    return RuleSet(name, rules, _ALLOW, userlists) if rules else None
