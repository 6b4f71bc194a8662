"""README.md and docs/*.md link only to files of the repository, and those files exist.

A user who downloads the project reads these pages without anything beside them: a link to
`../shared/...`, to an absolute path or to a web page is a link that a fresh clone cannot
follow (or that can change under it), so it fails here. A link to `FILE#anchor` must name a
heading of FILE, spelled as GitHub spells heading anchors.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *ROOT.glob("docs/**/*.md")])

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target "title") and ![alt](target); text may hold one level of brackets ([`[global]`](#global)).
_INLINE = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]"  # [text] or ![alt]
    r"\(\s*<?([^()\s>]*(?:\([^()\s]*\)[^()\s>]*)*)>?"  # (target, which may hold balanced parentheses
    r"(?:\s+\"[^\"]*\")?\s*\)"  # "title")
)
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_AUTOLINK = re.compile(r"<([a-zA-Z][a-zA-Z0-9+.\-]*:[^\s<>]*)>")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*:")


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, code spans blanked: links there are examples."""
    lines: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        opening = _FENCE.match(line)
        if fence is not None:
            if opening and opening.group(1) == fence:
                fence = None
            continue
        if opening:
            fence = opening.group(1)
            continue
        if line.startswith("    ") and not line.strip().startswith(("-", "*", "|", "[")):
            continue  # an indented code block (the README's command listings)
        lines.append((number, line))
    return lines


def _mask(span: re.Match[str]) -> str:
    fence = span.group(1)
    return fence + "x" * (len(span.group(0)) - 2 * len(fence)) + fence


def links(page: Path) -> list[tuple[int, str]]:
    """Every link target of `page` with its line number (inline, reference and autolinks)."""
    found: list[tuple[int, str]] = []
    for number, line in _prose_lines(page.read_text()):
        if (reference := _REFERENCE.match(line)) is not None:
            found.append((number, reference.group(1)))
            continue
        # A code span's content is masked, its backticks kept: a link's text may be a code span.
        prose = _CODE_SPAN.sub(_mask, line)
        found.extend((number, match.group(1)) for match in _INLINE.finditer(prose))
        found.extend((number, match.group(1)) for match in _AUTOLINK.finditer(prose))
    return found


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lower case, punctuation removed, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of `page`'s headings; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    result: set[str] = set()
    for _, line in _prose_lines(page.read_text()):
        match = _HEADING.match(line)
        if match is None:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def problem(page: Path, target: str) -> str | None:
    """Why `target`, linked from `page`, is not a file of the repository (None when it is)."""
    if _SCHEME.match(target):
        return "leaves the repository (a URL): link a file of the repository instead"
    path_part, _, anchor = target.partition("#")
    if path_part.startswith("/"):
        return "is an absolute path: use a path relative to the page"
    destination = (page.parent / unquote(path_part)).resolve() if path_part else page
    if not destination.is_relative_to(ROOT):
        return "leaves the repository: a fresh clone has no such file"
    if not destination.exists():
        return f"points to a missing file ({destination.relative_to(ROOT)})"
    if anchor and destination.suffix == ".md" and unquote(anchor) not in anchors(destination):
        return f"names a heading #{anchor} that {destination.relative_to(ROOT)} does not have"
    return None


def test_the_pages_are_found():
    names = {page.relative_to(ROOT).as_posix() for page in PAGES}
    assert {"README.md", "docs/configuration.md", "docs/reference.md", "docs/design.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_link_stays_in_the_repository_and_resolves(page: Path):
    bad = [
        f"{page.relative_to(ROOT)}:{number}: link {target!r} {reason}"
        for number, target in links(page)
        if (reason := problem(page, target)) is not None
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("see [the spec](../shared/SPEC.md).", ["../shared/SPEC.md"]),
        ("[`[global]`](#global) · [a](docs/x.md#y)", ["#global", "docs/x.md#y"]),
        ("![logo](img/a.png) and <https://example.com/>", ["img/a.png", "https://example.com/"]),
        ("[ref]: ../outside.md", ["../outside.md"]),
        ("```\n[not a link](../x.md)\n```\n`[nor](../y.md)` plain", []),
    ],
)
def test_links_are_found_where_markdown_has_them(tmp_path: Path, markdown: str, expected: list[str]):
    page = tmp_path / "page.md"
    page.write_text(markdown + "\n")
    assert [target for _, target in links(page)] == expected


@pytest.mark.parametrize(
    ("target", "refused"),
    [
        ("../shared/SPEC.md", True),
        ("https://www.haproxy.org/", True),
        ("/etc/passwd", True),
        ("docs/missing.md", True),
        ("docs/configuration.md#no-such-heading", True),
        ("docs/configuration.md#global", False),
        ("contrib/balancer.service", False),
        ("#set-up", False),
    ],
)
def test_a_link_out_of_the_repository_or_to_nothing_is_refused(target: str, refused: bool):
    assert (problem(ROOT / "README.md", target) is not None) is refused


def test_github_anchors():
    assert github_slug("`[[frontend.rule]]`") == "frontendrule"
    assert github_slug("HAProxy → balancer") == "haproxy--balancer"
    assert github_slug("Persistence (`cookie` and `stick`)") == "persistence-cookie-and-stick"
