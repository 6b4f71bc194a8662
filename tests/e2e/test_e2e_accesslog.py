"""The access log as an operator reads it: text lines and JSON objects with the documented fields."""

from __future__ import annotations

import re

import pytest
from tests.support.config import server_blocks
from tests.support.curl import curl

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
