"""Loading configuration files: what `balancer check` shows an operator.

Every problem is asserted as the full `FILE:LINE: message` text. Configurations are
written with dedent and a backslash after the opening quotes, so the first line of the
literal is line 1 of the file.
"""

# ruff: noqa: E501  (the SPEC example is kept verbatim, long lines included)

from __future__ import annotations

import os
from pathlib import Path
from textwrap import dedent

import pytest

from balancer.config import Config, ConfigError, Problem, load_config, parse_config
from balancer.config.values import Address

# The example of SPEC.md "Configuration file (TOML)", plus the "blog" backend it mentions.
SPEC_EXAMPLE = dedent(
    """\
    [global]
    workers = 2                  # processes sharing the listeners; 0 = one per core
    grace = "30s"                # how long a stop or reload waits for in-flight work
    log = "stdout"               # or "file:/var/log/balancer.log" or "syslog:udp://127.0.0.1:514"
    log_format = "text"          # or "json"
    maxconn = 100000
    user = ""                    # drop privileges to this user/group after binding
    group = ""
    disable_file = "/etc/balancer/disable"   # while it exists: withdraw announcements, fail /health

    [admin]
    socket = "/run/balancer/admin.sock"      # runtime API (HTTP/JSON over a unix socket)
    bind = "127.0.0.1:9100"                  # same API over TCP, plus /metrics and /health

    [stats]
    bind = "127.0.0.1:8404"
    uri = "/stats"
    auth = { user = "admin", password = "secret" }
    refresh = "2s"

    [[frontend]]
    name = "www"
    bind = [":8080"]
    mode = "http"                # "http" or "tcp"
    default_backend = "web"
    maxconn = 50000
    accept_proxy = false         # expect a PROXY protocol v1/v2 header from the client side
    tls = { cert = ["certs/www.pem"], alpn = ["http/1.1"] }   # optional; several certs = SNI
    timeouts = { client = "30s", http_request = "10s", http_keep_alive = "5s", tunnel = "1h" }
    forwardfor = true            # add X-Forwarded-For / X-Forwarded-Proto

      [[frontend.rule]]          # evaluated in order; first match wins
      if = { path_beg = ["/blog"] }          # also path, path_end, path_reg, host, hdr, method, src, query
      use_backend = "blog"       # a [[backend]] named "blog" is defined like "web" below

      [[frontend.rule]]
      if = { src = ["10.66.0.0/16"] }
      action = "deny"            # or redirect = { location = "...", code = 301 }, set_header/del_header

    [[backend]]
    name = "web"
    mode = "http"
    balance = "roundrobin"       # see Algorithms
    hash_key = "src"             # for hash algorithms: src, uri, url_param(name), hdr(name), cookie(name), 5tuple
    hash_type = "map"            # or "consistent"
    stick = { on = "src", expire = "30m", size = 100000 }   # optional source affinity table
    cookie = { name = "SERVERID", mode = "insert", httponly = true }   # or mode = "prefix" / "rewrite"
    check = { type = "http", path = "/health", expect = 200, interval = "2s", fastinterval = "500ms", downinterval = "5s", rise = 2, fall = 3, timeout = "1s" }
    observe = { errors = 5, cooldown = "30s", max_ejected = "50%" }   # passive: consecutive failures eject
    agent = { port = 5555, interval = "5s" }   # optional agent check
    retries = 2
    redispatch = true
    timeouts = { connect = "2s", server = "30s", queue = "5s" }
    send_proxy = ""              # "v1" or "v2" to prefix server connections with a PROXY header
    source = []                  # local addresses to spread server connections over (port exhaustion)
    pool = { max_idle_per_server = 64, idle_timeout = "30s" }

      [[backend.server]]
      name = "s1"
      address = "127.0.0.1:9001"
      weight = 100               # 0..256
      maxconn = 0                # 0 = unlimited; else excess requests queue
      backup = false
      slowstart = "0s"
      ssl = false                # TLS to this server; ca_file / sni alongside

    [[backend]]
    name = "blog"

      [[backend.server]]
      name = "b1"
      address = "127.0.0.1:9002"
    """
)

# Small valid pieces that error cases build on.
WEB_BACKEND = dedent(
    """\
    [[backend]]
    name = "web"
      [[backend.server]]
      name = "s1"
      address = "127.0.0.1:9001"
    """
)


def problems(text: str, folder: Path | None = None) -> list[str]:
    """Everything wrong with `text`, as `balancer check` prints it."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "lb.toml", base_dir=folder)
    return [str(problem) for problem in caught.value.problems]


# -- valid files ----------------------------------------------------------------------


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "www.pem").write_text("not checked for content here\n")
    path = tmp_path / "balancer.toml"
    path.write_text(SPEC_EXAMPLE)
    return path


def test_the_spec_example_loads(spec_file: Path) -> None:
    config = load_config(spec_file)
    assert isinstance(config, Config)
    assert config.global_.workers == 2
    assert config.global_.grace == 30.0
    assert config.stats.auth is not None and config.stats.auth.password == "secret"
    www = config.frontend[0]
    assert www.name == "www"
    assert www.bind == [Address(host="", port=8080)]
    assert www.tls is not None and www.tls.cert == ["certs/www.pem"]  # kept as written
    assert www.timeouts.tunnel == 3600.0
    assert [rule.use_backend for rule in www.rule] == ["blog", None]
    assert www.rule[1].action == "deny"
    web = config.backend_named("web")
    assert web.check is not None and web.check.fastinterval == 0.5
    assert web.stick is not None and web.stick.expire == 1800.0
    assert [(server.name, str(server.address)) for server in web.server] == [("s1", "127.0.0.1:9001")]
    assert config.backend_named("blog").server[0].address.port == 9002


def test_certificates_are_found_relative_to_the_config_file_not_the_cwd(
    spec_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    load_config(spec_file)  # no error
    (spec_file.parent / "certs" / "www.pem").unlink()
    with pytest.raises(ConfigError) as caught:
        load_config(spec_file)
    certificate = spec_file.parent / "certs" / "www.pem"
    assert str(caught.value) == (
        f"{spec_file}:28: certificate file 'certs/www.pem' not found (looked for {certificate})"
    )


def test_load_config_accepts_a_str_path(spec_file: Path) -> None:
    assert load_config(str(spec_file)).frontend[0].name == "www"


def test_minimal_file_with_defaults() -> None:
    config = parse_config('[[frontend]]\nname = "a"\nbind = ":80"\ndefault_backend = "web"\n' + WEB_BACKEND)
    assert config.frontend[0].mode == "http"
    assert config.frontend[0].bind == [Address(port=80)]
    assert config.backend[0].balance == "roundrobin"


@pytest.mark.parametrize(
    ("settings", "defers"),
    [
        ("", True),  # HTTP: the client speaks first
        ('mode = "tcp"\n', False),  # a relay's server may speak first
        ('mode = "tcp"\naccept_proxy = true\n', True),  # the PROXY header comes first
        ("defer_accept = false\n", False),
        ('mode = "tcp"\ndefer_accept = true\n', True),
    ],
)
def test_defer_accept_follows_who_speaks_first(settings: str, defers: bool) -> None:
    mode = "tcp" if "tcp" in settings else "http"
    config = parse_config(
        f'[[frontend]]\nname = "a"\nbind = ":80"\ndefault_backend = "web"\n{settings}'
        + f'[[backend]]\nname = "web"\nmode = "{mode}"\n[[backend.server]]\nname = "s1"\naddress = "10.0.0.1:80"\n'
    )
    assert config.frontend[0].defers_accept() is defers


def test_an_empty_file_is_valid() -> None:
    assert parse_config("") == Config()


def test_a_backend_without_servers_is_valid() -> None:
    config = parse_config(
        '[[frontend]]\nname = "a"\nbind = ":80"\ndefault_backend = "empty"\n[[backend]]\nname = "empty"\n'
    )
    assert config.backend[0].server == []


def test_a_redirect_only_frontend_needs_no_backend() -> None:
    text = dedent(
        """\
        [[frontend]]
        name = "to-https"
        bind = ":80"
        rule = [ { redirect = { location = "https://example.com/", code = 301 } } ]
        """
    )
    assert parse_config(text).frontend[0].rule[0].redirect is not None


# -- reading and syntax ---------------------------------------------------------------


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert str(caught.value) == f"{missing}:1: cannot read configuration file: No such file or directory"


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[global]\nuser = "j\xe9r\xf4me"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}:2: not UTF-8 text (byte 0xe9 at column 10)"


def test_a_byte_order_mark_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b'\xef\xbb\xbf[global]\nlog = "stdout"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}:1: the file starts with a UTF-8 byte-order mark (BOM); save it without one"


def test_toml_syntax_error_names_its_line() -> None:
    text = '[global]\nworkers = 2\nlog = "stdout\n'
    assert problems(text) == ["lb.toml:3: TOML syntax error: illegal character '\\n' (column 14)"]


def test_toml_syntax_error_suggests_quotes_for_a_bare_duration() -> None:
    assert problems("[global]\n\ngrace = 30s\n") == [
        "lb.toml:3: TOML syntax error: expected newline or end of document after a statement (column 11)"
        '; strings need quotes: grace = "30s"'
    ]


def test_toml_duplicate_key_is_a_syntax_error() -> None:
    assert problems('[[frontend]]\nname = "a"\nname = "b"\n') == [
        "lb.toml:3: TOML syntax error: cannot overwrite a value (column 11)"
    ]


# -- shape: unknown and missing keys --------------------------------------------------


def test_unknown_keys_at_every_level() -> None:
    text = dedent(
        """\
        colour = "blue"
        [global]
        wrokers = 2
        [admin]
        sock = "/run/x"
        [stats]
        auth = { user = "u", password = "p", realm = "x" }

        [[frontend]]
        name = "www"
        bind = ":80"
        default_backend = "web"
        timeouts = { clinet = "5s" }
        tls = { cert = ["a.pem"], key = "a.key" }
        limits = { bodyy = "1m" }
          [[frontend.rule]]
          if = { paht = ["/"] }
          unless = { src = ["10.0.0.0/8"], spam = 1 }
          redirect = { location = "/x", status = 301 }
          use_backen = "web"

        [[backend]]
        name = "web"
        balence = "leastconn"
        check = { type = "http", intervall = "2s" }
        cookie = { name = "SID", mod = "insert" }
        stick = { on = "src", expires = "1m" }
        observe = { error = 5 }
        agent = { port = 5555, inteval = "1s" }
        timeouts = { conect = "1s" }
        pool = { idle = 1 }
          [[backend.server]]
          name = "s1"
          adress = "127.0.0.1:1"
        """
    )
    assert problems(text) == [
        "lb.toml:1: unknown key 'colour' in the top level",
        "lb.toml:3: unknown key 'wrokers' in [global] (did you mean 'workers'?)",
        "lb.toml:5: unknown key 'sock' in [admin] (did you mean 'socket'?)",
        "lb.toml:7: unknown key 'realm' in [stats.auth]",
        "lb.toml:13: unknown key 'clinet' in timeouts of [[frontend]] (did you mean 'client'?)",
        "lb.toml:14: unknown key 'key' in tls of [[frontend]]",
        "lb.toml:15: unknown key 'bodyy' in limits of [[frontend]] (did you mean 'body'?)",
        "lb.toml:17: unknown key 'paht' in if of [[frontend.rule]] (did you mean 'path'?)",
        "lb.toml:18: unknown key 'spam' in unless of [[frontend.rule]]",
        "lb.toml:19: unknown key 'status' in redirect of [[frontend.rule]]",
        "lb.toml:20: unknown key 'use_backen' in [[frontend.rule]] (did you mean 'use_backend'?)",
        "lb.toml:24: unknown key 'balence' in [[backend]] (did you mean 'balance'?)",
        "lb.toml:25: unknown key 'intervall' in check of [[backend]] (did you mean 'interval'?)",
        "lb.toml:26: unknown key 'mod' in cookie of [[backend]] (did you mean 'mode'?)",
        "lb.toml:27: unknown key 'expires' in stick of [[backend]] (did you mean 'expire'?)",
        "lb.toml:28: unknown key 'error' in observe of [[backend]] (did you mean 'errors'?)",
        "lb.toml:29: unknown key 'inteval' in agent of [[backend]] (did you mean 'interval'?)",
        "lb.toml:30: unknown key 'conect' in timeouts of [[backend]] (did you mean 'connect'?)",
        "lb.toml:31: unknown key 'idle' in pool of [[backend]]",
        # The misspelt key also leaves the required one missing: both are reported.
        "lb.toml:32: missing required key 'address' in [[backend.server]]",
        "lb.toml:34: unknown key 'adress' in [[backend.server]] (did you mean 'address'?)",
    ]


def test_python_field_names_are_not_config_keys() -> None:
    # The model calls them global_ and if_; the file must say global and if.
    text = '[global_]\nworkers = 1\n[[frontend]]\nname = "a"\nbind = ":80"\n[[frontend.rule]]\nif_ = {}\n'
    assert problems(text) == [
        "lb.toml:1: unknown key 'global_' in the top level (did you mean 'global'?)",
        "lb.toml:7: unknown key 'if_' in [[frontend.rule]] (did you mean 'if'?)",
    ]


def test_missing_required_keys_point_at_the_table() -> None:
    text = dedent(
        """\
        [stats]
        auth = { user = "admin" }

        [[frontend]]
        bind = ":80"

        [[backend]]
        name = "web"
          [[backend.server]]
          address = "127.0.0.1:1"
          [[backend.server]]
          name = "s2"
        """
    )
    assert problems(text) == [
        "lb.toml:2: missing required key 'password' in [stats.auth]",
        "lb.toml:4: missing required key 'name' in [[frontend]]",
        "lb.toml:9: missing required key 'name' in [[backend.server]]",
        "lb.toml:11: missing required key 'address' in [[backend.server]]",
    ]


# -- shape: values --------------------------------------------------------------------


def test_bad_durations() -> None:
    text = dedent(
        """\
        [global]
        grace = 30
        [stats]
        refresh = "2 parsecs"
        [[backend]]
        name = "web"
        timeouts = { connect = "1.5s", server = "-1s" }
        """
    )
    assert problems(text) == [
        'lb.toml:2: global.grace: expected a duration string such as "500ms", "5s" or "2m", got 30',
        "lb.toml:4: stats.refresh: invalid duration '2 parsecs': use a number and a unit "
        '(us, ms, s, m, h, d), e.g. "5s"',
        "lb.toml:7: timeouts.server: invalid duration '-1s': use a number and a unit (us, ms, s, m, h, d), e.g. \"5s\"",
    ]


def test_bad_addresses_each_on_its_own_line_of_a_multiline_array() -> None:
    text = dedent(
        """\
        [admin]
        bind = "localhost"
        [[frontend]]
        name = "www"
        default_backend = "web"
        bind = [
          ":8080",
          "10.0.0.256:80",
          "[::1:80",
          "127.0.0.1:70000",
        ]
        """
    )
    assert problems(text + WEB_BACKEND) == [
        "lb.toml:2: admin.bind: invalid address 'localhost': a port is required, e.g. \"localhost:80\"",
        "lb.toml:8: bind: invalid address '10.0.0.256:80': '10.0.0.256' is not an IPv4 address",
        "lb.toml:9: bind: invalid address '[::1:80': write IPv6 as \"[::1]:8080\"",
        "lb.toml:10: bind: invalid address '127.0.0.1:70000': port must be a number from 0 to 65535",
    ]


def test_choices_list_the_allowed_values() -> None:
    text = dedent(
        """\
        [[frontend]]
        name = "www"
        bind = ":80"
        mode = "udp"
        default_backend = "web"
          [[frontend.rule]]
          redirect = { location = "https://x/", code = 305 }
        [[backend]]
        name = "web"
        hash_type = "rendezvous"
        """
    )
    assert problems(text) == [
        "lb.toml:4: mode must be one of 'http', 'tcp', got 'udp'",
        "lb.toml:7: redirect.code must be one of 301, 302, 303, 307, 308, got 305",
        "lb.toml:10: hash_type must be one of 'map', 'consistent', got 'rendezvous'",
    ]


def test_types_are_not_guessed() -> None:
    text = dedent(
        """\
        [global]
        workers = "2"
        [[frontend]]
        name = "www"
        bind = ":80"
        default_backend = "web"
        forwardfor = "yes"
        timeouts = "30s"
        [[backend]]
        name = "web"
        check = { expect = true }
          [[backend.server]]
          name = "s1"
          address = "127.0.0.1:1"
          weight = 300
          maxconn = -1
        """
    )
    assert problems(text) == [
        "lb.toml:2: global.workers must be an integer, got '2'",
        "lb.toml:7: forwardfor must be true or false, got 'yes'",
        "lb.toml:8: timeouts must be a table, got '30s'",
        "lb.toml:11: check.expect must be an integer, an array of integers or a string, got true",
        "lb.toml:15: weight must be at most 256, got 300",
        "lb.toml:16: maxconn must be at least 0, got -1",
    ]


def test_other_value_errors() -> None:
    text = dedent(
        """\
        [global]
        log = "syslog:tcp://x:514"
        [[frontend]]
        name = "w w w"
        bind = []
          [[frontend.rule]]
          if = { src = ["10.0.0.0/33"], path_reg = ["("] }
          action = "deny"
        [[backend]]
        name = "web"
        hash_key = "header(x)"
        observe = { max_ejected = "150%" }
        """
    )
    assert problems(text) == [
        'lb.toml:2: invalid log target \'syslog:tcp://x:514\': use "stdout", "stderr", '
        '"none", "file:/path" or "syslog:udp://HOST:PORT"',
        "lb.toml:4: name 'w w w' may only contain letters, digits, '_', '.' and '-'",
        "lb.toml:5: bind needs at least 1 entry",
        "lb.toml:7: if.path_reg: invalid regular expression '(': missing ), unterminated subpattern at position 0",
        "lb.toml:7: if.src: invalid network '10.0.0.0/33': expected CIDR such as 10.0.0.0/8",
        "lb.toml:11: invalid hash_key 'header(x)': use src, uri, 5tuple, url_param(name), hdr(name) or cookie(name)",
        "lb.toml:12: observe.max_ejected: expected a percentage such as \"50%\", got '150%'",
    ]


# -- meaning: references and names ----------------------------------------------------


def test_backend_referenced_but_not_defined() -> None:
    text = dedent(
        """\
        [[frontend]]
        name = "www"
        bind = ":80"
        default_backend = "webb"
          [[frontend.rule]]
          if = { host = ["blog.example.com"] }
          use_backend = "blog"
        """
    )
    assert problems(text + WEB_BACKEND) == [
        "lb.toml:4: backend 'webb' referenced but not defined",
        "lb.toml:7: backend 'blog' referenced but not defined",
    ]


def test_frontend_and_backend_modes_must_match() -> None:
    text = dedent(
        """\
        [[frontend]]
        name = "db"
        mode = "tcp"
        bind = ":5432"
        default_backend = "web"
          [[frontend.rule]]
          if = { src = ["10.0.0.0/8"] }
          use_backend = "pg"
        [[backend]]
        name = "pg"
        mode = "tcp"
        """
    )
    assert problems(text + WEB_BACKEND) == [
        "lb.toml:5: frontend 'db' is mode tcp but backend 'web' is mode http",
    ]


def test_duplicate_names() -> None:
    text = dedent(
        """\
        [[frontend]]
        name = "www"
        bind = ":80"
        default_backend = "web"
        [[frontend]]
        name = "www"
        bind = ":81"
        default_backend = "web"
        [[backend]]
        name = "web"
          [[backend.server]]
          name = "s1"
          address = "127.0.0.1:1"
          [[backend.server]]
          name = "s1"
          address = "127.0.0.1:2"
        [[backend]]
        name = "web"
        """
    )
    assert problems(text) == [
        "lb.toml:6: duplicate frontend name 'www' (first defined at line 2)",
        "lb.toml:15: duplicate server name 's1' in backend 'web' (first defined at line 12)",
        "lb.toml:18: duplicate backend name 'web' (first defined at line 10)",
    ]


def test_server_names_may_repeat_across_backends() -> None:
    text = WEB_BACKEND + WEB_BACKEND.replace('"web"', '"api"')
    assert [b.server[0].name for b in parse_config(text).backend] == ["s1", "s1"]


def test_frontend_without_backend() -> None:
    text = dedent(
        """\
        [[frontend]]
        name = "www"
        bind = ":80"
          [[frontend.rule]]
          if = { path = ["/old"] }
          redirect = { location = "/new" }
        """
    )
    assert problems(text) == ["lb.toml:1: frontend 'www' has no backend: set default_backend"]


def test_use_backend_rules_are_enough_without_default_backend() -> None:
    text = '[[frontend]]\nname = "www"\nbind = ":80"\nrule = [{ if = { path_beg = ["/"] }, use_backend = "web" }]\n'
    assert parse_config(text + WEB_BACKEND).frontend[0].default_backend is None


# -- meaning: rules -------------------------------------------------------------------


def test_rule_actions() -> None:
    text = dedent(
        """\
        [[frontend]]
        name = "www"
        bind = ":80"
        default_backend = "web"
          [[frontend.rule]]
          if = { path = ["/a"] }
          use_backend = "web"
          redirect = { location = "/b" }
          [[frontend.rule]]
          if = { path = ["/c"] }
          [[frontend.rule]]
          set_header = { X-Seen = "1" }
          [[frontend.rule]]
          use_backend = "web"
          del_header = ["Cookie"]
        """
    )
    assert problems(text + WEB_BACKEND) == [
        "lb.toml:5: rule has several actions (use_backend, redirect): use one of use_backend, action, redirect",
        "lb.toml:9: rule does nothing: add one of use_backend, action, redirect, set_header, add_header, del_header",
    ]


def test_tcp_rules_may_only_test_src_and_route_or_deny() -> None:
    text = dedent(
        """\
        [[frontend]]
        name = "db"
        mode = "tcp"
        bind = ":5432"
        default_backend = "pg"
          [[frontend.rule]]
          if = { src = ["10.0.0.0/8"] }
          action = "deny"
          [[frontend.rule]]
          unless = { src = ["10.0.0.0/8"], path_beg = ["/"] }
          redirect = { location = "/x" }
          [[frontend.rule]]
          set_header = { X = "y" }
        [[backend]]
        name = "pg"
        mode = "tcp"
        """
    )
    assert problems(text) == [
        "lb.toml:10: frontend 'db' is mode tcp: rules may only test src, not path_beg",
        "lb.toml:11: frontend 'db' is mode tcp: rules may only use use_backend or action, not redirect",
        "lb.toml:13: frontend 'db' is mode tcp: rules may only use use_backend or action, not set_header",
    ]


# -- meaning: listeners, files, hashing -----------------------------------------------


def test_overlapping_binds() -> None:
    text = dedent(
        """\
        [admin]
        bind = "127.0.0.1:9100"
        [stats]
        bind = "127.0.0.1:8404"
        [[frontend]]
        name = "a"
        default_backend = "web"
        bind = [":8080", "127.0.0.1:8443", "127.0.0.1:0", "unix:/run/a.sock"]
        [[frontend]]
        name = "b"
        default_backend = "web"
        bind = [
          "127.0.0.1:8080",
          "127.0.0.1:8404",
          "127.0.0.2:8443",
          "127.0.0.1:0",
          "unix:/run/a.sock",
          "[::1]:9100",
        ]
        """
    )
    assert problems(text + WEB_BACKEND) == [
        "lb.toml:13: address 127.0.0.1:8080 overlaps :8080 already bound by frontend 'a' (line 8)",
        "lb.toml:14: address 127.0.0.1:8404 is already bound by [stats] (line 4)",
        "lb.toml:17: address unix:/run/a.sock is already bound by frontend 'a' (line 8)",
    ]


def test_missing_certificate_and_ca_files(tmp_path: Path) -> None:
    (tmp_path / "good.pem").write_text("")
    text = dedent(
        f"""\
        [[frontend]]
        name = "www"
        bind = ":443"
        default_backend = "web"
        tls = {{ cert = ["good.pem", "missing.pem"], client_ca = "{tmp_path}/ca.pem", verify_client = "required" }}
        [[frontend]]
        name = "api"
        bind = ":8443"
        default_backend = "web"
        tls = {{ cert = ["good.pem"], verify_client = "optional" }}
        [[backend]]
        name = "web"
          [[backend.server]]
          name = "s1"
          address = "10.0.0.1:443"
          ssl = true
          ca_file = "cas/internal.pem"
        """
    )
    assert problems(text, tmp_path) == [
        f"lb.toml:5: certificate file 'missing.pem' not found (looked for {tmp_path / 'missing.pem'})",
        f"lb.toml:5: client CA file '{tmp_path}/ca.pem' not found",
        "lb.toml:10: verify_client = 'optional' needs client_ca to verify against",
        f"lb.toml:17: CA file 'cas/internal.pem' not found (looked for {tmp_path / 'cas/internal.pem'})",
    ]


@pytest.mark.parametrize(
    ("key", "bad", "good", "refusal"),
    [
        (
            "ciphersuites",
            "TLS_AES_256_GCM_SHA384:TLS_AES_256_GCM_SHA256",
            "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256",
            "unknown TLS 1.3 suite 'TLS_AES_256_GCM_SHA256'",
        ),
        ("curves", "X25519:secp256r1", "X25519:prime256v1:P-384", "unknown key-exchange group 'secp256r1'"),
    ],
)
def test_openssl_lists_must_name_what_openssl_knows(
    tmp_path: Path, key: str, bad: str, good: str, refusal: str
) -> None:
    """OpenSSL skips a TLS 1.3 suite name it does not know (a shorter list is served) and
    refuses a whole group list for one group it does not know (at the worker's start): a
    typo in either is refused here, with its line."""
    (tmp_path / "good.pem").write_text("")
    text = dedent(
        f"""\
        [[frontend]]
        name = "www"
        bind = ":443"
        default_backend = "web"
        tls = {{ cert = ["good.pem"], {key} = "{bad}" }}
        [[frontend]]
        name = "api"
        bind = ":8443"
        default_backend = "web"
        tls = {{ cert = ["good.pem"], {key} = "{good}" }}
        """
    )
    (message,) = problems(text + WEB_BACKEND, tmp_path)
    assert message.startswith("lb.toml:5: ") and refusal in message


def test_parse_config_checks_files_relative_to_the_named_file(tmp_path: Path) -> None:
    (tmp_path / "www.pem").write_text("")
    text = '[[frontend]]\nname = "a"\nbind = ":443"\ndefault_backend = "web"\ntls = { cert = ["www.pem"] }\n'
    parse_config(text + WEB_BACKEND, str(tmp_path / "lb.toml"))  # no error
    with pytest.raises(ConfigError):
        parse_config(text + WEB_BACKEND, str(tmp_path / "sub" / "lb.toml"))


def test_hash_keys_must_fit_the_algorithm() -> None:
    text = dedent(
        """\
        [[backend]]
        name = "by-header"
        balance = "hdr"
        [[backend]]
        name = "by-param"
        balance = "url_param"
        hash_key = "uri"
        [[backend]]
        name = "by-source"
        balance = "source"
        hash_key = "hdr(Host)"
        [[backend]]
        name = "l4"
        mode = "tcp"
        balance = "uri"
        cookie = { name = "SID" }
        [[backend]]
        name = "l4-maglev"
        mode = "tcp"
        balance = "maglev"
        hash_key = "cookie(SID)"
        """
    )
    assert problems(text) == [
        'lb.toml:3: balance "hdr" needs hash_key = "hdr(NAME)"',
        'lb.toml:7: balance "url_param" needs hash_key = "url_param(NAME)", got \'uri\'',
        'lb.toml:11: balance "source" needs hash_key = "src", got \'hdr(Host)\'',
        "lb.toml:15: backend 'l4' is mode tcp: balance \"uri\" needs mode http",
        "lb.toml:16: backend 'l4' is mode tcp: cookie persistence needs mode http",
        "lb.toml:21: backend 'l4-maglev' is mode tcp: hash_key may only be src or 5tuple",
    ]


def test_compatible_hash_keys_and_the_uri_default() -> None:
    text = dedent(
        """\
        [[backend]]
        name = "a"
        balance = "uri"
        [[backend]]
        name = "b"
        balance = "hdr"
        hash_key = "hdr(Host)"
        hash_type = "consistent"
        [[backend]]
        name = "c"
        balance = "source"
        [[backend]]
        name = "d"
        balance = "roundrobin"
        hash_key = "uri"
        """
    )
    config = parse_config(text)
    # balance = "uri" without hash_key hashes the uri; the runtime need not know the rule.
    assert [backend.hash_key for backend in config.backend] == ["uri", "hdr(Host)", "src", "uri"]


# -- reporting ------------------------------------------------------------------------


def test_every_problem_is_reported_sorted_by_line() -> None:
    text = dedent(
        """\
        [[backend]]
        name = "web"
        timeouts = { connect = "soon" }
          [[backend.server]]
          name = "s1"
          address = "127.0.0.1"
        [global]
        workers = -1
        verbose = true
        """
    )
    assert problems(text) == [
        "lb.toml:3: timeouts.connect: invalid duration 'soon': use a number and a unit "
        '(us, ms, s, m, h, d), e.g. "5s"',
        "lb.toml:6: invalid address '127.0.0.1': a port is required, e.g. \"127.0.0.1:80\"",
        "lb.toml:8: global.workers must be at least 0, got -1",
        "lb.toml:9: unknown key 'verbose' in [global]",
    ]


def test_semantic_problems_are_all_reported_together() -> None:
    text = dedent(
        """\
        [[frontend]]
        name = "www"
        bind = ":80"
        default_backend = "nope"
        [[frontend]]
        name = "www"
        bind = ":80"
        """
    )
    assert problems(text) == [
        "lb.toml:4: backend 'nope' referenced but not defined",
        "lb.toml:5: frontend 'www' has no backend: set default_backend",
        "lb.toml:6: duplicate frontend name 'www' (first defined at line 2)",
        "lb.toml:7: address :80 is already bound by frontend 'www' (line 3)",
    ]


def test_config_error_prints_one_problem_per_line() -> None:
    error = ConfigError([Problem("b.toml", 9, "second"), Problem("b.toml", 2, "first")])
    assert str(Problem("a.toml", 3, "bad")) == "a.toml:3: bad"
    assert [problem.line for problem in error.problems] == [2, 9]
    assert str(error) == "b.toml:2: first\nb.toml:9: second"


def test_parse_config_names_a_string_source_by_default() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("[global]\nworkers = 1000\n")
    assert str(caught.value) == "<string>:2: global.workers must be at most 256, got 1000"


def test_path_like_objects_are_accepted(spec_file: Path) -> None:
    class Wrapped(os.PathLike[str]):
        def __fspath__(self) -> str:
            return str(spec_file)

    assert load_config(Wrapped()).backend[0].name == "web"
