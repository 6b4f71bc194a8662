"""Reading an haproxy.cfg: bytes to text, text to sections of tokenised lines.

HAProxy's word rules: blanks separate words, `#` starts a comment, quotes and backslash
escapes group; `.if` blocks keep only the branch HAProxy takes (conditions.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from balancer.config.haproxy.conditions import Conditions

__all__ = ["SECTION_KEYWORDS", "Section", "SourceLine", "parse_haproxy", "read_haproxy_file", "tokenize"]

SECTION_KEYWORDS = ("global", "defaults", "frontend", "backend", "listen")
OTHER_SECTIONS = (
    "userlist",
    "peers",
    "resolvers",
    "mailers",
    "cache",
    "program",
    "http-errors",
    "ring",
    "crt-store",
    "log-forward",
    "fcgi-app",
    "traces",
)
_ESCAPES = {"r": "\r", "n": "\n", "t": "\t"}


# -- parsing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceLine:
    """One directive: its line number, its words, and its text without the comment."""

    number: int
    words: tuple[str, ...]
    text: str


@dataclass
class Section:
    kind: str  # global, defaults, frontend, backend, listen, or another section keyword
    name: str
    header: SourceLine
    lines: list[SourceLine] = field(default_factory=list)


def tokenize(line: str) -> list[str]:
    """Split one haproxy.cfg line into words: blanks separate words, `#` outside quotes
    starts a comment, "double" and 'single' quotes group, a backslash escapes the next
    character (`\\r`, `\\n`, `\\t` are control characters)."""
    words: list[str] = []
    current: list[str] = []
    in_word = False
    quote = ""
    index = 0
    while index < len(line):
        char = line[index]
        if char == "\\" and quote != "'" and index + 1 < len(line):
            nxt = line[index + 1]
            current.append(_ESCAPES.get(nxt, nxt))
            in_word = True
            index += 2
            continue
        if quote:
            if char == quote:
                quote = ""
            else:
                current.append(char)
        elif char in "\"'":
            quote = char
            in_word = True
        elif char == "#":
            break
        elif char in " \t\r\n":
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
        else:
            current.append(char)
            in_word = True
        index += 1
    if in_word:
        words.append("".join(current))
    return words


def _strip_comment(line: str) -> str:
    """The line's text up to an unquoted `#`, for comments in the output."""
    quote = ""
    escaped = False
    for index, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#":
            return line[:index].strip()
    return line.strip()


def parse_haproxy(text: str, conditions: Conditions | None = None) -> tuple[list[Section], list[SourceLine]]:
    """Sections in file order, and the directives found before the first section. Lines of
    a `.if` branch HAProxy would not take are left out (`conditions` collects the notes)."""
    conditions = conditions if conditions is not None else Conditions()
    sections: list[Section] = []
    orphans: list[SourceLine] = []
    number = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if conditions.directive(number, raw) or not conditions.reading():
            continue
        words = tokenize(raw)
        if not words:
            continue
        line = SourceLine(number, tuple(words), _strip_comment(raw))
        keyword = words[0]
        if keyword in SECTION_KEYWORDS or keyword in OTHER_SECTIONS:
            sections.append(Section(keyword, words[1] if len(words) > 1 else "", line))
        elif sections:
            sections[-1].lines.append(line)
        else:
            orphans.append(line)
    conditions.finish(number)
    return sections, orphans


def read_haproxy_file(path: Path) -> tuple[str | None, str, list[str]]:
    """(text, "", notes) of an haproxy.cfg, or (None, "FILE: why", []) when it cannot be read
    or is not a text configuration (binary data, no section at all). HAProxy reads bytes:
    bytes that are not UTF-8 (a Latin-1 comment) are replaced by U+FFFD and named."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"{path}: cannot read: {exc.strerror or exc}", []
    if b"\x00" in data:
        line = data.count(b"\n", 0, data.index(b"\x00")) + 1
        return None, f"{path}:{line}: not a text configuration (it holds NUL bytes): nothing to translate", []
    notes: list[str] = []
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        notes.append(f"{path}:{line}: note: bytes that are not UTF-8 are read as U+FFFD (from here on)")
        text = data.decode("utf-8-sig", errors="replace")
    if not any(tokenize(raw)[:1] and tokenize(raw)[0] in SECTION_KEYWORDS for raw in text.splitlines()):
        where = "empty" if not text.strip() else "no global, defaults, frontend, backend or listen section"
        return None, f"{path}:1: not an HAProxy configuration ({where}): nothing to translate", []
    return text, "", notes
