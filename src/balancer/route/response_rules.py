"""Response header rules (`[[frontend.response_rule]]`, `[[backend.response_rule]]`):
HAProxy `http-response set-header|add-header|del-header`, with optional conditions on the
request (the same tests as request rules) and on the response `status`.

They edit a response head's header lines as the upstream side holds them: bytes of
CRLF-led lines ("\r\nName: value\r\nOther: value"). A backend's rules run before its
frontend's (HAProxy's order). Compiled once at load; a frontend or backend without any has
None, so a response pays one attribute check.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from balancer.config.model import ResponseCondition, ResponseRule
from balancer.proto.basic_auth import Userlist
from balancer.route.rules import RequestView, compile_condition

ResponsePredicate = Callable[[RequestView, int], bool]


def _compile(condition: ResponseCondition, userlists: dict[str, Userlist] | None) -> ResponsePredicate:
    request_test = compile_condition(condition, userlists)
    if condition.status is None:
        return lambda request, status: request_test(request)
    statuses = frozenset(condition.status)
    return lambda request, status: status in statuses and request_test(request)


class CompiledResponseRule:
    __slots__ = ("added", "drop", "matches")

    def __init__(self, rule: ResponseRule, userlists: dict[str, Userlist] | None = None) -> None:
        positive = _compile(rule.if_, userlists) if rule.if_ is not None else None
        negative = _compile(rule.unless, userlists) if rule.unless is not None else None
        if positive and negative:
            self.matches: ResponsePredicate = lambda r, s: positive(r, s) and not negative(r, s)
        elif positive:
            self.matches = positive
        elif negative:
            self.matches = lambda r, s: not negative(r, s)
        else:
            self.matches = lambda r, s: True
        names = [*rule.del_header, *rule.set_header]
        # Header lines of these names, each CRLF-led, to remove.
        self.drop = (
            re.compile(b"\r\n(?:" + b"|".join(re.escape(n.encode()) for n in names) + b")[ \t]*:[^\r]*", re.IGNORECASE)
            if names
            else None
        )
        self.added = b"".join(
            b"\r\n" + name.encode() + b": " + value.encode()
            for table in (rule.set_header, rule.add_header)
            for name, value in table.items()
        )

    def apply(self, header_lines: bytes) -> bytes:
        if self.drop is not None:
            header_lines = self.drop.sub(b"", header_lines)
        return header_lines + self.added


class ResponseRuleSet:
    __slots__ = ("rules",)

    def __init__(self, rules: list[ResponseRule], userlists: dict[str, Userlist] | None = None) -> None:
        self.rules = [CompiledResponseRule(rule, userlists) for rule in rules]

    @classmethod
    def of(cls, rules: list[ResponseRule], userlists: dict[str, Userlist] | None = None) -> ResponseRuleSet | None:
        return cls(rules, userlists) if rules else None

    def apply(self, request: RequestView, status: int, header_lines: bytes) -> bytes:
        """`header_lines` (CRLF-led) after every matching rule, in order."""
        for rule in self.rules:
            if rule.matches(request, status):
                header_lines = rule.apply(header_lines)
        return header_lines
