"""Key path -> line mapping of TOML text (balancer.config.locate)."""

from __future__ import annotations

import tomllib
from textwrap import dedent
from typing import Any

import pytest

from balancer.config.locate import KeyPath, SourceMap

DOCUMENT = dedent(
    """\
    # line 1: [[frontend]] in a comment is not a header
    [global]
    workers = 2
    motd = \"\"\"
    [[frontend]]
    name = "not a key"
    \"\"\"
    banner = '''
    bind = "neither"'''

    [[frontend]]
    name = "www"
    bind = [
      ":8080",          # a comment with ] and {
      "127.0.0.1:8081",
    ]
    timeouts = { client = "5s", "http_request" = "1s" }
    tls.cert = ["a.pem"]

      [[frontend.rule]]
      if = { path_beg = ["/blog"] }
      use_backend = "blog"

      [[frontend.rule]]
      redirect = { location = "https://example.com/#top", code = 301 }

    [[frontend]]
    name = "api"
    bind = ":9090"

    [frontend.tls]
    cert = ['api.pem']

    [[backend]]
    name = "web"
      [[backend.server]]
      name = "w1"

    [[backend]]
    name = "blog"

    [[backend]]
    name = "db"
    server = [
      { name = "d1", address = "127.0.0.1:5432" },
      { name = "d2", source = [
          "10.0.0.1" ], address = "127.0.0.1:5433" },
    ]
    """
)


@pytest.fixture(scope="module")
def source() -> SourceMap:
    return SourceMap.from_text(DOCUMENT)


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (("global",), 2),
        (("global", "workers"), 3),
        (("global", "motd"), 4),
        (("global", "banner"), 8),
        (("frontend",), 11),
        (("frontend", 0), 11),
        (("frontend", 0, "name"), 12),
        (("frontend", 0, "bind"), 13),
        (("frontend", 0, "bind", 0), 14),
        (("frontend", 0, "bind", 1), 15),
        (("frontend", 0, "timeouts"), 17),
        (("frontend", 0, "timeouts", "client"), 17),
        (("frontend", 0, "timeouts", "http_request"), 17),
        (("frontend", 0, "tls"), 18),
        (("frontend", 0, "tls", "cert", 0), 18),
        (("frontend", 0, "rule", 0), 20),
        (("frontend", 0, "rule", 0, "if", "path_beg", 0), 21),
        (("frontend", 0, "rule", 0, "use_backend"), 22),
        (("frontend", 0, "rule", 1), 24),
        (("frontend", 0, "rule", 1, "redirect", "code"), 25),
        (("frontend", 1), 27),
        (("frontend", 1, "bind"), 29),
        (("frontend", 1, "tls"), 31),
        (("frontend", 1, "tls", "cert", 0), 32),
        (("backend", 0), 34),
        (("backend", 0, "server", 0), 36),
        (("backend", 0, "server", 0, "name"), 37),
        (("backend", 1, "name"), 40),
        (("backend", 2, "server"), 44),
        (("backend", 2, "server", 0, "address"), 45),
        (("backend", 2, "server", 1), 46),
        (("backend", 2, "server", 1, "source"), 46),
        (("backend", 2, "server", 1, "source", 0), 47),
        (("backend", 2, "server", 1, "address"), 47),
    ],
)
def test_paths_map_to_the_line_they_are_written_on(source: SourceMap, path: KeyPath, line: int) -> None:
    assert source.line_of(path) == line


def test_lines_inside_multiline_strings_are_not_keys(source: SourceMap) -> None:
    # Line 5/6 look like a [[frontend]] header and a key, but are inside motd.
    assert source.line_of(("frontend", 0)) == 11
    assert ("global", "name") not in source
    assert ("global", "bind") not in source
    assert ("frontend", 2) not in source


def test_a_missing_key_falls_back_to_its_table_header(source: SourceMap) -> None:
    assert source.line_of(("frontend", 1, "default_backend")) == 27
    assert source.line_of(("backend", 1, "server", 0, "address")) == 39
    assert source.line_of(("frontend", 0, "rule", 1, "redirect", "location")) == 25
    assert source.line_of(("stats", "bind")) == 1


def test_every_path_tomllib_sees_is_located(source: SourceMap) -> None:
    missing = [path for path in _paths(tomllib.loads(DOCUMENT)) if path not in source]
    assert missing == []


def _paths(value: Any, prefix: KeyPath = ()) -> list[KeyPath]:
    children: list[tuple[str | int, Any]] = []
    if isinstance(value, dict):
        children = list(value.items())
    elif isinstance(value, list):
        children = list(enumerate(value))
    found: list[KeyPath] = []
    for key, child in children:
        found.append((*prefix, key))
        found += _paths(child, (*prefix, key))
    return found


def test_nested_arrays_of_tables_attach_to_the_latest_parent() -> None:
    text = dedent(
        """\
        [[a]]
        [[a.b]]
        x = 1
        [[a]]
        [[a.b]]
        [[a.b]]
        x = 2
        """
    )
    source = SourceMap.from_text(text)
    assert source.line_of(("a", 0, "b", 0, "x")) == 3
    assert source.line_of(("a", 1, "b", 0)) == 5
    assert source.line_of(("a", 1, "b", 1, "x")) == 7
    assert ("a", 0, "b", 1) not in source


def test_dotted_and_quoted_keys() -> None:
    source = SourceMap.from_text('top = 1\n"a.b".c = 2\nd . \'e f\' . g = 3\n[x."y z"]\nk = "v#not a comment"\n')
    assert source.line_of(("a.b", "c")) == 2
    assert source.line_of(("d", "e f", "g")) == 3
    assert source.line_of(("d",)) == 3
    assert source.line_of(("x", "y z", "k")) == 5


def test_windows_line_endings() -> None:
    source = SourceMap.from_text("[global]\r\nworkers = 2\r\n\r\n[[frontend]]\r\nname = 'a'\r\n")
    assert source.line_of(("global", "workers")) == 2
    assert source.line_of(("frontend", 0, "name")) == 5


@pytest.mark.parametrize(
    "text",
    ["[[frontend", "a = [1, 2", 'a = "unterminated\nb = 2', "= = =", "a = {b = }", "]]]\n[x]\ny = 1"],
)
def test_invalid_toml_does_not_crash_the_scanner(text: str) -> None:
    source = SourceMap.from_text(text)
    assert source.line_of(("anything",)) >= 1


def test_scanner_resynchronises_after_a_bad_line() -> None:
    source = SourceMap.from_text("junk ] here\nok = 1\n")
    assert source.line_of(("ok",)) == 2
