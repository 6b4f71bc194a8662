"""Routing rules through a real process: every condition, every action, then default_backend."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import pytest
from tests.support import TaggedBackend
from tests.support.config import server_blocks
from tests.support.curl import curl
from tests.support.site import Site

pytestmark = pytest.mark.e2e

BACKENDS = [
    "b_path",
    "b_beg",
    "b_end",
    "b_reg",
    "b_host",
    "b_hdr",
    "b_hdr_any",
    "b_method",
    "b_src",
    "b_query",
]

RULES = """
  [[frontend.rule]]
  if = { src = ["10.66.0.0/16"] }
  action = "deny"

  [[frontend.rule]]
  if = { path = ["/exact"] }
  use_backend = "b_path"

  [[frontend.rule]]
  if = { path_beg = ["/api/", "/v2/"] }
  use_backend = "b_beg"

  [[frontend.rule]]
  if = { path_end = [".jpg", ".png"] }
  use_backend = "b_end"

  [[frontend.rule]]
  if = { path_reg = ["^/item/[0-9]+$"] }
  use_backend = "b_reg"

  [[frontend.rule]]
  if = { host = ["shop.example"] }
  use_backend = "b_host"

  [[frontend.rule]]
  if = { hdr = { "X-Tenant" = ["gold", "platinum"] } }
  use_backend = "b_hdr"

  [[frontend.rule]]
  if = { hdr = { "X-Debug" = [] } }
  use_backend = "b_hdr_any"

  [[frontend.rule]]
  if = { method = ["DELETE", "PATCH"] }
  use_backend = "b_method"

  [[frontend.rule]]
  if = { src = ["127.0.0.0/8"], path_beg = ["/local"] }
  use_backend = "b_src"

  [[frontend.rule]]
  if = { query = ["v=2", "mode=beta"] }
  use_backend = "b_query"

  [[frontend.rule]]
  if = { path_beg = ["/forbidden"] }
  action = "deny"

  [[frontend.rule]]
  if = { path_beg = ["/guarded"] }
  unless = { src = ["10.0.0.0/8"] }
  action = "deny"

  [[frontend.rule]]
  if = { path_beg = ["/internal"] }
  unless = { src = ["127.0.0.0/8"] }
  action = "deny"

  [[frontend.rule]]
  if = { path = ["/old"] }
  redirect = { location = "https://new.example/", code = 301 }

  [[frontend.rule]]
  if = { path = ["/moved"] }
  redirect = { location = "/elsewhere", code = 307 }

  [[frontend.rule]]
  if = { path_beg = ["/echo/rewrite"] }
  set_header = { "X-Added" = "yes", "X-Replaced" = "new" }

  [[frontend.rule]]
  if = { path_beg = ["/echo/rewrite"] }
  del_header = ["X-Remove-Me"]
"""


@pytest.fixture(scope="module")
def routed(module_dir) -> Iterator[Site]:
    with contextlib.ExitStack() as stack:
        default = stack.enter_context(TaggedBackend("b_default"))
        backends = [stack.enter_context(TaggedBackend(name)) for name in BACKENDS]
        site = Site(module_dir / "site")
        config = site.global_toml(log_format="json") + (
            f'[[frontend]]\nname = "www"\nbind = ["127.0.0.1:{site.port}"]\ndefault_backend = "b_default"\n'
        )
        config += RULES
        for backend in [default, *backends]:
            config += f'\n[[backend]]\nname = "{backend.name}"\n' + server_blocks([backend])
        site.start(config)
        try:
            yield site
        finally:
            site.stop()


def served_by(site: Site, *args: str) -> str:
    result = curl(*args)
    assert result.status == 200, (result.status, result.body[:200])
    return result.headers["server-name"]


@pytest.mark.parametrize(
    ("path", "extra", "expected"),
    [
        ("/exact", [], "b_path"),
        ("/exact/not", [], "b_default"),
        ("/api/users", [], "b_beg"),
        ("/v2/x", [], "b_beg"),
        ("/apix", [], "b_default"),
        ("/img/cat.jpg", [], "b_end"),
        ("/img/cat.png", [], "b_end"),
        ("/img/cat.gif", [], "b_default"),
        ("/api/cat.jpg", [], "b_beg"),  # first match wins
        ("/item/42", [], "b_reg"),
        ("/item/42/x", [], "b_default"),
        ("/item/abc", [], "b_default"),
        ("/h", ["-H", "Host: shop.example"], "b_host"),
        ("/h", ["-H", "Host: other.example"], "b_default"),
        ("/t", ["-H", "X-Tenant: gold"], "b_hdr"),
        ("/t", ["-H", "X-Tenant: platinum"], "b_hdr"),
        ("/t", ["-H", "x-tenant: gold"], "b_hdr"),  # header names are case-insensitive
        ("/t", ["-H", "X-Tenant: bronze"], "b_default"),
        ("/d", ["-H", "X-Debug: anything"], "b_hdr_any"),
        ("/m", ["-X", "DELETE"], "b_method"),
        ("/m", ["-X", "PATCH"], "b_method"),
        ("/m", ["-X", "GET"], "b_default"),
        ("/local/x", [], "b_src"),
        ("/q?v=2", [], "b_query"),
        ("/q?mode=beta", [], "b_query"),
        ("/q?v=3", [], "b_default"),
        ("/q?v=2&x=1", [], "b_default"),  # query is an exact match of the whole query string
        ("/internal/x", [], "b_default"),  # unless src matched: the deny does not apply
        ("/anything/else", [], "b_default"),
    ],
)
def test_request_reaches_the_backend_its_rule_names(routed, path, extra, expected):
    assert served_by(routed, *extra, routed.url(path)) == expected


def test_deny_rule_answers_403_with_short_html(routed):
    result = curl(routed.url("/forbidden/zone"))

    assert result.status == 403
    assert "text/html" in result.headers.get("content-type", "")
    assert result.body.lstrip().startswith(b"<") and len(result.body) < 2048
    entry = routed.wait_json_log(lambda e: e.get("status") == 403 and "/forbidden/zone" in e.get("request", ""))
    assert entry["frontend"] == "www"


def test_deny_rule_with_unless(routed):
    assert curl(routed.url("/guarded/a")).status == 403


@pytest.mark.parametrize(
    ("path", "code", "location"),
    [("/old", 301, "https://new.example/"), ("/moved", 307, "/elsewhere")],
)
def test_redirect_rule(routed, path, code, location):
    result = curl(routed.url(path))

    assert result.status == code
    assert result.headers["location"] == location


def test_set_and_del_header_rules_rewrite_the_request_then_default_backend(routed):
    result = curl(
        "-H",
        "X-Remove-Me: secret",
        "-H",
        "X-Replaced: old",
        "-H",
        "X-Kept: 1",
        routed.url("/echo/rewrite"),
    )

    assert result.status == 200
    echoed = json.loads(result.body)
    headers = {}
    for name, value in echoed["headers"]:
        headers.setdefault(name.lower(), []).append(value)
    assert echoed["server"] == "b_default"
    assert headers["x-added"] == ["yes"]
    assert headers["x-replaced"] == ["new"]
    assert "x-remove-me" not in headers
    assert headers["x-kept"] == ["1"]
