"""HAProxy's conditional blocks (`.if` / `.elif` / `.else` / `.endif`) for `import-haproxy`.

HAProxy evaluates these while reading its file: only the lines of the branch taken exist.
The importer does the same, for a stated HAProxy version and build (HAProxy 2.6 with the
features of its Debian build unless told otherwise), so a file written for several versions
translates to the branch that version would run, never to both.

Terms (HAProxy 2.6): `version_atleast(V)`, `version_before(V)`, `defined(VAR)`, `feature(F)`,
`streq(a,b)`, `strneq(a,b)`, `enabled(OPT)`, `openssl_version_atleast(V)`,
`openssl_version_before(V)`, `ssllib_name_startswith(S)`, a number (0 is false), `!`, `&&`,
`||` and parentheses. What depends on the machine HAProxy runs on (its environment, its
SSL library) cannot be decided here: it is taken as HAProxy takes it when the variable is
not set / as on the reference build, and named in a note so the operator can check it.
An unknown term or a block left open is an error, as HAProxy refuses to start on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["DEFAULT_FEATURES", "DEFAULT_VERSION", "Conditions", "parse_version"]

DEFAULT_VERSION = "2.6"
# `haproxy -vv` of HAProxy 2.6's Debian build: the reference for feature(...).
DEFAULT_FEATURES = frozenset(
    {
        *("ACCEPT4", "BACKTRACE", "CPU_AFFINITY", "CRYPT_H", "DL", "EPOLL", "GETADDRINFO", "LIBCRYPT"),
        *("LINUX_SPLICE", "LINUX_TPROXY", "LUA", "NETFILTER", "NS", "OPENSSL", "OT", "PCRE2", "PCRE2_JIT"),
        *("POLL", "PRCTL", "PROMEX", "RT", "SLZ", "SYSTEMD", "TFO", "THREAD", "THREAD_DUMP", "TPROXY"),
    }
)
_TOKEN = re.compile(r"\s*(\|\||&&|!|\(|\)|,|\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^\s()!,&|\"']+)")


def parse_version(text: str) -> tuple[int, ...] | None:
    """`2.6`, `2.6.12`, `3.0-dev4` -> (2, 6), (2, 6, 12), (3, 0); None when not a version."""
    match = re.match(r"^(\d+(?:\.\d+)*)", text.strip())
    if match is None:
        return None
    return tuple(int(part) for part in match.group(1).split("."))


def _version_at_least(have: tuple[int, ...], want: tuple[int, ...]) -> bool:
    size = max(len(have), len(want))
    return have + (0,) * (size - len(have)) >= want + (0,) * (size - len(want))


class ConditionError(ValueError):
    """A condition HAProxy itself would refuse (unknown term, bad syntax)."""


@dataclass
class _Evaluation:
    version: tuple[int, ...]
    features: frozenset[str]
    assumptions: list[str] = field(default_factory=list)


class _Parser:
    """Recursive descent over one condition: or := and ('||' and)*; and := unary ('&&' unary)*;
    unary := '!' unary | '(' or ')' | term."""

    def __init__(self, text: str, evaluation: _Evaluation) -> None:
        self.tokens = self.split(text)
        self.index = 0
        self.evaluation = evaluation

    @staticmethod
    def split(text: str) -> list[str]:
        tokens: list[str] = []
        position = 0
        while position < len(text):
            if text[position:].strip() == "":
                break
            match = _TOKEN.match(text, position)
            if match is None:
                raise ConditionError(f"cannot read {text[position:]!r}")
            tokens.append(match.group(1))
            position = match.end()
        return tokens

    def peek(self) -> str:
        return self.tokens[self.index] if self.index < len(self.tokens) else ""

    def take(self) -> str:
        token = self.peek()
        if not token:
            raise ConditionError("the condition ends too early")
        self.index += 1
        return token

    def parse(self) -> bool:
        if not self.tokens:
            raise ConditionError("an empty condition")
        value = self.alternatives()
        if self.index != len(self.tokens):
            raise ConditionError(f"unexpected {self.peek()!r}")
        return value

    def alternatives(self) -> bool:
        value = self.conjunction()
        while self.peek() == "||":
            self.take()
            other = self.conjunction()
            value = value or other
        return value

    def conjunction(self) -> bool:
        value = self.unary()
        while self.peek() == "&&":
            self.take()
            other = self.unary()
            value = value and other
        return value

    def unary(self) -> bool:
        token = self.take()
        if token == "!":
            return not self.unary()
        if token == "(":
            value = self.alternatives()
            if self.take() != ")":
                raise ConditionError("a '(' without its ')'")
            return value
        if self.peek() == "(":
            self.take()
            arguments: list[str] = []
            while self.peek() != ")":
                word = self.take()
                if word == ",":
                    continue
                arguments.append(self.unquote(word))
            self.take()
            return self.term(token, arguments)
        word = self.unquote(token)
        if re.fullmatch(r"-?\d+", word):
            return int(word) != 0
        raise ConditionError(f"unknown term {token!r}")

    def unquote(self, word: str) -> str:
        if len(word) >= 2 and word[0] == word[-1] and word[0] in "\"'":
            word = word[1:-1]
        if "$" in word:
            self.evaluation.assumptions.append(
                f"{word!r} names an environment variable: taken as empty, as HAProxy does when it is not set"
            )
            word = re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", "", word)
        return word

    def term(self, name: str, arguments: list[str]) -> bool:
        evaluation = self.evaluation
        shown = ".".join(str(part) for part in evaluation.version)
        first = arguments[0] if arguments else ""
        if name in ("version_atleast", "version_before"):
            wanted = parse_version(first)
            if wanted is None:
                raise ConditionError(f"{name}({first}): not a version")
            result = _version_at_least(evaluation.version, wanted)
            result = result if name == "version_atleast" else not result
            evaluation.assumptions.append(f"{name}({first}) is {str(result).lower()} for HAProxy {shown}")
            return result
        if name == "defined":
            evaluation.assumptions.append(
                f"defined({first}) depends on HAProxy's environment: taken as false (the variable not set)"
            )
            return False
        if name == "feature":
            result = first in evaluation.features
            evaluation.assumptions.append(f"feature({first}) taken as {str(result).lower()} (HAProxy {shown}'s build)")
            return result
        if name in ("streq", "strneq"):
            if len(arguments) != 2:
                raise ConditionError(f"{name} takes two arguments")
            return (arguments[0] == arguments[1]) == (name == "streq")
        if name == "enabled":
            evaluation.assumptions.append(f"enabled({first}) taken as true (HAProxy's default)")
            return True
        if name in ("openssl_version_atleast", "openssl_version_before", "ssllib_name_startswith"):
            result = name != "openssl_version_before"
            evaluation.assumptions.append(
                f"{name}({first}) depends on HAProxy's SSL library: taken as {str(result).lower()} (OpenSSL 3)"
            )
            return result
        raise ConditionError(f"unknown predicate {name}()")


@dataclass
class _Block:
    taking: bool  # the branch being read is taken
    decided: bool  # an earlier branch of this block was taken
    outer: bool  # the enclosing block is being read
    seen_else: bool = False


class Conditions:
    """Feed each line's words; `active` says whether the line belongs to a branch taken.
    `messages` collects (line number, message, is_error) for the importer."""

    def __init__(self, version: str = DEFAULT_VERSION, features: frozenset[str] = DEFAULT_FEATURES) -> None:
        self.version = parse_version(version) or (2, 6)
        self.features = features
        self.blocks: list[_Block] = []
        self.messages: list[tuple[int, str, bool]] = []

    def reading(self) -> bool:
        return not self.blocks or (self.blocks[-1].taking and self.blocks[-1].outer)

    def directive(self, number: int, raw: str) -> bool:
        """Handle a `.xxx` line; True when it was one (the caller skips it)."""
        stripped = raw.strip()
        if not stripped.startswith("."):
            return False
        keyword, _, rest = stripped.partition(" ")
        keyword = keyword.split("\t")[0]
        rest = stripped[len(keyword) :].split("#", 1)[0].strip()
        if keyword == ".if":
            outer = self.reading()
            value = self.evaluate(number, rest) if outer else False
            self.blocks.append(_Block(taking=value, decided=value, outer=outer))
        elif keyword == ".elif":
            if not self.blocks or self.blocks[-1].seen_else:
                self.messages.append((number, ".elif without .if", True))
                return True
            block = self.blocks[-1]
            value = self.evaluate(number, rest) if block.outer and not block.decided else False
            block.taking = value and not block.decided
            block.decided = block.decided or value
        elif keyword == ".else":
            if not self.blocks or self.blocks[-1].seen_else:
                self.messages.append((number, ".else without .if", True))
                return True
            block = self.blocks[-1]
            block.taking, block.decided, block.seen_else = not block.decided, True, True
        elif keyword == ".endif":
            if not self.blocks:
                self.messages.append((number, ".endif without .if", True))
            else:
                self.blocks.pop()
        elif keyword in (".diag", ".notice", ".warning"):
            pass  # messages HAProxy prints at start-up
        elif keyword == ".alert":
            if self.reading():
                self.messages.append((number, f"HAProxy refuses to start here: {rest}", True))
        else:
            self.messages.append((number, f"unknown directive {keyword}", True))
        return True

    def evaluate(self, number: int, text: str) -> bool:
        evaluation = _Evaluation(self.version, self.features)
        try:
            value = _Parser(text, evaluation).parse()
        except ConditionError as exc:
            self.messages.append((number, f"condition {text!r}: {exc}", True))
            return False
        for assumption in evaluation.assumptions:
            self.messages.append((number, f"note: .if {text}: {assumption}", False))
        return value

    def finish(self, last_line: int) -> None:
        if self.blocks:
            self.messages.append((last_line, ".if without .endif", True))
