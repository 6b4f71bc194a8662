"""Frontend rules: ACL conditions compiled once at load, evaluated in order per request.

Semantics (documented for operators in docs/configuration.md):
- every key in one `if` table must match (AND); within a key's list any value matches (OR);
  `unless` negates a second table; a rule with neither always matches;
- `use_backend`, `action = "deny"` (403), `action = "allow"` and `redirect` end the
  evaluation: first match wins; `set_header`/`del_header` rules change the request and
  evaluation goes on, so several of them can apply before the deciding rule;
- when no deciding rule matched, `default_backend` serves the request.
Conditions see the request as the client sent it, after earlier set/del rules.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from balancer.config.model import Condition, Frontend, Rule

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


Predicate = Callable[[RequestView], bool]
Verdict = Literal["backend", "deny", "redirect"]


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    backend: str | None = None
    redirect_code: int = 0
    redirect_location: bytes = b""


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


def _header_values(request: RequestView, name: bytes) -> list[bytes]:
    values = [v for n, v in request.headers if n.lower() == name]
    if request.hop_headers:
        values += [v for n, v in request.hop_headers if n.lower() == name]
    return values


def _header_test(name: bytes, wanted: frozenset[bytes]) -> Predicate:
    """Header `name` present (no wanted values) or with one of the wanted values."""
    if wanted:
        return lambda r: any(v in wanted for v in _header_values(r, name))
    return lambda r: bool(_header_values(r, name))


def compile_condition(condition: Condition) -> Predicate:
    """One predicate that is true when every key of `condition` matches."""
    tests: list[Predicate] = []
    if condition.path is not None:
        exact = frozenset(p.encode() for p in condition.path)
        tests.append(lambda r: r.path in exact)
    # startswith/endswith with one bytes argument compile to a direct call; with a tuple
    # they are a Python method call, several times dearer.
    if condition.path_beg is not None:
        prefixes = [p.encode() for p in condition.path_beg]
        tests.append(lambda r: _begins(r.path, prefixes))
    if condition.path_end is not None:
        suffixes = [p.encode() for p in condition.path_end]
        tests.append(lambda r: _ends(r.path, suffixes))
    if condition.path_reg is not None:
        regex = re.compile(b"|".join(b"(?:" + p.encode() + b")" for p in condition.path_reg))
        tests.append(lambda r: regex.search(r.path) is not None)
    if condition.host is not None:
        hosts = frozenset(h.lower().encode() for h in condition.host)
        tests.append(lambda r: _host_of(r) in hosts)
    if condition.method is not None:
        methods = frozenset(m.encode() for m in condition.method)
        tests.append(lambda r: r.method in methods)
    if condition.query is not None:
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
    for name, values in (condition.hdr or {}).items():
        lname = name.lower().encode()
        wanted_values = frozenset(v.encode() for v in values)
        tests.append(_header_test(lname, wanted_values))
    if not tests:
        return lambda r: True
    if len(tests) == 1:
        return tests[0]
    return lambda r: all(test(r) for test in tests)


class CompiledRule:
    __slots__ = ("decision", "del_header", "matches", "set_header")

    def __init__(self, rule: Rule) -> None:
        positive = compile_condition(rule.if_) if rule.if_ is not None else None
        negative = compile_condition(rule.unless) if rule.unless is not None else None
        if positive and negative:
            self.matches: Predicate = lambda r: positive(r) and not negative(r)
        elif positive:
            self.matches = positive
        elif negative:
            self.matches = lambda r: not negative(r)
        else:
            self.matches = lambda r: True
        self.set_header = [(k.encode(), v.encode()) for k, v in rule.set_header.items()]
        self.del_header = frozenset(h.lower().encode() for h in rule.del_header)
        self.decision: Decision | None = None
        if rule.use_backend is not None:
            self.decision = Decision("backend", backend=rule.use_backend)
        elif rule.action == "deny":
            self.decision = Decision("deny")
        elif rule.redirect is not None:
            self.decision = Decision(
                "redirect",
                redirect_code=rule.redirect.code,
                redirect_location=(rule.redirect.location or "").encode(),  # scheme/prefix: next commit
            )
        elif rule.action == "allow":
            self.decision = _ALLOW

    def rewrite(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Apply del_header then set_header (set replaces every header of that name)."""
        drop = self.del_header | {name.lower() for name, _ in self.set_header}
        if drop:
            headers[:] = [(n, v) for n, v in headers if n.lower() not in drop]
        headers.extend(self.set_header)


_ALLOW: Final = Decision("backend", backend=None)


class RuleSet:
    """A frontend's rules plus its default backend."""

    __slots__ = ("default", "rewrites", "rules")

    def __init__(self, frontend: Frontend) -> None:
        self.rules = [CompiledRule(rule) for rule in frontend.rule]
        self.default = Decision("backend", backend=frontend.default_backend)
        # Whether evaluate() may change a request's headers (set_header, del_header).
        self.rewrites = any(rule.set_header or rule.del_header for rule in self.rules)

    def evaluate(self, request: RequestView) -> Decision:
        """The decision for `request`; header rewrites of matching rules are applied to it."""
        for rule in self.rules:
            if rule.matches(request):
                if rule.set_header or rule.del_header:
                    rule.rewrite(request.headers)
                if rule.decision is not None:
                    if rule.decision is _ALLOW:
                        return self.default
                    return rule.decision
        return self.default
