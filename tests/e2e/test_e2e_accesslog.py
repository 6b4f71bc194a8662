"""The access log as an operator reads it: text lines and JSON objects with the documented fields."""

from __future__ import annotations

import re

import pytest
from tests.support.config import server_blocks
from tests.support.curl import curl
from tests.support.process import run_balancer

pytestmark = pytest.mark.e2e

# 127.0.0.1:50312 [21/Nov/2026:23:59:01.123] www web/s1 0/0/1/2/3 200 120 -- "GET / HTTP/1.1"
TEXT_LINE = re.compile(
    r"(?P<client>\d+\.\d+\.\d+\.\d+):(?P<port>\d+) "
    r"\[(?P<time>[^\]]+)\] "
    r"(?P<frontend>\S+) (?P<backend>[^\s/]+)/(?P<server>\S+) "
    r"(?P<timers>-?\d+(?:/-?\d+){4}) "
    r"(?P<status>\d{3}) (?P<bytes>\d+) (?P<termination>\S+) "
    r'"(?P<request>[^"]*)"'
)


def start(site, tagged, log_format: str):
    (s1,) = tagged("s1")
    site.start(
        site.global_toml(log_format=log_format)
        + f"""
[[frontend]]
name = "www"
bind = ["127.0.0.1:{site.port}"]
default_backend = "web"

  [[frontend.rule]]
  if = {{ path_beg = ["/deny"] }}
  action = "deny"

[[backend]]
name = "web"
"""
        + server_blocks([s1])
    )


def test_text_log_line_has_every_field(site, tagged):
    start(site, tagged, "text")
    result = curl(site.url("/slow/300?who=text"))
    assert result.status == 200

    line = site.wait_log(lambda text: "/slow/300?who=text" in text, what="the request's line")

    match = TEXT_LINE.search(line)
    assert match, f"access log line does not have the documented shape: {line!r}"
    assert match["client"] == "127.0.0.1"
    assert 1024 <= int(match["port"]) <= 65535
    assert re.fullmatch(r"\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2}(\.\d{3})?", match["time"]), match["time"]
    assert (match["frontend"], match["backend"], match["server"]) == ("www", "web", "s1")
    assert match["status"] == "200"
    assert int(match["bytes"]) >= len(result.body)
    assert match["termination"] == "--"
    assert match["request"] == "GET /slow/300?who=text HTTP/1.1"
    total = int(match["timers"].split("/")[-1])
    assert 250 <= total < 5000, match["timers"]


def test_text_log_records_a_denied_request(site, tagged):
    start(site, tagged, "text")
    assert curl(site.url("/deny/me")).status == 403

    line = site.wait_log(lambda text: "/deny/me" in text, what="the denied request's line")

    match = TEXT_LINE.search(line)
    assert match, line
    assert match["status"] == "403"
    assert match["frontend"] == "www"


def test_json_log_object_has_every_field(site, tagged):
    start(site, tagged, "json")
    result = curl(site.url("/slow/300?who=json"))
    assert result.status == 200

    entry = site.wait_json_log(lambda e: "/slow/300?who=json" in str(e.get("request")), what="the request")

    expected = {
        "client",
        "time",
        "frontend",
        "backend",
        "server",
        "timers",
        "status",
        "bytes_in",
        "bytes_out",
        "termination",
        "request",
    }
    assert expected <= set(entry), sorted(set(entry))
    assert str(entry["client"]).startswith("127.0.0.1")
    assert (entry["frontend"], entry["backend"], entry["server"]) == ("www", "web", "s1")
    assert entry["status"] == 200
    assert set(entry["timers"]) >= {"request", "queue", "connect", "response", "total"}
    assert all(isinstance(v, int | float) for v in entry["timers"].values())
    assert 250 <= entry["timers"]["total"] < 5000
    assert entry["bytes_out"] >= len(result.body)
    assert entry["bytes_in"] > 0
    assert entry["termination"] == "--"
    assert entry["request"] == "GET /slow/300?who=json HTTP/1.1"


def test_json_log_has_one_object_per_request(site, tagged):
    start(site, tagged, "json")
    result = curl(*[site.url(f"/count/{i}") for i in range(5)])
    assert [s for s, _, _ in result.finals] == [200] * 5

    site.wait_json_log(lambda e: "/count/4" in str(e.get("request")), what="the last request")

    requests = [e["request"] for e in site.json_log() if "/count/" in str(e.get("request"))]
    assert requests == [f"GET /count/{i} HTTP/1.1" for i in range(5)]


def test_an_haproxy_log_format_template(site, tagged):
    """HAProxy users keep their log-format: the same line from the same template."""
    start(site, tagged, "%ci [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %U %tsc %{+Q}r %HP")
    assert curl(site.url("/tpl?x=1")).status == 200
    assert curl(site.url("/deny/tpl")).status == 403
    ok = site.wait_log(lambda text: "/tpl?x=1" in text, what="the request's line")
    assert re.fullmatch(
        r'127\.0\.0\.1 \[[^\]]+\] www web/s1 \d+/\d+/\d+/\d+/\d+ 200 \d+ \d+ ---- "GET /tpl\?x=1 HTTP/1\.1" /tpl', ok
    ), ok
    denied = site.wait_log(lambda text: "/deny/tpl" in text, what="the denied request's line")
    assert re.fullmatch(
        r'127\.0\.0\.1 \[[^\]]+\] www -/- \d+/-1/-1/-1/\d+ 403 \d+ \d+ PR-- "GET /deny/tpl HTTP/1\.1" /deny/tpl', denied
    ), denied


def test_a_template_with_an_unknown_variable_is_refused_with_its_line(site, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(
        '[global]\nlog_format = "%ci %[req.hdr(host)]"\n'
        f'[[frontend]]\nname = "www"\nbind = ["127.0.0.1:{site.port}"]\ndefault_backend = "web"\n'
        '[[backend]]\nname = "web"\n'
    )
    result = run_balancer("check", "-c", str(path))
    assert result.returncode == 1
    assert f"{path}:2: " in result.stdout + result.stderr and "%[req.hdr" in result.stdout + result.stderr, result
