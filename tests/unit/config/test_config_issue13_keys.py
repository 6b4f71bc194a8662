"""The configuration keys of issue #13 (the importer writes them): accepted, and each
wrong use named as FILE:LINE by `balancer check` (parse_config)."""

# ruff: noqa: E501  (configuration lines and messages are kept whole)
from __future__ import annotations

from pathlib import Path
from textwrap import dedent

from balancer.config import ConfigError, parse_config
from balancer.server import parse_runnable

SHA512_OF_SECRET = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1"

VALID = dedent(
    """\
    [global]
    log_facility = "local2"

    [[userlist]]
    name = "admins"
    user = [{ name = "ann", password = "plain" }, { name = "bob", password_hash = "HASH" }]

    [[frontend]]
    name = "www"
    bind = ":18080"
    default_backend = "web"
    monitor_uri = "/healthz"
    errorfiles = { "503" = "ERRORFILE" }

      [[frontend.rule]]
      if = { path_end = [".css"], ignore_case = true, hdr_beg = { host = ["img"] }, url_param = { a = [] } }
      unless = { dst_port = [443], ssl = true, path_sub = ["x"], path_dir = ["api"], host_beg = ["a"], host_end = [".com"] }
      redirect = { scheme = "https", code = 301 }

      [[frontend.rule]]
      if = { hdr_end = { x = ["y"] }, hdr_sub = { x = ["y"] }, hdr_reg = { x = ["^y+$"] } }
      add_header = { X-A = "1" }

      [[frontend.rule]]
      unless = { http_auth = "admins" }
      action = "auth"
      realm = "admin area"

      [[frontend.response_rule]]
      if = { status = [200, 404] }
      set_header = { X-B = "2" }
      add_header = { X-C = "3" }
      del_header = ["Server"]

    [[backend]]
    name = "web"
    persist = true
    errorfiles = { "503" = "ERRORFILE" }
    cookie = { name = "SERVERID", indirect = false, preserve = true, postonly = true }
    check = { type = "http", method = "OPTIONS", expect = "2xx,3xx" }

      [[backend.rule]]
      if = { src = ["10.0.0.0/8"] }
      action = "deny"

      [[backend.rule]]
      redirect = { prefix = "https://example.com" }

      [[backend.response_rule]]
      del_header = ["X-Powered-By"]

      [[backend.server]]
      name = "s1"
      address = "127.0.0.1:1"
    """
)


def _text(tmp_path: Path) -> str:
    page = tmp_path / "503.http"
    page.write_bytes(b"HTTP/1.0 503 Service Unavailable\nContent-Type: text/html\n\n<h1>down</h1>\n")
    return VALID.replace("HASH", SHA512_OF_SECRET).replace("ERRORFILE", str(page))


def _problems(text: str) -> list[str]:
    """What `balancer check` says (a file's contents are checked there: server.unsupported)."""
    try:
        parse_runnable(text, "lb.toml")
    except ConfigError as exc:
        return [str(problem) for problem in exc.problems]
    return []


def test_every_issue13_key_is_accepted(tmp_path: Path) -> None:
    config = parse_config(_text(tmp_path), "lb.toml")
    frontend, backend = config.frontend[0], config.backend[0]
    assert config.global_.log_facility == "local2"
    assert frontend.rule[0].if_ is not None and frontend.rule[0].if_.ignore_case
    assert frontend.rule[2].action == "auth" and frontend.rule[2].realm == "admin area"
    assert backend.persist and backend.cookie is not None and not backend.cookie.indirect
    assert backend.rule[0].action == "deny"
    assert config.userlist[0].user[1].password_hash == SHA512_OF_SECRET


def test_defaults_of_the_new_keys() -> None:
    config = parse_config(
        '[[backend]]\nname = "web"\ncookie = { name = "SERVERID" }\n[[frontend]]\nname = "f"\nbind = ":1"\ndefault_backend = "web"\n'
    )
    backend = config.backend[0]
    assert backend.persist is False and backend.redispatch is True
    assert backend.cookie is not None
    assert (backend.cookie.indirect, backend.cookie.preserve, backend.cookie.postonly) == (True, False, False)
    assert config.global_.log_facility == "local0"
    assert config.frontend[0].monitor_uri == "" and config.frontend[0].errorfiles == {}


def test_wrong_uses_are_named_with_their_line(tmp_path: Path) -> None:
    text = (
        _text(tmp_path)
        .replace('"local2"', '"local9"')
        .replace('expect = "2xx,3xx"', 'expect = "2yy"')
        .replace('redirect = { prefix = "https://example.com" }', 'redirect = { prefix = "/", scheme = "https" }')
    )
    assert _problems(text) == [
        "lb.toml:2: global.log_facility must be one of 'kern', 'user', 'mail', 'daemon', 'auth', 'syslog', 'lpr', "
        "'news', 'uucp', 'cron', 'auth2', 'ftp', 'ntp', 'audit', 'alert', 'cron2', 'local0', 'local1', 'local2', "
        "'local3', 'local4', 'local5', 'local6', 'local7', got 'local9'",
        'lb.toml:40: check.expect: expect \'2yy\': use statuses, ranges and classes such as "200", "200-399", "2xx,3xx"',
        "lb.toml:47: redirect: redirect needs exactly one of location, scheme, prefix (got scheme, prefix)",
    ]


def test_meaning_problems(tmp_path: Path) -> None:
    text = (
        _text(tmp_path)
        .replace('http_auth = "admins"', 'http_auth = "admin"')
        .replace(SHA512_OF_SECRET, "$9$nothing")
        .replace('"503" = "' + str(tmp_path / "503.http") + '" }\ncookie', '"503" = "missing.http" }\ncookie')
        .replace('add_header = { X-A = "1" }', 'add_header = { Content-Length = "1" }')
    )
    assert _problems(text) == [
        "lb.toml:22: add_header cannot change Content-Length: the proxy owns message framing and connection headers",
        "lb.toml:25: userlist 'admin' referenced but not defined",
        f"lb.toml:38: error file 'missing.http' not found (looked for {Path('missing.http')})",
    ]


def test_a_password_hash_this_system_cannot_verify_is_named(tmp_path: Path) -> None:
    """Checked once the file is otherwise valid, with the certificates and error pages."""
    text = _text(tmp_path).replace(SHA512_OF_SECRET, "$9$nothing")
    assert _problems(text) == [
        "lb.toml:6: password_hash is not a crypt(3) hash this system supports ($1$, $5$, $6$, $2b$/$2y$)"
    ]


def test_an_errorfile_must_hold_an_http_response(tmp_path: Path) -> None:
    text = _text(tmp_path)
    (tmp_path / "503.http").write_bytes(b"<h1>down</h1>\n\n")
    assert _problems(text)[0] == (
        f"lb.toml:13: error file '{tmp_path / '503.http'}': first line b'<h1>down</h1>' is not an HTTP/1.x status line"
    )
    (tmp_path / "503.http").write_bytes(b"HTTP/1.0 503 x\r\n\r\n" + b"x" * 70000)
    assert "larger than 65536 bytes" in _problems(text)[0]


def test_a_backend_rule_cannot_choose_a_backend(tmp_path: Path) -> None:
    text = _text(tmp_path).replace('action = "deny"', 'use_backend = "web"')
    assert _problems(text) == ["lb.toml:44: unknown key 'use_backend' in [[backend.rule]]"]


def test_realm_belongs_to_auth_and_tcp_rules_stay_l4() -> None:
    text = dedent(
        """\
        [[frontend]]
        name = "f"
        bind = ":1"
        mode = "tcp"
        default_backend = "db"
        monitor_uri = "/h"
        [[frontend.rule]]
        action = "deny"
        realm = "x"
        [[backend]]
        name = "db"
        mode = "tcp"
        [[backend.rule]]
        if = { src = ["10.0.0.0/8"] }
        action = "deny"
        [[backend.rule]]
        if = { path = ["/"] }
        action = "auth"
        """
    )
    assert _problems(text) == [
        "lb.toml:6: frontend 'f' is mode tcp: monitor_uri needs mode http",
        'lb.toml:9: realm belongs to action = "auth"',
        "lb.toml:9: frontend 'f' is mode tcp: rules may only use use_backend or action, not realm",
        "lb.toml:17: backend 'db' is mode tcp: rules may only test src, not path",
        "lb.toml:18: backend 'db' is mode tcp: rules may only use action, not action = auth",
    ]


def test_a_tls_cert_directory_needs_certificates(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    text = f'[[frontend]]\nname = "f"\nbind = ":1"\ndefault_backend = "b"\ntls = {{ cert = ["{tmp_path / "certs"}"] }}\n[[backend]]\nname = "b"\n'
    assert _problems(text) == [f"lb.toml:5: certificate directory '{tmp_path / 'certs'}' holds no *.pem or *.crt file"]
