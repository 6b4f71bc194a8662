"""Map key paths of a TOML document to the line where they are written.

tomllib returns plain dicts and lists and forgets where anything came from, while an
operator needs `FILE:LINE:` in front of each problem. This module re-reads the same text
with a small scanner that understands just enough TOML to know, for every key path, the
line it starts on:

    ("frontend", 0)                          -> the first `[[frontend]]` header
    ("frontend", 0, "bind")                  -> `bind = ...` inside it
    ("frontend", 0, "bind", 1)               -> the second element of that array
    ("frontend", 0, "rule", 1, "use_backend")
    ("frontend", 0, "timeouts", "client")    -> the `client` key of an inline table

A path the document does not contain (a missing key, a default) resolves to its nearest
existing ancestor, so "missing key" errors point at the table header.

Theory of operation: a recursive-descent scanner over the characters, assuming valid
TOML (the loader only asks after tomllib accepted the text) but never crashing on invalid
input: when it is lost it skips to the next line. Strings are skipped as whole tokens, so
lines inside a multi-line string or array are never mistaken for keys. Arrays of tables
keep a counter per concrete path, so `[[a.b]]` appends to the `b` array of the latest
`[[a]]`, exactly as TOML defines it.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence

KeyPath = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPE = re.compile(r"\\(?:u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|(.))", re.DOTALL)
_SIMPLE_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}


class SourceMap:
    """Key path -> 1-based line number of one TOML document."""

    def __init__(self, lines: dict[KeyPath, int]) -> None:
        self.lines = lines

    @classmethod
    def from_text(cls, text: str) -> SourceMap:
        return cls(_Scanner(text).scan())

    def line_of(self, path: Sequence[str | int]) -> int:
        """The line of `path`, else of its nearest ancestor present in the text, else 1."""
        key = tuple(path)
        while key:
            line = self.lines.get(key)
            if line is not None:
                return line
            key = key[:-1]
        return 1

    def __contains__(self, path: object) -> bool:
        return isinstance(path, tuple) and path in self.lines


class _Lost(Exception):
    """The scanner met something that is not TOML; resynchronise at the next line."""


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        # Offsets where each line starts: line numbers come from a bisect, not bookkeeping.
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.lines: dict[KeyPath, int] = {}
        # Concrete path of an array of tables -> how many elements it has so far.
        self.table_arrays: dict[KeyPath, int] = {}
        self.table: KeyPath = ()

    # -- helpers -------------------------------------------------------------------

    def line(self) -> int:
        return bisect.bisect_right(self.line_starts, self.pos)

    def peek(self, length: int = 1) -> str:
        return self.text[self.pos : self.pos + length]

    def expect(self, token: str) -> None:
        if not self.text.startswith(token, self.pos):
            raise _Lost
        self.pos += len(token)

    def skip_spaces(self) -> None:
        while self.peek() in (" ", "\t"):
            self.pos += 1

    def skip_blank(self) -> None:
        """Whitespace, newlines and comments: what may separate array elements."""
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in " \t\r\n":
                self.pos += 1
            elif char == "#":
                self.skip_to_eol()
            else:
                return

    def skip_to_eol(self) -> None:
        end = self.text.find("\n", self.pos)
        self.pos = len(self.text) if end < 0 else end

    def record(self, path: KeyPath, line: int) -> None:
        self.lines.setdefault(path, line)

    # -- document ------------------------------------------------------------------

    def scan(self) -> dict[KeyPath, int]:
        while True:
            self.skip_blank()
            if self.pos >= len(self.text):
                return self.lines
            start = self.pos
            try:
                if self.peek(2) == "[[":
                    self.header(array=True)
                elif self.peek() == "[":
                    self.header(array=False)
                else:
                    self.key_value(self.table)
                self.skip_spaces()
                if self.peek() not in ("", "\n", "\r", "#"):
                    raise _Lost
            except _Lost:
                pass
            self.skip_to_eol()
            if self.pos == start:  # never loop in place
                self.pos += 1

    def header(self, array: bool) -> None:
        """`[a.b]` or `[[a.b]]`: resolve to a concrete path and make it the current table."""
        line = self.line()
        self.expect("[[" if array else "[")
        parts = self.key()
        self.skip_spaces()
        self.expect("]]" if array else "]")
        path: KeyPath = ()
        for number, part in enumerate(parts):
            path += (part,)
            last = number == len(parts) - 1
            if not (last and array) and path in self.table_arrays:
                # A prefix naming an array of tables means its latest element.
                path += (self.table_arrays[path] - 1,)
            if not last:
                self.record(path, line)
        if array:
            count = self.table_arrays.get(path, 0)
            self.table_arrays[path] = count + 1
            self.record(path, line)  # the array itself: its first header
            path += (count,)
        self.lines[path] = line  # an explicit header wins over an implicit mention
        self.table = path

    def key_value(self, base: KeyPath) -> None:
        line = self.line()
        parts = self.key()
        for length in range(1, len(parts) + 1):  # a.b.c = 1 also defines a and a.b
            self.record(base + tuple(parts[:length]), line)
        self.skip_spaces()
        self.expect("=")
        self.skip_spaces()
        self.value(base + tuple(parts))

    def key(self) -> list[str]:
        """A dotted key: bare, "basic" or 'literal' parts separated by dots."""
        parts: list[str] = []
        while True:
            self.skip_spaces()
            char = self.peek()
            if char == '"':
                parts.append(self.basic_string())
            elif char == "'":
                parts.append(self.literal_string())
            else:
                match = _BARE_KEY.match(self.text, self.pos)
                if match is None:
                    raise _Lost
                parts.append(match.group())
                self.pos = match.end()
            self.skip_spaces()
            if self.peek() != ".":
                return parts
            self.pos += 1

    # -- values --------------------------------------------------------------------

    def value(self, path: KeyPath) -> None:
        char = self.peek()
        if self.peek(3) in ('"""', "'''"):
            self.multiline_string(self.peek(3))
        elif char == '"':
            self.basic_string()
        elif char == "'":
            self.literal_string()
        elif char == "[":
            self.array(path)
        elif char == "{":
            self.inline_table(path)
        else:
            # Number, boolean or date: runs until a separator.
            start = self.pos
            while self.pos < len(self.text) and self.text[self.pos] not in ",]}#\r\n":
                self.pos += 1
            if self.pos == start:
                raise _Lost

    def array(self, path: KeyPath) -> None:
        self.expect("[")
        index = 0
        while True:
            self.skip_blank()
            if self.peek() == "]":
                self.pos += 1
                return
            if not self.peek():
                raise _Lost
            self.record((*path, index), self.line())
            self.value((*path, index))
            index += 1
            self.skip_blank()
            if self.peek() == ",":
                self.pos += 1
            elif self.peek() != "]":
                raise _Lost

    def inline_table(self, path: KeyPath) -> None:
        self.expect("{")
        while True:
            self.skip_blank()
            if self.peek() == "}":
                self.pos += 1
                return
            if not self.peek():
                raise _Lost
            self.key_value(path)
            self.skip_blank()
            if self.peek() == ",":
                self.pos += 1
            elif self.peek() != "}":
                raise _Lost

    def basic_string(self) -> str:
        """A one-line "string"; returns its value with escapes decoded (for quoted keys)."""
        self.expect('"')
        start = self.pos
        while True:
            char = self.peek()
            if char in ("", "\n"):
                raise _Lost
            if char == "\\":
                self.pos += 2
                continue
            if char == '"':
                raw = self.text[start : self.pos]
                self.pos += 1
                return _ESCAPE.sub(_unescape, raw)
            self.pos += 1

    def literal_string(self) -> str:
        self.expect("'")
        end = self.text.find("'", self.pos)
        newline = self.text.find("\n", self.pos)
        if end < 0 or 0 <= newline < end:
            raise _Lost
        raw = self.text[self.pos : end]
        self.pos = end + 1
        return raw

    def multiline_string(self, delimiter: str) -> None:
        """Skip a \"\"\"...\"\"\" or '''...''' string, newlines and all."""
        self.pos += 3
        while True:
            if self.pos >= len(self.text):
                raise _Lost
            if delimiter == '"""' and self.peek() == "\\":
                self.pos += 2
                continue
            if self.text.startswith(delimiter, self.pos):
                # Up to two quotes may end the content right before the delimiter.
                self.pos += 3
                while self.peek() == delimiter[0]:
                    self.pos += 1
                return
            self.pos += 1


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1) or match.group(2)
    if code:
        return chr(int(code, 16))
    return _SIMPLE_ESCAPES.get(match.group(3), match.group(3))
