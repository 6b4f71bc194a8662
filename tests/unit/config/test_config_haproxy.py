"""`balancer import-haproxy`: haproxy.cfg -> TOML, one directive family at a time.

Every translation is loaded back with `parse_config`: the output must always be a valid
configuration. Inputs are written with dedent and a backslash after the opening quotes,
so the first line of the literal is line 1 of the haproxy.cfg.
"""

from __future__ import annotations

import base64
import os
import tomllib
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from balancer.config import Config, parse_config
from balancer.config.haproxy import (
    Translation,
    condition_tables,
    parse_criterion,
    parse_haproxy,
    tokenize,
    translate,
    validate,
)
from balancer.config.haproxy.keys import ALL_KEYS


def convert(
    cfg: str, base_dir: Path | None = None, keys: frozenset[str] | None = None
) -> tuple[Config, list[str], str]:
    """Translate, check our own validation accepts it, and load it (files named in it are
    looked for in `base_dir`). `keys`: those of issue 13 to write (default: the model's)."""
    result = translate(dedent(cfg), "haproxy.cfg", keys=keys)
    assert validate(result.toml, base_dir=base_dir) == [], result.toml
    return parse_config(result.toml, base_dir=base_dir), result.messages(), result.toml


FIXTURES = Path(__file__).parents[2] / "fixtures" / "haproxy"
SIMPLE_BACKEND = """\
backend web
    server s1 10.0.0.1:80
"""


def translate_tls(frontend: str, folder: Path) -> Translation:
    """Translate `frontend` (its binds name the certificate site.pem, made in `folder`) with
    an HTTP backend `web` after it."""
    (folder / "site.pem").write_text("not checked by the translator")
    backend = "backend web\n  mode http\n  server s1 10.0.0.1:80\n"
    return translate(dedent(frontend) + backend, "haproxy.cfg", base_dir=folder)


# -- the parser -------------------------------------------------------------------------------


def test_tokenize_splits_words_quotes_escapes_and_comments():
    assert tokenize("  server s1 10.0.0.1:80   check # a comment") == ["server", "s1", "10.0.0.1:80", "check"]
    assert tokenize('http-request set-header X-Msg "hello world"') == [
        "http-request",
        "set-header",
        "X-Msg",
        "hello world",
    ]
    assert tokenize("acl a path_beg '/a b' \"#not-a-comment\"") == ["acl", "a", "path_beg", "/a b", "#not-a-comment"]
    assert tokenize(r"option httpchk GET / HTTP/1.1\r\nHost:\ x") == [
        "option",
        "httpchk",
        "GET",
        "/",
        "HTTP/1.1\r\nHost: x",
    ]
    assert tokenize("# only a comment") == []


def test_parse_haproxy_sections_and_line_numbers():
    sections, orphans = parse_haproxy("maxconn 5\nglobal\n  maxconn 10\n\nfrontend www\n  bind :80\n")
    assert [line.number for line in orphans] == [1]
    assert [(s.kind, s.name, s.header.number) for s in sections] == [("global", "", 2), ("frontend", "www", 5)]
    assert [line.words for line in sections[1].lines] == [("bind", ":80")]


# -- global -----------------------------------------------------------------------------------


def test_global_directives():
    config, warnings, _ = convert(
        """\
        global
            maxconn 20000
            nbthread 4
            user haproxy
            group haproxy
            log 127.0.0.1:514 local0
            stats socket /run/haproxy/admin.sock mode 660 level admin
            chroot /var/lib/haproxy
        """
    )
    assert config.global_.maxconn == 20000
    assert config.global_.workers == 4
    assert (config.global_.user, config.global_.group) == ("haproxy", "haproxy")
    assert config.global_.log == "syslog:udp://127.0.0.1:514"
    assert config.admin.socket == "/run/haproxy/admin.sock"
    assert warnings == ["haproxy.cfg:8: cannot translate: chroot /var/lib/haproxy"]


@pytest.mark.parametrize(
    ("line", "log"),
    [
        ("log 10.1.2.3 local0", "syslog:udp://10.1.2.3:514"),
        ("log logs.example:5140 local1 info", "syslog:udp://logs.example:5140"),
        ("log stdout format raw local0", "stdout"),
    ],
)
def test_global_log_targets(line, log):
    config, _, _ = convert(f"global\n    {line}\n")
    assert config.global_.log == log


@pytest.mark.parametrize(
    ("line", "facility"),
    [
        ("log 10.1.2.3 local2", "local2"),
        ("log logs.example:5140 local7 info", "local7"),
        ("log 10.1.2.3 len 4096 format rfc5424 daemon notice", "daemon"),
        ("log 10.1.2.3 local0", None),  # the default: nothing to write
    ],
)
def test_global_log_facility(line, facility):
    config, _warnings, toml = convert(f"global\n    {line}\n")
    assert config.global_.log_facility == (facility or "local0")
    assert ("log_facility" in toml) == (facility is not None)


def test_a_zero_check_interval_is_named_not_translated():
    cfg = """\
        frontend www
            bind :80
            default_backend web
        backend web
            server s1 10.0.0.1:80 check inter 0 fastinter 0ms agent-check agent-port 5555 agent-inter 0
        """
    config, warnings, _ = convert(cfg)
    check = config.backend[0].check
    assert check is not None and check.interval == 2.0 and check.fastinterval is None
    assert config.backend[0].agent is not None and config.backend[0].agent.interval == 5.0
    named = "\n".join(warnings)
    for option in ("inter 0", "fastinter 0ms", "agent-inter 0"):
        assert f"haproxy.cfg:5: cannot translate: server option {option}" in named, named


def test_global_log_to_a_unix_socket_is_named():
    config, warnings, _ = convert("global\n    log /dev/log local0\n")
    assert config.global_.log == "stdout"
    assert warnings[0].startswith("haproxy.cfg:2: cannot translate: log /dev/log local0")


def test_stats_socket_over_tcp_becomes_the_admin_bind():
    config, _, _ = convert("global\n    stats socket ipv4@127.0.0.1:9999 level admin\n")
    assert str(config.admin.bind) == "127.0.0.1:9999"


# -- defaults, listen, mode ---------------------------------------------------------------------


def test_defaults_apply_to_later_sections_and_a_new_defaults_resets():
    config, _, _ = convert(
        """\
        defaults
            mode http
            option forwardfor
            retries 5
            timeout connect 5000
            timeout client 1m
            timeout server 30s
            timeout http-request 10s
            timeout http-keep-alive 2s
            timeout queue 20s
            timeout tunnel 2h

        frontend www
            bind :8080
            default_backend web

        backend web
            server s1 10.0.0.1:80

        defaults
            timeout client 5s

        frontend raw
            bind :9000
            default_backend db

        backend db
            server d1 10.0.0.2:5432
        """
    )
    www, raw = config.frontend
    web, db = config.backend
    assert (www.mode, web.mode) == ("http", "http")
    assert www.forwardfor is True
    assert (www.timeouts.client, www.timeouts.http_request, www.timeouts.http_keep_alive) == (60, 10, 2)
    assert www.timeouts.tunnel == 7200
    assert (web.timeouts.connect, web.timeouts.server, web.timeouts.queue) == (5, 30, 20)
    assert web.retries == 5
    # the second defaults section starts from HAProxy's own defaults: mode tcp, retries 3
    assert (raw.mode, db.mode) == ("tcp", "tcp")
    assert raw.timeouts.client == 5
    assert db.retries == 3


def test_without_option_forwardfor_and_redispatch_they_are_off_as_in_haproxy():
    config, _, toml = convert(
        "frontend www\n    mode http\n    bind :80\n    default_backend web\n"
        + SIMPLE_BACKEND.replace("backend web\n", "backend web\n    mode http\n")
    )
    assert config.frontend[0].forwardfor is False
    assert config.backend[0].redispatch is False
    assert "forwardfor = false" in toml


def test_option_forwardfor_in_a_backend_turns_it_on_in_its_frontends():
    config, _, _ = convert(
        """\
        frontend www
            mode http
            bind :80
            default_backend web
        backend web
            mode http
            option forwardfor
            option redispatch
            server s1 10.0.0.1:80
        """
    )
    assert config.frontend[0].forwardfor is True
    assert config.backend[0].redispatch is True


def test_listen_becomes_a_frontend_and_a_backend_of_the_same_name():
    config, _, toml = convert(
        """\
        listen www
            bind 127.0.0.1:8080
            mode http
            balance leastconn
            server s1 10.0.0.1:80
            server s2 10.0.0.2:80
        """
    )
    (frontend,) = config.frontend
    (backend,) = config.backend
    assert (frontend.name, frontend.default_backend, backend.name) == ("www", "www", "www")
    assert backend.balance == "leastconn"
    assert [s.name for s in backend.server] == ["s1", "s2"]
    assert "# from haproxy.cfg:1 listen www" in toml


# -- bind -------------------------------------------------------------------------------------


def test_bind_addresses_tls_and_proxy(tmp_path: Path):
    result = translate_tls(
        """\
        frontend www
            mode http
            bind *:80,127.0.0.1:81
            bind :::8443 v4v6 ssl crt site.pem alpn h2,spdy/3,http/1.1 ssl-min-ver TLSv1.3
            bind 10.0.0.1:8000 accept-proxy
            default_backend web
        """,
        tmp_path,
    )
    assert validate(result.toml, base_dir=tmp_path) == []
    config = parse_config(result.toml, base_dir=tmp_path)
    plain, tls, proxied = config.frontend
    assert (plain.name, [str(a) for a in plain.bind]) == ("www", ["0.0.0.0:80", "127.0.0.1:81"])
    assert (tls.name, [str(a) for a in tls.bind]) == ("www-tls", ["[::]:8443"])
    assert tls.tls is not None and tls.tls.cert == ["site.pem"] and tls.tls.alpn == ["h2", "http/1.1"]
    assert tls.tls.min_version == "1.3"
    assert proxied.accept_proxy is True and proxied.tls is None
    assert all(f.default_backend == "web" for f in config.frontend)
    assert "haproxy.cfg:4: note: alpn spdy/3 dropped: balancer speaks h2, http/1.1 and http/1.0" in result.warnings


@pytest.mark.parametrize(
    ("mode", "bind", "defers"),
    [
        ("tcp", "bind :25 defer-accept", True),  # balancer would not on a plain relay
        ("http", "bind :80", False),  # balancer would: HAProxy's default is written out
        ("http", "bind :80 defer-accept", True),
        ("tcp", "bind :25", False),
    ],
)
def test_defer_accept_is_what_haproxy_does(mode: str, bind: str, defers: bool):
    result = translate(
        f"frontend f\n  mode {mode}\n  {bind}\n  default_backend b\n"
        f"backend b\n  mode {mode}\n  server s1 10.0.0.1:80\n",
        "haproxy.cfg",
    )
    assert validate(result.toml) == []
    (frontend,) = parse_config(result.toml).frontend
    assert frontend.defers_accept() is defers
    assert result.warnings == []


def test_ciphersuites_of_a_bind_or_the_global_default_become_tls_ciphersuites(tmp_path: Path):
    result = translate_tls(
        """\
        global
            ssl-default-bind-ciphersuites TLS_AES_256_GCM_SHA384
        frontend www
            mode http
            bind :443 ssl crt site.pem
            bind :8443 ssl crt site.pem ciphersuites TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256
            default_backend web
        """,
        tmp_path,
    )
    assert validate(result.toml, base_dir=tmp_path) == []
    assert result.losses == []
    split = "haproxy.cfg:3: note: split into frontends www, www-tls: balancer sets TLS/PROXY per frontend"
    assert result.warnings == [split]
    suites = [f.tls.ciphersuites for f in parse_config(result.toml, base_dir=tmp_path).frontend if f.tls]
    assert suites == ["TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"]


def test_mozillas_bind_options_translate_with_nothing_left_over(tmp_path: Path):
    """Mozilla's intermediate HAProxy configuration: its curves, `prefer-client-ciphers`,
    `ssl-min-ver`, `no-tls-tickets` (a bind's `tls-tickets` turns them back on there)."""
    result = translate_tls(
        """\
        global
            ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256
            ssl-default-bind-curves X25519:prime256v1:secp384r1
            ssl-default-bind-options prefer-client-ciphers ssl-min-ver TLSv1.2 no-tls-tickets
        frontend www
            mode http
            bind :443 ssl crt site.pem
            bind :8443 ssl crt site.pem tls-tickets
            default_backend web
        """,
        tmp_path,
    )
    assert validate(result.toml, base_dir=tmp_path) == [] and result.losses == []
    assert [w for w in result.warnings if "cannot translate" in w] == []
    frontends = [f.tls for f in parse_config(result.toml, base_dir=tmp_path).frontend if f.tls]
    assert [(tls.tickets, tls.min_version, tls.prefer_client_ciphers) for tls in frontends] == [
        (False, "1.2", True),
        (True, "1.2", True),
    ]
    alone = translate_tls(
        "frontend www\n  mode http\n  bind :443 ssl crt site.pem no-tls-tickets\n  default_backend web\n", tmp_path
    )
    (frontend,) = parse_config(alone.toml, base_dir=tmp_path).frontend
    assert frontend.tls is not None and frontend.tls.tickets is False


def test_tls_ticket_keys_becomes_tls_ticket_keys(tmp_path: Path):
    """HAProxy's tls-ticket-keys file is read as HAProxy reads it (net.ticket_keys): the
    path is kept, and the file is the same file."""
    (tmp_path / "tickets.key").write_text(base64.b64encode(os.urandom(80)).decode() + "\n")
    result = translate_tls(
        "frontend www\n  mode http\n  bind :443 ssl crt site.pem tls-ticket-keys tickets.key\n  default_backend web\n",
        tmp_path,
    )
    assert result.losses == [] and result.warnings == []
    (frontend,) = parse_config(result.toml, base_dir=tmp_path).frontend
    assert frontend.tls is not None and frontend.tls.ticket_keys == "tickets.key"


def test_curves_of_a_bind_or_the_global_default_become_tls_curves(tmp_path: Path):
    """Mozilla's `ssl-default-bind-curves`, and a bind's own `curves`; a group balancer
    does not know is a loss (the list narrows what is served)."""
    result = translate_tls(
        """\
        global
            ssl-default-bind-curves X25519:prime256v1:secp384r1
        frontend www
            mode http
            bind :443 ssl crt site.pem
            bind :8443 ssl crt site.pem curves secp384r1
            default_backend web
        """,
        tmp_path,
    )
    assert validate(result.toml, base_dir=tmp_path) == [] and result.losses == []
    curves = [f.tls.curves for f in parse_config(result.toml, base_dir=tmp_path).frontend if f.tls]
    assert curves == ["X25519:prime256v1:secp384r1", "secp384r1"]
    unknown = translate_tls(
        "frontend www\n  mode http\n  bind :443 ssl crt site.pem curves X25519:brainpoolP512r1\n"
        "  default_backend web\n",
        tmp_path,
    )
    assert [loss for loss in unknown.losses if "brainpoolP512r1 is not a key-exchange group" in loss], unknown.losses


def test_tune_ssl_cachesize_becomes_the_shared_session_cache():
    result = translate("global\n    tune.ssl.cachesize 50000\n")
    assert result.losses == [] and not [w for w in result.warnings if "cachesize" in w]
    assert parse_config(result.toml).global_.tls_session_cache == 50000


def test_ciphersuites_naming_an_unknown_suite_is_a_loss(tmp_path: Path):
    """A list that narrows the suites is a policy: dropped, the frontend would serve more."""
    result = translate_tls(
        "frontend www\n  mode http\n  bind :443 ssl crt site.pem ciphersuites TLS_AES_256_GCM_SHA384:TLS_NOPE\n"
        "  default_backend web\n",
        tmp_path,
    )
    assert result.losses == [
        "haproxy.cfg:3: cannot translate: ciphersuites TLS_AES_256_GCM_SHA384:TLS_NOPE "
        "(TLS_NOPE is not a TLS 1.3 suite)"
    ]


def test_missing_certificate_is_a_note_not_a_failure(tmp_path: Path):
    result = translate(
        "frontend www\n  mode http\n  bind :443 ssl crt /nonexistent/x.pem\n  default_backend web\n"
        + SIMPLE_BACKEND.replace("backend web\n", "backend web\n  mode http\n"),
        "haproxy.cfg",
        base_dir=tmp_path,
    )
    assert validate(result.toml, base_dir=tmp_path) == []
    assert any("haproxy.cfg:3: note: certificate '/nonexistent/x.pem' not found" in w for w in result.warnings)


def test_unsupported_bind_options_are_named():
    _, warnings, _ = convert("frontend f\n  bind :80 tfo name web process 1\n  default_backend web\n" + SIMPLE_BACKEND)
    assert warnings == [
        "haproxy.cfg:2: cannot translate: bind option tfo",
        "haproxy.cfg:2: cannot translate: bind option name web",
        "haproxy.cfg:2: cannot translate: bind option process 1",
    ]


# -- balance ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("balance", "expected", "hash_key"),
    [
        ("roundrobin", "roundrobin", "src"),
        ("static-rr", "static-rr", "src"),
        ("leastconn", "leastconn", "src"),
        ("first", "first", "src"),
        ("source", "source", "src"),
        ("uri", "uri", "uri"),
        ("url_param userid", "url_param", "url_param(userid)"),
        ("hdr(X-Tenant)", "hdr", "hdr(X-Tenant)"),
        ("random", "random", "src"),
        ("random(2)", "random", "src"),
    ],
)
def test_balance(balance, expected, hash_key):
    config, warnings, _ = convert(f"backend web\n    mode http\n    balance {balance}\n    server s1 10.0.0.1:80\n")
    assert (config.backend[0].balance, config.backend[0].hash_key) == (expected, hash_key)
    assert warnings == []


def test_hash_type_consistent_and_balance_factor():
    config, _, _ = convert("backend a\n  balance source\n  hash-type consistent\n  server s1 10.0.0.1:80\n")
    assert (config.backend[0].balance, config.backend[0].hash_type) == ("source", "consistent")
    config, _, _ = convert("backend a\n  balance source\n  hash-type consistent\n  hash-balance-factor 125\n")
    assert config.backend[0].balance == "ring"


def test_http_balance_in_a_tcp_backend_falls_back_to_roundrobin():
    config, warnings, _ = convert("backend a\n  mode tcp\n  balance uri\n  server s1 10.0.0.1:80\n")
    assert config.backend[0].balance == "roundrobin"
    assert warnings == ["haproxy.cfg:1: note: balance uri needs mode http: roundrobin is used, as HAProxy does"]


def test_unknown_balance_is_named():
    _, warnings, _ = convert("backend a\n  balance rdp-cookie\n")
    assert warnings == ["haproxy.cfg:2: cannot translate: balance rdp-cookie"]


# -- servers, checks, persistence ------------------------------------------------------------------


def test_server_options(tmp_path: Path):
    (tmp_path / "ca.pem").write_text("")
    config, warnings, _ = convert(
        """\
        backend web
            mode http
            default-server inter 3s fastinter 1s downinter 10s rise 3 fall 4
            option httpchk GET /health
            http-check expect status 204
            timeout check 2s
            server s1 10.0.0.1:80 check weight 20 maxconn 50 slowstart 30s
            server s2 10.0.0.2:80 check backup
            server s3 10.0.0.3:443 check ssl verify required ca-file ca.pem sni str(api.internal)
            server s4 web4.example:80 disabled
        """,
        tmp_path,
    )
    (backend,) = config.backend
    s1, s2, s3, s4 = backend.server
    assert (s1.weight, s1.maxconn, s1.slowstart) == (20, 50, 30)
    assert (s2.weight, s2.backup) == (1, True)  # HAProxy's default weight is 1
    assert (s3.ssl, s3.ca_file, s3.sni) == (True, "ca.pem", "api.internal")
    assert (str(s4.address), s4.state) == ("web4.example:80", "maint")
    check = backend.check
    assert check is not None
    assert (check.type, check.method, check.path, check.expect) == ("http", "GET", "/health", 204)
    assert (check.interval, check.fastinterval, check.downinterval, check.rise, check.fall) == (3, 1, 10, 3, 4)
    assert check.timeout == 2
    assert warnings == [
        "haproxy.cfg:10: note: server without 'check': balancer checks every server of a checked backend"
    ]


def test_httpchk_with_a_host_header_in_the_version_field():
    config, _, _ = convert(
        "backend web\n  mode http\n  option httpchk HEAD /ping HTTP/1.1\\r\\nHost:\\ www.example.com\n"
        "  server s1 10.0.0.1:80 check\n"
    )
    check = config.backend[0].check
    assert check is not None and (check.method, check.path, check.host) == ("HEAD", "/ping", "www.example.com")


def test_plain_check_is_a_tcp_check_and_no_check_means_none():
    config, _, _ = convert("backend a\n  server s1 10.0.0.1:80 check inter 5000\n")
    check = config.backend[0].check
    assert check is not None and (check.type, check.interval) == ("tcp", 5)
    config, _, _ = convert("backend a\n  option httpchk\n  server s1 10.0.0.1:80\n")
    assert config.backend[0].check is None


def test_send_proxy_agent_and_source():
    config, warnings, _ = convert(
        """\
        backend db
            source 192.0.2.10
            server d1 10.0.0.1:5432 send-proxy-v2 agent-check agent-port 5555 agent-inter 3s
            server d2 10.0.0.2:5432 send-proxy-v2
        """
    )
    backend = config.backend[0]
    assert backend.send_proxy == "v2"
    assert backend.agent is not None and (backend.agent.port, backend.agent.interval) == (5555, 3)
    assert backend.source == ["192.0.2.10"]
    assert warnings == []


def test_server_without_port_and_unknown_options_are_named():
    config, warnings, _ = convert(
        "backend a\n  server s1 10.0.0.1 check\n  server s2 10.0.0.2:80 resolvers dns init-addr none\n"
    )
    assert [s.name for s in config.backend[0].server] == ["s2"]
    assert warnings == [
        "haproxy.cfg:2: cannot translate: server s1 10.0.0.1 check (address '10.0.0.1' has no port "
        "(HAProxy then uses the client's port))",
        "haproxy.cfg:3: cannot translate: server option resolvers dns",
        "haproxy.cfg:3: cannot translate: server option init-addr none",
    ]


def test_cookie_insert_and_a_server_cookie_that_is_not_its_name():
    config, warnings, _ = convert(
        """\
        backend web
            mode http
            cookie SERVERID insert indirect nocache httponly secure maxidle 30m maxlife 8h
            server s1 10.0.0.1:80 cookie s1
            server s2 10.0.0.2:80 cookie web-b
        """
    )
    cookie = config.backend[0].cookie
    assert cookie is not None
    assert (cookie.name, cookie.mode, cookie.nocache, cookie.httponly, cookie.secure) == (
        "SERVERID",
        "insert",
        True,
        True,
        True,
    )
    assert (cookie.maxidle, cookie.maxlife) == (1800, 28800)
    assert warnings == [
        "haproxy.cfg:5: note: cookie value 'web-b' of server 's2': balancer's cookie value is the server name"
    ]


def test_cookie_prefix_and_without_nocache():
    config, _, _ = convert("backend web\n  mode http\n  cookie JSESSIONID prefix nocache\n")
    cookie = config.backend[0].cookie
    assert cookie is not None and cookie.mode == "prefix"
    config, _, _ = convert("backend web\n  mode http\n  cookie SRV insert\n")
    cookie = config.backend[0].cookie
    assert cookie is not None and cookie.nocache is False


def test_stick_table_on_src():
    config, _, _ = convert("backend a\n  stick-table type ip size 100k expire 30m\n  stick on src\n")
    stick = config.backend[0].stick
    assert stick is not None and (stick.on, stick.size, stick.expire) == ("src", 102400, 1800)
    config, warnings, _ = convert("backend a\n  stick-table type ip size 1m expire 10s store http_req_rate(10s)\n")
    assert config.backend[0].stick is None
    assert warnings == [
        "haproxy.cfg:2: cannot translate: stick-table store http_req_rate(10s)",
        "haproxy.cfg:2: cannot translate: stick-table type ip size 1m expire 10s store http_req_rate(10s) "
        "(without 'stick on src' the table is not used for persistence)",
    ]


# -- ACLs and rules -------------------------------------------------------------------------------

ROUTING = """\
defaults
    mode http

frontend www
    bind :80
{rules}
    default_backend web

backend web
    server w1 10.0.0.1:80
backend api
    server a1 10.0.0.2:80
"""


def rules_of(rules: str, keys: frozenset[str] | None = None) -> tuple[list[dict[str, object]], list[str]]:
    config, warnings, _ = convert(
        ROUTING.format(rules=dedent(rules).rstrip().replace("\n", "\n    ").join(["    ", ""])), keys=keys
    )
    return [r.model_dump(by_alias=True, exclude_defaults=True, mode="json") for r in config.frontend[0].rule], warnings


def test_acl_and_use_backend():
    rules, warnings = rules_of(
        """\
        acl is_api path_beg /api /v2
        use_backend api if is_api
        """
    )
    assert rules == [{"if": {"path_beg": ["/api", "/v2"]}, "use_backend": "api"}]
    assert warnings == []


def test_acl_negation_becomes_unless():
    rules, _ = rules_of(
        """\
        acl internal src 10.0.0.0/8
        use_backend api if !internal
        """
    )
    assert rules == [{"unless": {"src": ["10.0.0.0/8"]}, "use_backend": "api"}]


def test_acl_and_is_one_table_with_an_unless():
    rules, _ = rules_of(
        """\
        acl is_api path_beg /api
        acl post method POST
        acl internal src 10.0.0.0/8
        use_backend api if is_api post !internal
        """
    )
    assert rules == [
        {"if": {"path_beg": ["/api"], "method": ["POST"]}, "unless": {"src": ["10.0.0.0/8"]}, "use_backend": "api"}
    ]


def test_unless_condition_and_anonymous_acls():
    rules, _ = rules_of("use_backend api unless { path_beg /static } { method GET }\n")
    assert rules == [{"unless": {"path_beg": ["/static"], "method": ["GET"]}, "use_backend": "api"}]


def test_or_and_an_acl_declared_twice_become_several_rules():
    rules, warnings = rules_of(
        """\
        acl static path_end .css .js
        acl static path_beg /static
        acl blog hdr(host) -i Blog.Example.com
        use_backend api if static || blog
        """
    )
    assert rules == [
        {"if": {"path_end": [".css", ".js"]}, "use_backend": "api"},
        {"if": {"path_beg": ["/static"]}, "use_backend": "api"},
        {"if": {"host": ["blog.example.com"]}, "use_backend": "api"},
    ]
    assert warnings == ["haproxy.cfg:9: note: written as 3 rules (one per alternative of the condition)"]


@pytest.mark.parametrize(
    ("acl", "condition"),
    [
        ("path /exact", {"path": ["/exact"]}),
        ("path_end .jpg", {"path_end": [".jpg"]}),
        ("path_reg ^/item/[0-9]+$", {"path_reg": ["^/item/[0-9]+$"]}),
        ("path_reg -i ^/img", {"path_reg": ["(?i)^/img"]}),
        ("path -m beg /a", {"path_beg": ["/a"]}),
        ("path_sub .php", {"path_reg": ["\\.php"]}),
        ("hdr(host) -i www.example.com", {"host": ["www.example.com"]}),
        ("hdr_dom(host) -i example.com", {"host": ["example.com"]}),
        ("req.hdr(X-Tenant) acme", {"hdr": {"X-Tenant": ["acme"]}}),
        ("hdr(Upgrade) -m found", {"hdr": {"Upgrade": []}}),
        ("method GET HEAD", {"method": ["GET", "HEAD"]}),
        ("src 10.0.0.0/8 192.0.2.7", {"src": ["10.0.0.0/8", "192.0.2.7/32"]}),
        ("query debug=1", {"query": ["debug=1"]}),
        ("url_param(debug) 1", {"query": ["debug=1"]}),
    ],
)
def test_acl_criteria_without_the_keys_of_issue_13(acl, condition):
    rules, _ = rules_of(f"acl x {acl}\nuse_backend api if x\n", keys=frozenset())
    assert rules == [{"if": condition, "use_backend": "api"}]


def test_untranslatable_acls_are_named_at_their_line_and_where_used():
    rules, warnings = rules_of(
        """\
        acl sni req.ssl_sni -i api.example
        acl list src -f /etc/haproxy/blocked.lst
        use_backend api if sni
        http-request deny if list
        use_backend api if a_typo
        use_backend api if { path_beg /a } || { path_beg /b } { path_beg /c }
        """
    )
    assert rules == []  # a directive is translated whole or not at all
    assert warnings == [
        "haproxy.cfg:6: cannot translate: acl sni req.ssl_sni -i api.example "
        "(the fetch 'req.ssl_sni' has no equivalent)",
        "haproxy.cfg:7: cannot translate: acl list src -f /etc/haproxy/blocked.lst "
        "(ACL values from a file (-f /etc/haproxy/blocked.lst) has no equivalent)",
        "haproxy.cfg:8: cannot translate: use_backend api if sni "
        "(ACL 'sni': the fetch 'req.ssl_sni' has no equivalent)",
        "haproxy.cfg:9: cannot translate: http-request deny if list "
        "(ACL 'list': ACL values from a file (-f /etc/haproxy/blocked.lst) has no equivalent)",
        "haproxy.cfg:10: cannot translate: use_backend api if a_typo (the ACL 'a_typo' is not defined)",
        "haproxy.cfg:11: cannot translate: use_backend api if { path_beg /a } || { path_beg /b } { path_beg /c } "
        "(two path_beg tests that must both match: balancer's if has one list per key)",
    ]


def test_http_request_rules_come_before_use_backend_as_in_haproxy():
    rules, _ = rules_of(
        """\
        use_backend api if { path_beg /api }
        http-request deny if { src 10.66.0.0/16 }
        http-request redirect location https://example.com/ code 301 if { hdr(host) -i old.example.com }
        http-request set-header X-Env prod
        http-request del-header X-Debug
        redirect location /new if { path /old }
        tcp-request connection reject if { src 192.0.2.0/24 }
        """
    )
    assert rules == [
        {"if": {"src": ["192.0.2.0/24"]}, "action": "deny"},
        {"if": {"src": ["10.66.0.0/16"]}, "action": "deny"},
        {"if": {"host": ["old.example.com"]}, "redirect": {"location": "https://example.com/", "code": 301}},
        {"set_header": {"X-Env": "prod"}},
        {"del_header": ["X-Debug"]},
        {"if": {"path": ["/old"]}, "redirect": {"location": "/new"}},
        {"if": {"path_beg": ["/api"]}, "use_backend": "api"},
    ]


REDIRECT_AND_HEADERS = """\
frontend www
    mode http
    bind 127.0.0.1:80
    redirect scheme https code 301 if !{ ssl_fc }
    http-request set-header X-Client %[src]
    http-request set-header X-Forwarded-Proto https if { ssl_fc }
    http-request add-header X-A b
    default_backend web
backend web
    mode http
    server s1 10.0.0.1:80
"""


def test_redirect_scheme_and_dynamic_rules_are_named_where_the_model_lacks_their_keys():
    result = translate(REDIRECT_AND_HEADERS, keys=frozenset())
    assert result.messages() == [
        "haproxy.cfg:4: cannot translate: redirect scheme https code 301 if !{ ssl_fc } "
        "(only 'redirect location' (a fixed URL) is available in this build)",
        "haproxy.cfg:5: cannot translate: http-request set-header X-Client %[src] "
        "(header values are fixed strings in balancer)",
        "haproxy.cfg:6: cannot translate: http-request set-header X-Forwarded-Proto https if { ssl_fc } "
        "(balancer sets X-Forwarded-Proto only with forwardfor (option forwardfor))",
        "haproxy.cfg:7: cannot translate: http-request add-header X-A b (this build has no add_header)",
    ]
    assert [loss.split(": cannot")[0] for loss in result.losses] == [f"haproxy.cfg:{n}" for n in (4, 5, 6, 7)]


def test_redirect_scheme_and_add_header_with_the_keys_of_issue_13():
    result = translate(
        REDIRECT_AND_HEADERS.replace("    mode http\n    bind", "    mode http\n    option forwardfor\n    bind"),
        keys=ALL_KEYS,
    )
    assert 'redirect = { scheme = "https", code = 301 }' in result.toml  # a plain frontend: !ssl_fc always
    assert 'add_header = { X-A = "b" }' in result.toml
    assert "haproxy.cfg:7: note: balancer sets X-Forwarded-Proto to http or https itself (forwardfor = true)" in (
        result.warnings
    )
    assert [loss.split(" (")[0] for loss in result.losses] == [
        "haproxy.cfg:6: cannot translate: http-request set-header X-Client %[src]"
    ]


def test_ssl_fc_is_known_in_each_frontend_of_a_split(tmp_path: Path):
    (tmp_path / "x.pem").write_text("")
    config, _, _ = convert(
        """\
        defaults
            mode http
        frontend www
            bind :80
            bind :443 ssl crt x.pem
            use_backend api if { ssl_fc }
            default_backend web
        backend web
        backend api
        """,
        tmp_path,
    )
    plain, tls = config.frontend
    assert plain.rule == []
    assert [(r.if_, r.use_backend) for r in tls.rule] == [(None, "api")]


def test_tcp_frontend_keeps_only_src_rules():
    config, warnings, _ = convert(
        """\
        frontend db
            bind :5432
            tcp-request connection reject if { src 10.66.0.0/16 }
            use_backend replica if { path_beg /x }
            default_backend primary
        backend primary
        backend replica
        """
    )
    assert [r.action for r in config.frontend[0].rule] == ["deny"]
    assert warnings == [
        "haproxy.cfg:4: cannot translate: use_backend replica if { path_beg /x } "
        "(a tcp frontend's rules may only test src)"
    ]


def test_condition_tables_directly():
    notes: list[str] = []
    acls = {"a": [parse_criterion(["path_beg", "/a"], notes)], "b": [parse_criterion(["src", "10.0.0.0/8"], notes)]}
    assert condition_tables(("if", ["a", "b"]), acls, ssl=False) == [
        ({"path_beg": ["/a"], "src": ["10.0.0.0/8"]}, None)
    ]
    assert condition_tables(("if", ["!a", "!b"]), acls, ssl=False) == (
        "several negated ACLs on different criteria: balancer's unless is one table"
    )
    assert condition_tables(("if", ["TRUE"]), acls, ssl=False) == [(None, None)]
    assert condition_tables(("if", ["FALSE"]), acls, ssl=False) == []


# -- stats ----------------------------------------------------------------------------------------


def test_stats_listen_becomes_the_stats_page():
    config, warnings, toml = convert(
        """\
        listen stats
            bind *:8404
            mode http
            stats enable
            stats uri /haproxy?stats
            stats refresh 5s
            stats auth admin:s3cr:et
            stats hide-version
        """
    )
    assert config.frontend == [] and config.backend == []
    assert str(config.stats.bind) == "0.0.0.0:8404"
    assert config.stats.uri == "/haproxy?stats"
    assert config.stats.refresh == 5
    assert config.stats.auth is not None and (config.stats.auth.user, config.stats.auth.password) == (
        "admin",
        "s3cr:et",
    )
    assert warnings == ["haproxy.cfg:8: cannot translate: stats hide-version"]
    assert "# from haproxy.cfg:1 listen stats" in toml


def test_stats_on_a_serving_frontend_has_no_bind_of_its_own():
    config, warnings, _ = convert("frontend www\n  bind :80\n  stats uri /st\n  default_backend web\n" + SIMPLE_BACKEND)
    assert config.stats.bind is None and config.stats.uri == "/st"
    assert warnings == ["haproxy.cfg:3: note: frontend www also serves traffic: give [stats] its own bind"]


# -- everything else -------------------------------------------------------------------------------


def test_unsupported_directives_and_sections_are_named_with_their_line():
    _, warnings, _ = convert(
        """\
        global
            daemon
        defaults
            mode http
            option http-use-proxy-header
            option http-server-close
        peers mypeers
            peer lb1 10.0.0.1:1024
        frontend www
            bind :80
            capture request header Host len 32
            default_backend web
        backend web
            server s1 10.0.0.1:80
        """
    )
    assert warnings == [
        "haproxy.cfg:2: cannot translate: daemon",
        "haproxy.cfg:5: cannot translate: option http-use-proxy-header",
        "haproxy.cfg:6: cannot translate: option http-server-close (balancer keeps connections alive on both sides)",
        "haproxy.cfg:7: cannot translate: peers section (its directives are skipped)",
        "haproxy.cfg:11: cannot translate: capture request header Host len 32",
    ]


def test_a_frontend_with_nothing_left_to_route_to_is_skipped():
    config, warnings, _ = convert("frontend f\n  bind :80\n  use_backend %[req.hdr(host)]\n")
    assert config.frontend == []
    assert warnings == [
        "haproxy.cfg:1: cannot translate: frontend f (nothing left to route to (no default_backend))",
        "haproxy.cfg:3: cannot translate: use_backend %[req.hdr(host)] (dynamic backend names are not available)",
    ]


def test_names_haproxy_allows_but_balancer_does_not_are_rewritten():
    config, warnings, _ = convert(
        "backend app:v1\n  server s:1 10.0.0.1:80\nfrontend f\n  bind :80\n  default_backend app:v1\n"
    )
    assert config.backend[0].name == "app_v1"
    assert config.backend[0].server[0].name == "s_1"
    assert config.frontend[0].default_backend == "app_v1"
    assert "haproxy.cfg:2: note: server name 's:1' written as 's_1'" in warnings


def test_a_realistic_file_translates_to_a_valid_configuration():
    config, warnings, _ = convert(
        """\
        global
            log 127.0.0.1:514 local0
            maxconn 4096
            nbproc 2
        defaults
            mode http
            option httplog
            option forwardfor
            option redispatch
            retries 3
            timeout connect 5s
            timeout client 30s
            timeout server 30s
        frontend http
            bind *:80
            acl url_blog path_beg /blog
            use_backend blog-backend if url_blog
            default_backend web-backend
        backend web-backend
            balance roundrobin
            option httpchk GET /
            server web1 10.0.0.1:80 check
            server web2 10.0.0.2:80 check
        backend blog-backend
            balance roundrobin
            server blog1 10.0.0.3:80 check
        listen stats
            bind :8404
            stats enable
            stats uri /stats
            stats auth admin:admin
        """
    )
    assert warnings == []
    assert config.global_.workers == 2
    assert [f.name for f in config.frontend] == ["http"]
    assert [b.name for b in config.backend] == ["web-backend", "blog-backend"]
    assert str(config.stats.bind) == "0.0.0.0:8404"


# -- issue 13: never weaker than the source, never a traceback, meaning preserved -------------

WEAKENING = """\
frontend www
    mode http
    bind 127.0.0.1:8080
    http-request deny if { sc_http_req_rate(0) gt 100 }
    http-request tarpit if { path_beg /wp-login }
    option httplog
    default_backend web
backend web
    mode http
    server s1 10.0.0.1:80
"""


def test_a_guarding_directive_that_cannot_be_translated_is_a_loss_not_a_warning():
    result = translate(WEAKENING, "haproxy.cfg")
    assert result.losses == [
        "haproxy.cfg:4: cannot translate: http-request deny if { sc_http_req_rate(0) gt 100 } "
        "(ACL '{ sc_http_req_rate(0) gt 100 }': the fetch 'sc_http_req_rate(0)' has no equivalent)",
        "haproxy.cfg:5: cannot translate: http-request tarpit if { path_beg /wp-login }",
    ]
    assert "haproxy.cfg:6: cannot translate: option httplog" not in result.warnings  # silent, as before
    assert "NOT TRANSLATED" not in result.toml


def test_accepted_losses_are_comments_in_the_toml_and_it_stays_valid():
    result = translate(WEAKENING, "haproxy.cfg", accept_loss=True)
    comments = [line for line in result.toml.splitlines() if line.startswith("# NOT TRANSLATED")]
    assert comments == [f"# NOT TRANSLATED (accepted loss): {loss}" for loss in result.losses]
    assert comments[0].startswith("# NOT TRANSLATED (accepted loss): haproxy.cfg:4: cannot translate: http-request")
    assert validate(result.toml) == []


@pytest.mark.parametrize(
    "directive",
    [
        "http-request deny",
        "http-request auth realm x",
        "http-request redirect scheme https",
        "http-request del-header X-Forwarded-For",
        "http-response set-header Strict-Transport-Security max-age=1",
        "tcp-request content reject",
        "tcp-request connection accept if { src 10.0.0.0/8 }",
        "redirect scheme https",
        "stats auth admin:secret",
    ],
)
def test_directives_that_allow_deny_redirect_authenticate_or_strip_weaken_when_lost(directive: str):
    from balancer.config.haproxy import weakens_when_lost

    assert weakens_when_lost(tokenize(directive))


@pytest.mark.parametrize("directive", ["option httplog", "timeout client 5s", "http-request set-var(txn.x) str(a)"])
def test_tuning_and_logging_do_not_weaken_when_lost(directive: str):
    from balancer.config.haproxy import weakens_when_lost

    assert not weakens_when_lost(tokenize(directive))


def test_a_guarding_rule_on_an_approximate_acl_is_a_loss():
    result = translate(
        "frontend f\n  mode http\n  bind :80\n  acl bad hdr_dom(host) -i evil.example\n"
        "  http-request deny if bad\n  use_backend b if bad\n  default_backend b\n"
        "backend b\n  mode http\n  server s 10.0.0.1:80\n"
    )
    assert [loss.split(" (")[0] for loss in result.losses] == [
        "haproxy.cfg:5: cannot translate: http-request deny if bad"
    ]


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        (":99999", "port 99999 of ':99999' is not between 1 and 65535"),
        ("10.10.188:80", "'10.10.188' is not an IPv4 address"),
        ("web server:80", "has no port"),
        ("bad/host:80", "'bad/host' is not an address or a host name"),
    ],
)
def test_bad_addresses_are_named_at_their_line(address: str, reason: str):
    result = translate(f"frontend f\n  bind {address}\n  default_backend b\nbackend b\n  server s {address}\n")
    assert any(m.startswith("haproxy.cfg:2: cannot translate:") and reason in m for m in result.warnings)
    assert any(m.startswith("haproxy.cfg:5: cannot translate:") and reason in m for m in result.warnings)
    assert validate(result.toml) == []


def test_star_and_empty_host_bind_ipv4_any_as_haproxy_does():
    config, _, _ = convert(
        "frontend f\n  bind *:80\n  bind :81 v4v6\n  default_backend b\n" + SIMPLE_BACKEND.replace("web", "b")
    )
    assert [str(a) for a in config.frontend[0].bind] == ["0.0.0.0:80", ":81"]


def test_option_httpchk_passes_2xx_and_3xx_and_sends_options_as_haproxy():
    config, _, _ = convert("backend a\n  mode http\n  option httpchk\n  server s1 10.0.0.1:80 check\n")
    check = config.backend[0].check
    assert check is not None and (check.method, check.path, check.expect) == ("OPTIONS", "/", "2xx,3xx")
    config, _, _ = convert("backend a\n  mode http\n  option httpchk /health\n  server s1 10.0.0.1:80 check\n")
    check = config.backend[0].check
    assert check is not None and (check.method, check.path, check.expect) == ("OPTIONS", "/health", "2xx,3xx")


def test_default_server_applies_to_the_servers_after_it_only():
    config, _, _ = convert(
        "defaults\n  default-server weight 5\nbackend a\n  server s1 10.0.0.1:80\n"
        "  default-server weight 7 maxconn 9\n  server s2 10.0.0.2:80\n  server s3 10.0.0.3:80 weight 8\n"
    )
    servers = {server.name: (server.weight, server.maxconn) for server in config.backend[0].server}
    assert servers == {"s1": (5, 0), "s2": (7, 9), "s3": (8, 9)}


@pytest.mark.parametrize(
    ("timeouts", "tunnel"),
    [
        ("  timeout client 30s\n  timeout server 45s\n", "30s"),
        ("  timeout client 1m\n  timeout server 20000\n", "20000ms"),
        ("  timeout client 30s\n  timeout server 30s\n  timeout tunnel 2h\n", "2h"),
    ],
)
def test_a_tcp_frontend_closes_idle_connections_as_haproxy(timeouts: str, tunnel: str):
    config, _, _ = convert(
        "defaults\n  mode tcp\n" + timeouts + "frontend f\n  bind 127.0.0.1:6443\n  default_backend b\n"
        "backend b\n  server s 10.0.0.1:6443\n"
    )
    frontend = config.frontend[0]
    assert frontend.timeouts.tunnel == convert_duration(tunnel)


def test_a_backend_timeout_tunnel_reaches_its_tcp_frontends():
    config, _, _ = convert(
        "defaults\n  mode tcp\n  timeout client 30s\n  timeout server 30s\nfrontend f\n  bind 127.0.0.1:6443\n"
        "  default_backend b\nbackend b\n  timeout tunnel 1h\n  server s 10.0.0.1:6443\n"
    )
    assert config.frontend[0].timeouts.tunnel == 3600


def convert_duration(text: str) -> float:
    from balancer.config.haproxy.translator import _seconds

    return _seconds(text)


IF_BLOCKS = """\
global
.if version_atleast(2.8)
    maxconn 2800
.elif version_atleast(2.4)
    maxconn 2400
.else
    maxconn 1000
.endif
.if defined(HAPROXY_LOCALPEER)
    nbthread 8
.endif
.if feature(OPENSSL) && !feature(QUIC)
    tune.http.maxhdr 64
.endif
"""


def test_if_blocks_take_the_branch_of_the_haproxy_version_and_name_what_they_assume():
    result = translate(IF_BLOCKS)
    config = parse_config(result.toml)
    assert config.global_.maxconn == 2400
    assert config.global_.workers != 8  # `nbthread 8` is in a branch HAProxy does not take
    assert (
        "haproxy.cfg:2: note: .if version_atleast(2.8): version_atleast(2.8) is false for HAProxy 2.6"
        in result.warnings
    )
    assert any(w.startswith("haproxy.cfg:9: note: .if defined(HAPROXY_LOCALPEER)") for w in result.warnings)
    newer = parse_config(translate(IF_BLOCKS, haproxy_version="3.0").toml)
    assert newer.global_.maxconn == 2800


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (".if frobnicate(1)\n.endif\n", "haproxy.cfg:1: condition 'frobnicate(1)': unknown predicate frobnicate()"),
        ("global\n.if 1\n  maxconn 5\n", "haproxy.cfg:3: .if without .endif"),
        (".endif\n", "haproxy.cfg:1: .endif without .if"),
        (".if 1\n.alert stop here\n.endif\n", "haproxy.cfg:2: HAProxy refuses to start here: stop here"),
    ],
)
def test_conditions_haproxy_refuses_are_errors(text: str, error: str):
    assert translate(text).errors == [error]


def import_haproxy(
    tmp_path: Path, data: bytes, capsys: pytest.CaptureFixture[str], *flags: str
) -> tuple[int, str, str]:
    from balancer.cli import main

    path = tmp_path / "haproxy.cfg"
    path.write_bytes(data)
    status = main(["import-haproxy", *flags, str(path)])
    out, err = capsys.readouterr()
    return status, out, err.replace(str(path), "haproxy.cfg")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "haproxy.cfg:1: not an HAProxy configuration (empty): nothing to translate"),
        (b"# only a comment\n\n", "haproxy.cfg:1: not an HAProxy configuration (no global, defaults, frontend"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00" * 20, "haproxy.cfg:1: not a text configuration (it holds NUL bytes)"),
        (b"global\n  maxconn 1\n\x00\x01", "haproxy.cfg:3: not a text configuration"),
    ],
)
def test_cli_refuses_what_is_not_a_text_configuration_in_one_line(tmp_path, capsys, data: bytes, message: str):
    status, out, err = import_haproxy(tmp_path, data, capsys)
    assert (status, out) == (1, "")
    assert err.startswith(message) and err.count("\n") == 1 and "\x00" not in err


def test_cli_reads_a_file_that_is_not_utf8_and_names_the_line(tmp_path, capsys):
    data = b"global\n  # caf\xe9 au lait\n  maxconn 10\nfrontend f\n  bind :80\n  default_backend b\n"
    status, out, err = import_haproxy(tmp_path, data + b"backend b\n  server s 10.0.0.1:80\n", capsys)
    assert status == 0 and "maxconn = 10" in out
    assert "haproxy.cfg:2: note: bytes that are not UTF-8" in err


def test_cli_exits_1_when_no_frontend_is_left_to_serve(tmp_path, capsys):
    data = b"frontend f\n  bind :99999\n  default_backend b\nbackend b\n  server t 10.0.0.2:80\n"
    status, out, err = import_haproxy(tmp_path, data, capsys)
    assert (status, out) == (1, "")
    assert "haproxy.cfg:2: cannot translate: bind :99999 (port 99999 of ':99999' is not between 1 and 65535)" in err
    assert err.endswith("haproxy.cfg: nothing to serve: no frontend could be translated (see the lines above)\n")


def test_cli_names_a_mistyped_server_address_and_still_imports(tmp_path, capsys):
    data = b"frontend f\n  bind :80\n  default_backend b\nbackend b\n  server s 10.10.188:80\n  server t 10.0.0.2:80\n"
    status, out, err = import_haproxy(tmp_path, data, capsys)
    assert status == 0 and 'address = "10.0.0.2:80"' in out
    assert "haproxy.cfg:5: cannot translate: server s 10.10.188:80 ('10.10.188' is not an IPv4 address)" in err
    assert "a bug" not in err


def test_cli_exits_1_naming_each_loss_unless_accepted(tmp_path, capsys):
    status, out, err = import_haproxy(tmp_path, WEAKENING.encode(), capsys)
    assert (status, out) == (1, "")
    assert "haproxy.cfg:4: cannot translate: http-request deny" in err
    assert "haproxy.cfg:5: cannot translate: http-request tarpit" in err
    assert "pass --accept-loss" in err
    status, out, err = import_haproxy(tmp_path, WEAKENING.encode(), capsys, "--accept-loss")
    assert status == 0
    assert "# NOT TRANSLATED (accepted loss): " in out and "haproxy.cfg:5: cannot translate: http-request tarpit" in out


HOSTILE = [
    b"bind :99999\n",
    b"frontend\n",
    b"frontend f\n  bind\n  bind :\n  bind [::1\n  bind :-1\n  bind :80-90\n  bind unix@\n",
    b"backend b\n  server\n  server s\n  server s :\n  server s [::1]:x\n  server s 999.1.1.1:80\n  cookie\n",
    b"backend b\n  balance\n  hash-type\n  stick-table\n  stick on\n  http-check\n  http-check expect\n",
    b"frontend f\n  bind :80\n  acl\n  acl a\n  use_backend\n  use_backend b if\n  use_backend b if {\n",
    b"frontend f\n  bind :80\n  http-request\n  http-request deny if !\n  redirect\n  redirect location\n",
    b"frontend f\n  bind :80\n  http-request redirect code 999 location x\n  redirect prefix\n  stats auth\n",
    b"global\n  log\n  stats socket\n  ssl-default-bind-options ssl-min-ver\n  nbthread 999999999999999999\n",
    b"defaults\n  timeout client\n  timeout client 99999999999999999999999d\n  retries -1\n  option\n  no option\n",
    b"listen l\n  bind :80\n  server s 10.0.0.1:80 weight\n  default-server inter\n"
    b"  server t 10.0.0.1:80 check inter x\n",
    b".if\n.elif\n.else\n.else\n.endif\n.endif\n",
    b".if (((((\n.endif\n.if version_atleast()\n.endif\n.if streq(a)\n.endif\n",
    b"frontend f\n  bind :80 ssl crt\n  bind :81 ssl crt x.pem verify required alpn\n  default_backend b\n",
    b"\"unterminated 'quotes \\\nfrontend \\\n",
    b"\xef\xbb\xbfglobal\n  maxconn 5\n",
    b"frontend f\r\n  bind :80\r\n  default_backend b\r\nbackend b\r\n  server s 10.0.0.1:80\r\n",
    bytes(range(1, 256)) * 4,
    b"userlist u\n  user a password $6$x\n  group g users a\nfrontend f\n  bind :80\n"
    b"  http-request auth if !{ http_auth(u) }\n",
    b"frontend f\n  bind :80\n  use_backend b if { path_beg -i } { hdr(host) } { src 1.2.3.999 } { method }\n",
    b"frontend f\n  bind :80\n  acl x path_reg ([\n  http-request deny if x\n  default_backend b\n"
    b"backend b\n  server s a:1\n",
]


@pytest.mark.parametrize("data", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_and_broken_input_never_raises_a_traceback(tmp_path, capsys, data: bytes):
    for flags in ((), ("--accept-loss",)):
        status, _out, err = import_haproxy(tmp_path, data, capsys, *flags)
        assert status in (0, 1)
        assert "Traceback" not in err and "a bug" not in err and "failed (" not in err, err
        assert "\x00" not in err
        for line in err.splitlines():
            assert line.startswith("haproxy.cfg:"), line


# -- the keys of issue 13 (written when the model has them; read here as TOML) ------------------


def with_all_keys(cfg: str) -> tuple[dict[str, Any], Translation]:
    result = translate(dedent(cfg), keys=ALL_KEYS)
    return tomllib.loads(result.toml), result


def frontend_rules(cfg: str) -> list[dict[str, Any]]:
    data, _ = with_all_keys(
        "frontend f\n  mode http\n  bind 127.0.0.1:80\n"
        + dedent(cfg)
        + "  default_backend b\nbackend b\n  mode http\n  server s 10.0.0.1:80\n"
    )
    return [{k: v for k, v in rule.items()} for rule in data["frontend"][0].get("rule", [])]


@pytest.mark.parametrize(
    ("acl", "condition"),
    [
        ("path_end -i .css .js", {"path_end": [".css", ".js"], "ignore_case": True}),
        ("path_sub -i /legacy/", {"path_sub": ["/legacy/"], "ignore_case": True}),
        ("path_dir api", {"path_dir": ["api"]}),
        ("hdr_beg(host) -i img.", {"host_beg": ["img."]}),
        ("hdr_end(host) .example.com", {"host_end": [".example.com"]}),
        ("hdr(Upgrade) -i websocket", {"hdr": {"Upgrade": ["websocket"]}, "ignore_case": True}),
        ("hdr_sub(user-agent) -i curl", {"hdr_sub": {"user-agent": ["curl"]}, "ignore_case": True}),
        ("req.hdr_reg(x-id) ^[0-9]+$", {"hdr_reg": {"x-id": ["^[0-9]+$"]}}),
        ("urlp(debug) 1", {"url_param": {"debug": ["1"]}}),
        ("url_param(token) -m found", {"url_param": {"token": []}}),
        ("dst_port 443 8443", {"dst_port": [443, 8443]}),
        ("url_beg /static", {"path_beg": ["/static"]}),
    ],
)
def test_acl_fetches_with_their_flags(acl: str, condition: dict[str, Any]):
    assert frontend_rules(f"  acl x {acl}\n  use_backend b if x\n") == [{"if": condition, "use_backend": "b"}]


def test_anonymous_acls_translate_like_named_ones():
    assert frontend_rules("  use_backend b if { hdr_beg(host) -i img }\n") == [
        {"if": {"host_beg": ["img"]}, "use_backend": "b"}
    ]


def test_an_and_of_case_insensitive_and_case_sensitive_tests_is_refused_at_its_line():
    data, result = with_all_keys(
        "frontend f\n  mode http\n  bind :80\n  acl a path_beg -i /api\n  acl b hdr(x-env) prod\n"
        "  http-request deny if a b\n  default_backend b\nbackend b\n  mode http\n  server s 10.0.0.1:80\n"
    )
    assert "rule" not in data["frontend"][0]
    assert result.losses == [
        "haproxy.cfg:6: cannot translate: http-request deny if a b "
        "(case-insensitive (-i) and case-sensitive tests that must both match)"
    ]


def test_an_or_of_mixed_flags_becomes_one_rule_per_flag():
    rules = frontend_rules("  acl a path_beg -i /api\n  acl a path_beg /V2\n  use_backend b if a\n")
    assert rules == [
        {"if": {"path_beg": ["/api"], "ignore_case": True}, "use_backend": "b"},
        {"if": {"path_beg": ["/V2"]}, "use_backend": "b"},
    ]


def test_userlist_http_auth_and_auth_rule():
    data, result = with_all_keys((FIXTURES / "13-userlist-basic-auth.cfg").read_text())
    assert result.losses == [] and result.errors == []
    assert data["userlist"] == [
        {
            "name": "admins",
            "user": [
                {"name": "alice", "password_hash": data["userlist"][0]["user"][0]["password_hash"]},
                {"name": "bob", "password": "hunter2"},
            ],
        }
    ]
    assert data["userlist"][0]["user"][0]["password_hash"].startswith("$6$")
    assert data["frontend"][0]["rule"] == [
        {"if": {"path_beg": ["/admin"]}, "unless": {"http_auth": "admins"}, "action": "auth", "realm": "Admin"}
    ]


def test_monitor_uri_errorfiles_persist_cookie_options_and_log_facility():
    data, result = with_all_keys(
        """\
        global
            log 10.0.0.5:514 local2 info
        defaults
            mode http
            errorfile 503 /etc/haproxy/errors/503.http
        frontend health
            bind :8081
            monitor-uri /healthz
        frontend www
            bind :80
            default_backend app
        backend app
            option persist
            cookie SRV insert indirect nocache postonly
            server a 10.0.0.1:80 cookie a
        """
    )
    assert data["global"]["log_facility"] == "local2"
    health, _www = data["frontend"]
    assert (health["monitor_uri"], health["errorfiles"]) == ("/healthz", {"503": "/etc/haproxy/errors/503.http"})
    assert "default_backend" not in health
    backend = data["backend"][0]
    assert backend["persist"] is True and backend["errorfiles"] == {"503": "/etc/haproxy/errors/503.http"}
    cookie = backend["cookie"]
    assert (cookie["indirect"], cookie["nocache"], cookie["postonly"], cookie["preserve"]) == (True, True, True, False)
    assert not any("cannot translate" in message for message in result.messages())


def test_a_cookie_without_indirect_is_seen_by_the_server_as_in_haproxy():
    data, _ = with_all_keys("backend app\n  mode http\n  cookie SRV insert\n  server a 10.0.0.1:80\n")
    assert data["backend"][0]["cookie"]["indirect"] is False


def test_backend_rules_and_response_rules():
    data, result = with_all_keys((FIXTURES / "21-header-hygiene.cfg").read_text())
    frontend, backend = data["frontend"][0], data["backend"][0]
    assert frontend["response_rule"] == [
        {"del_header": ["Server"]},
        {"set_header": {"X-Frame-Options": "DENY"}},
        {"add_header": {"X-Content-Type-Options": "nosniff"}},
    ]
    assert backend["rule"] == [{"set_header": {"X-Backend": "app"}}]
    # balancer's del_header drops the client's X-Forwarded-For as HAProxy's does
    assert {"del_header": ["X-Forwarded-For"]} in frontend["rule"]
    assert result.losses == []


def test_backend_deny_and_ssl_in_a_backend():
    data, result = with_all_keys(
        "backend admin\n  mode http\n  http-request deny if !{ src 10.0.14.0/24 }\n"
        "  http-request redirect scheme https unless { ssl_fc }\n  server s 10.0.0.1:80\n"
        "backend db\n  mode tcp\n  tcp-request content reject if !{ src 10.1.0.0/16 }\n  server s 10.0.0.2:5432\n"
    )
    admin, db = data["backend"]
    assert admin["rule"] == [
        {"unless": {"src": ["10.0.14.0/24"]}, "action": "deny"},
        {"unless": {"ssl": True}, "redirect": {"scheme": "https", "code": 302}},
    ]
    assert db["rule"] == [{"unless": {"src": ["10.1.0.0/16"]}, "action": "deny"}]
    assert result.losses == []


def test_http_response_rules_may_test_the_status_and_request_rules_may_not():
    data, result = with_all_keys(
        "frontend f\n  mode http\n  bind :80\n  http-response set-header Cache-Control no-store if { status 404 }\n"
        "  http-request deny if { status 404 }\n  default_backend b\nbackend b\n  mode http\n  server s 10.0.0.1:80\n"
    )
    assert data["frontend"][0]["response_rule"] == [
        {"if": {"status": [404]}, "set_header": {"Cache-Control": "no-store"}}
    ]
    assert result.losses == [
        "haproxy.cfg:5: cannot translate: http-request deny if { status 404 } "
        "(the response status is not known when a request rule runs)"
    ]


def test_http_rules_in_a_tcp_frontend_are_ignored_as_haproxy_does_not_a_loss():
    result = translate(
        "frontend f\n  mode tcp\n  bind :80\n  http-request deny\n  default_backend b\n"
        "backend b\n  server s 10.0.0.1:80\n"
    )
    assert result.losses == []
    assert "haproxy.cfg:4: cannot translate: http-request deny (HAProxy ignores HTTP rules in mode tcp too)" in (
        result.warnings
    )


def test_a_stats_page_with_auth_losing_its_tls_is_a_loss():
    result = translate(
        "listen stats\n  mode http\n  bind :8443 ssl crt /etc/haproxy/site.pem\n  stats enable\n"
        "  stats auth admin:secret\n"
    )
    assert result.losses == [
        "haproxy.cfg:3: cannot translate: ssl of the stats page (balancer's stats page has no TLS)"
    ]


def test_an_allow_is_translated_only_when_no_later_ruleset_follows():
    alone = frontend_rules("  tcp-request connection accept if { src 10.0.0.0/8 }\n  tcp-request connection reject\n")
    assert alone == [{"if": {"src": ["10.0.0.0/8"]}, "action": "allow"}, {"action": "deny"}]
    _data, result = with_all_keys(
        "frontend f\n  mode http\n  bind :80\n  http-request allow if { src 10.0.0.0/8 }\n"
        "  http-request deny\n  use_backend b if { path_beg /b }\n  default_backend b\n"
        "backend b\n  mode http\n  server s 10.0.0.1:80\n"
    )
    assert [loss.split(" (")[0] for loss in result.losses] == [
        "haproxy.cfg:4: cannot translate: http-request allow if { src 10.0.0.0/8 }"
    ]


def test_cli_haproxy_version_chooses_the_if_branch(tmp_path, capsys):
    data = IF_BLOCKS.encode() + b"frontend f\n  bind :80\n  default_backend b\nbackend b\n  server s 10.0.0.1:80\n"
    status, out, err = import_haproxy(tmp_path, data, capsys, "--haproxy-version", "3.0")
    assert status == 0 and "maxconn = 2800" in out
    assert "haproxy.cfg:2: note: .if version_atleast(2.8): version_atleast(2.8) is true for HAProxy 3.0" in err
    status, out, err = import_haproxy(tmp_path, data, capsys, "--haproxy-version", "latest")
    assert (status, out) == (1, "")
    assert err == "--haproxy-version 'latest': expected a version such as 2.8\n"


@pytest.mark.parametrize(
    ("directive", "translated"),
    [
        ("http-request set-header X-Forwarded-Proto https if { ssl_fc }", True),
        ("http-request set-header X-Forwarded-Proto http unless { ssl_fc }", True),
        ("http-request set-header X-Forwarded-Proto http if !{ ssl_fc }", True),
        ("http-request set-header X-Forwarded-Proto https", False),  # behind a TLS terminator: not what we write
        ("http-request set-header X-Forwarded-Proto http if { ssl_fc }", False),
    ],
)
def test_x_forwarded_proto_is_forwardfor_only_when_it_says_the_connection_scheme(directive: str, translated: bool):
    result = translate(
        f"frontend f\n  mode http\n  option forwardfor\n  bind :80\n  {directive}\n  default_backend b\n"
        "backend b\n  mode http\n  server s 10.0.0.1:80\n"
    )
    assert (result.losses == []) is translated, result.losses


def test_option_http_buffer_request_buffers_the_body_before_choosing_a_server():
    config, warnings, _ = convert(
        "defaults\n  mode http\n  option http-buffer-request\nfrontend f\n  bind :80\n  default_backend b\n"
        "backend b\n  server s 10.0.0.1:80\n"
    )
    assert config.frontend[0].buffer_request is True
    assert warnings == []


def test_log_format_becomes_the_global_template_when_balancer_can_write_it(tmp_path, capsys):
    cfg = (
        'defaults\n  mode http\n  log-format "%ci:%cp [%tr] %ft %b/%s %ST %B"\n'
        'frontend f\n  bind :80\n  log-format "%ci %ST"\n  default_backend b\n'
        "backend b\n  server s 10.0.0.1:80\n"
    )
    status, out, err = import_haproxy(tmp_path, cfg.encode(), capsys)
    assert status == 0 and 'log_format = "%ci:%cp [%tr] %ft %b/%s %ST %B"' in out
    assert 'haproxy.cfg:6: cannot translate: log-format "%ci %ST" (balancer has one log format' in err
    status, out, err = import_haproxy(tmp_path, b"defaults\n  log-format %[src]\n" + cfg.encode()[9:], capsys)
    assert "haproxy.cfg:2: cannot translate: log-format %[src] (unknown log-format variable" in err


def test_http_auth_on_a_userlist_that_is_not_translated_is_a_loss():
    _data, result = with_all_keys(
        "frontend f\n  mode http\n  bind :80\n  http-request auth if !{ http_auth(nobody) }\n"
        "  default_backend b\nbackend b\n  mode http\n  server s 10.0.0.1:80\n"
    )
    assert result.losses == [
        "haproxy.cfg:4: cannot translate: http-request auth if !{ http_auth(nobody) } "
        "(userlist 'nobody' is not translated)"
    ]
