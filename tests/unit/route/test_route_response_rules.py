"""Response header rules (route.response_rules) on response header lines."""

from __future__ import annotations

from typing import Any

from tests.unit.route.requestview import View

from balancer.config.model import ResponseRule
from balancer.route.response_rules import ResponseRuleSet


def _rules(*rules: dict[str, Any]) -> ResponseRuleSet:
    compiled = ResponseRuleSet.of([ResponseRule.model_validate(rule) for rule in rules])
    assert compiled is not None
    return compiled


HEAD = b"\r\nServer: app/1.0\r\nX-Powered-By: php\r\nset-cookie: a=1"


def test_del_set_add_in_order() -> None:
    rules = _rules(
        {"del_header": ["x-powered-by"], "set_header": {"Server": "lb"}, "add_header": {"Set-Cookie": "b=2"}}
    )
    assert rules.apply(View(), 200, HEAD) == b"\r\nset-cookie: a=1\r\nServer: lb\r\nSet-Cookie: b=2"


def test_conditions_on_status_and_request() -> None:
    rules = _rules(
        {"if": {"status": [404, 410]}, "add_header": {"X-Gone": "1"}},
        {"if": {"path_beg": ["/api"]}, "unless": {"status": [500]}, "add_header": {"X-Api": "1"}},
    )
    assert rules.apply(View(path=b"/x"), 404, b"") == b"\r\nX-Gone: 1"
    assert rules.apply(View(path=b"/api/v"), 200, b"") == b"\r\nX-Api: 1"
    assert rules.apply(View(path=b"/api/v"), 500, b"") == b""


def test_none_without_rules() -> None:
    assert ResponseRuleSet.of([]) is None
