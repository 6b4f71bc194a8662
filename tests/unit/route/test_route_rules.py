"""Rule conditions and decisions (route.rules), evaluated on plain request views."""

from __future__ import annotations

import base64
from typing import Any

from tests.unit.route.requestview import View

from balancer.config.model import BackendRule, Condition, Frontend
from balancer.proto.basic_auth import Userlist
from balancer.route.rules import CompiledRule, backend_rules, compile_condition, frontend_rules, redirect_target


def matches(condition: dict[str, Any], view: View, userlists: dict[str, Userlist] | None = None) -> bool:
    return compile_condition(Condition.model_validate(condition), userlists)(view)


def test_ignore_case_path_end_matches_an_upper_case_extension() -> None:
    """Issue #13: HAProxy `path_end -i .css` matches /Page.CSS; without -i it does not."""
    assert matches({"path_end": [".css"], "ignore_case": True}, View(path=b"/Page.CSS"))
    assert not matches({"path_end": [".css"]}, View(path=b"/Page.CSS"))
    assert matches({"path_end": [".CSS"], "ignore_case": True}, View(path=b"/page.css"))


def test_ignore_case_header_matches_a_browsers_upgrade_websocket() -> None:
    """Issue #13: `hdr(upgrade) -i websocket` matches `Upgrade: WebSocket`, a hop-by-hop header."""
    condition = {"hdr": {"Upgrade": ["websocket"]}, "ignore_case": True}
    assert matches(condition, View(hop_headers=[(b"Upgrade", b"WebSocket")]))
    assert matches(condition, View(headers=[(b"upgrade", b"websocket")]))
    assert not matches({"hdr": {"Upgrade": ["websocket"]}}, View(hop_headers=[(b"Upgrade", b"WebSocket")]))


def test_every_string_test_folds_with_ignore_case() -> None:
    view = View(path=b"/API/V1/Users", query=b"Lang=EN&x", headers=[(b"X-Kind", b"Mobile-App")])
    folded = [
        {"path": ["/api/v1/users"]},
        {"path_beg": ["/api"]},
        {"path_sub": ["v1/us"]},
        {"path_dir": ["v1"]},
        {"path_reg": ["^/api/v[0-9]"]},
        {"query": ["lang=en&x"]},
        {"url_param": {"lang": ["en"]}},
        {"hdr": {"x-kind": ["mobile-app"]}},
        {"hdr_beg": {"x-kind": ["mobile"]}},
        {"hdr_end": {"x-kind": ["-app"]}},
        {"hdr_sub": {"x-kind": ["le-a"]}},
        {"hdr_reg": {"x-kind": ["^mobile-"]}},
    ]
    for condition in folded:
        assert matches({**condition, "ignore_case": True}, view), condition
        assert not matches(condition, view), f"case-sensitive without ignore_case: {condition}"


def test_path_dir_matches_whole_segments() -> None:
    condition = {"path_dir": ["api"]}
    assert matches(condition, View(path=b"/api"))
    assert matches(condition, View(path=b"/v1/api/users"))
    assert not matches(condition, View(path=b"/apis/x"))
    assert matches({"path_dir": ["/v1/api"]}, View(path=b"/v1/api/users"))


def test_host_beg_and_end_ignore_the_port_and_case() -> None:
    assert matches({"host_beg": ["img."]}, View(host=b"IMG.example.com:8080"))
    assert matches({"host_end": [".example.com"]}, View(host=b"img.Example.com:8080"))
    assert not matches({"host_end": [".example.org"]}, View(host=b"img.example.com"))


def test_url_param_present_or_valued() -> None:
    assert matches({"url_param": {"debug": []}}, View(query=b"a=1&debug"))
    assert matches({"url_param": {"debug": []}}, View(query=b"debug=0"))
    assert not matches({"url_param": {"debug": []}}, View(query=b"nodebug=1"))
    assert matches({"url_param": {"v": ["2"]}}, View(query=b"a=1;v=2"))
    assert not matches({"url_param": {"v": ["2"]}}, View(query=b"v=22"))


def test_dst_port_and_ssl() -> None:
    assert matches({"dst_port": [443, 8443]}, View(port=8443))
    assert not matches({"dst_port": [443]}, View(port=80))
    assert matches({"ssl": True}, View(tls=True))
    assert matches({"ssl": False}, View(tls=False))
    assert not matches({"ssl": True}, View(tls=False))


SHA512_OF_SECRET = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1"


def _basic(user: str, password: str) -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", b"Basic " + base64.b64encode(f"{user}:{password}".encode()))]


def test_http_auth_checks_plain_and_crypt_passwords() -> None:
    users = {"admins": Userlist([("ann", "plain", None), ("bob", None, SHA512_OF_SECRET)])}
    condition = {"http_auth": "admins"}
    assert matches(condition, View(headers=_basic("ann", "plain")), users)
    assert matches(condition, View(headers=_basic("bob", "secret")), users)
    assert matches(condition, View(headers=_basic("bob", "secret")), users), "remembered"
    assert not matches(condition, View(headers=_basic("bob", "Secret")), users)
    assert not matches(condition, View(headers=_basic("ann", "wrong")), users)
    assert not matches(condition, View(headers=_basic("eve", "plain")), users)
    assert not matches(condition, View(headers=[(b"Authorization", b"Basic !!!")]), users)
    assert not matches(condition, View(), users)


def test_http_auth_with_md5_sha256_and_bcrypt_hashes() -> None:
    hashes = {
        "md5": "$1$saltsalt$9xy1btjgzLYfb7hivXtC//",
        "sha256": "$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA",
        "bcrypt": "$2b$05$abcdefghijklmnopqrstuuhKF09ZYWwH2zP/0fwE1X8e/Q1YNx/hO",  # of "x"
    }
    users = {"l": Userlist([(name, None, value) for name, value in hashes.items()])}
    assert matches({"http_auth": "l"}, View(headers=_basic("md5", "secret")), users)
    assert matches({"http_auth": "l"}, View(headers=_basic("sha256", "secret")), users)
    assert matches({"http_auth": "l"}, View(headers=_basic("bcrypt", "x")), users)
    assert not matches({"http_auth": "l"}, View(headers=_basic("bcrypt", "y")), users)


def _frontend(*rules: dict[str, Any]) -> Frontend:
    return Frontend.model_validate({"name": "www", "bind": ":1", "default_backend": "web", "rule": list(rules)})


def test_auth_rule_decides_with_its_realm_or_the_owner_name() -> None:
    ruleset = frontend_rules(_frontend({"unless": {"path": ["/open"]}, "action": "auth", "realm": "Ops"}))
    decision = ruleset.evaluate(View(path=b"/x"))
    assert (decision.verdict, decision.realm) == ("auth", b"Ops")
    assert ruleset.evaluate(View(path=b"/open")).backend == "web"
    default_realm = frontend_rules(_frontend({"action": "auth"})).evaluate(View())
    assert default_realm.realm == b"www"


def test_redirect_scheme_prefix_and_location() -> None:
    def target(redirect: dict[str, Any], view: View) -> bytes:
        decision = frontend_rules(_frontend({"redirect": redirect})).evaluate(view)
        assert decision.verdict == "redirect"
        return redirect_target(decision, view)

    view = View(path=b"/a/b", query=b"x=1", host=b"shop.example:8080")
    assert target({"scheme": "https"}, view) == b"https://shop.example:8080/a/b?x=1"
    assert target({"prefix": "https://example.com"}, view) == b"https://example.com/a/b?x=1"
    assert target({"prefix": "https://example.com/"}, View(path=b"/")) == b"https://example.com/"
    assert target({"location": "/moved"}, view) == b"/moved"


def test_add_header_appends_and_keeps_existing() -> None:
    rule = CompiledRule(_frontend({"add_header": {"X-Tag": "b"}, "set_header": {"X-One": "1"}}).rule[0])
    headers = [(b"X-Tag", b"a"), (b"X-One", b"0")]
    rule.rewrite(headers)
    assert headers == [(b"X-Tag", b"a"), (b"X-One", b"1"), (b"X-Tag", b"b")]


def test_backend_rules_let_a_request_through_unless_one_decides() -> None:
    assert backend_rules("web", []) is None
    frontend = _frontend()
    compiled = backend_rules(
        "web",
        [
            BackendRule.model_validate(rule)
            for rule in ({"if": {"src": ["10.0.0.0/8"]}, "action": "deny"}, {"add_header": {"X-B": "1"}})
        ],
    )
    assert compiled is not None and frontend.rule == []
    assert compiled.evaluate(View(client="10.1.2.3")).verdict == "deny"
    view = View(client="192.0.2.1")
    decision = compiled.evaluate(view)
    assert decision.verdict == "backend" and decision.backend is None
    assert view.headers == [(b"X-B", b"1")]
