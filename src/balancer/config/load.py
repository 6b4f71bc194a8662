"""Read a configuration file into a validated `Config`, or explain every problem.

Three passes, each reporting all it finds before the loader gives up:

1. TOML syntax (tomllib): one problem, at the line tomllib names.
2. Shape and values (pydantic, strict: TOML is typed, so `weight = "100"` or
   `forwardfor = "yes"` is an error rather than a guess): unknown keys, missing keys,
   bad durations, addresses, choices. Each error's key path is mapped to a line by
   `balancer.config.locate`.
3. Meaning, which needs the whole model (`_check`): references between frontends and
   backends, modes, duplicate names, rule actions, overlapping listeners, certificate
   files, hash keys.

Pass 3 only runs once pass 2 is clean: it reasons about a complete model. Problems come
out sorted by line; `ConfigError` prints them as `FILE:LINE: message`, one per line, which
is what `balancer check` shows.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from balancer.config.locate import KeyPath, SourceMap
from balancer.config.model import L4, Backend, BackendRule, Bgp, Config, Dns, Dsr, Frontend, ResponseRule, Vrrp
from balancer.config.values import Address

__all__ = ["ConfigError", "Problem", "load_config", "parse_config", "read_config_text"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration file, where an operator can find it."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class ConfigError(Exception):
    """The configuration is invalid; `problems` lists every reason, sorted by line."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = sorted(problems, key=lambda problem: problem.line)
        super().__init__("\n".join(str(problem) for problem in self.problems))


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, parse and validate the file at `path`. Raises ConfigError.

    Relative file names inside (certificates, CA files) are checked relative to the
    directory holding the configuration file; the model keeps them as written.
    """
    file = os.fspath(path)
    return parse_config(read_config_text(file), file, base_dir=Path(file).parent)


_BOM = b"\xef\xbb\xbf"


def read_config_text(path: str | os.PathLike[str]) -> str:
    """The text of the configuration file at `path`, for `check`, `run` and every reload.

    Refuses, as a ConfigError naming the line: a file that cannot be read, one that starts
    with a UTF-8 byte-order mark (tomllib would call it a syntax error on line 1, which
    does not help whoever saved it so), and bytes that are not UTF-8 (where the first bad
    byte is, so a Latin-1 "é" is found at once).
    """
    file = os.fspath(path)
    try:
        data = Path(file).read_bytes()
    except OSError as exc:
        raise ConfigError([Problem(file, 1, f"cannot read configuration file: {exc.strerror or exc}")]) from None
    if data.startswith(_BOM):
        message = "the file starts with a UTF-8 byte-order mark (BOM); save it without one"
        raise ConfigError([Problem(file, 1, message)])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        # What precedes the bad byte on its line is valid UTF-8: count characters, not bytes.
        column = len(data[line_start : exc.start].decode("utf-8")) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        message = f"not UTF-8 text (byte 0x{data[exc.start]:02x} at column {column})"
        raise ConfigError([Problem(file, line, message)]) from None


def parse_config(text: str, file: str = "<string>", *, base_dir: str | os.PathLike[str] | None = None) -> Config:
    """Parse and validate TOML `text`; `file` only names it in problems. Raises ConfigError.

    Relative file names are checked against `base_dir`, by default the directory of
    `file` (the current directory for "<string>").
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_problem(exc, text, file)]) from None
    source = SourceMap.from_text(text)
    try:
        # by_name=False (pydantic >= 2.11): the file must say `global` and `if`, not the
        # Python names `global_` and `if_` that populate_by_name allows in code.
        config = Config.model_validate(data, strict=True, by_name=False)
    except ValidationError as exc:
        problems = _shape_problems(exc, data, source, file)
        problems += [Problem(file, source.line_of(path), message) for path, message in _raw_references(data)]
        raise ConfigError(sorted(dict.fromkeys(problems), key=lambda p: p.line)) from None
    folder = Path(base_dir) if base_dir is not None else Path(file).parent
    problems = [Problem(file, source.line_of(path), message) for path, message in _check(config, folder, source)]
    if problems:
        raise ConfigError(problems)
    return _normalize(config)


# -- pass 1: syntax ------------------------------------------------------------------

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def _syntax_problem(exc: tomllib.TOMLDecodeError, text: str, file: str) -> Problem:
    message = str(exc)
    match = _TOML_POSITION.search(message)
    if match:
        line = int(match.group(1))
        detail = f"{message[: match.start()]} (column {match.group(2)})"
    else:  # "(at end of document)"
        line = max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
        detail = message.replace(" (at end of document)", " at the end of the file")
    return Problem(file, line, f"TOML syntax error: {_lower_first(detail)}{_quote_hint(text, line)}")


_BARE_VALUE = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*=\s*([^\s\"'\[{#][^#]*?)\s*(#.*)?$")


def _quote_hint(text: str, line: int) -> str:
    """The commonest TOML slip: an unquoted string such as `grace = 5s` or `mode = http`."""
    lines = text.split("\n")  # tomllib counts only \n as a line break
    match = _BARE_VALUE.match(lines[line - 1]) if 0 < line <= len(lines) else None
    if match is None or match.group(2) in ("true", "false", "inf", "nan"):
        return ""
    key, value = match.group(1), match.group(2)
    if not re.search(r"[A-Za-z]", value) or re.fullmatch(r"[+-]?(inf|nan)", value):
        return ""
    return f'; strings need quotes: {key} = "{value}"'


# -- pass 2: shape and values --------------------------------------------------------

# What a union member's tag in an error location means, for "must be X or Y".
_TYPE_WORDS = {
    "int": "an integer",
    "str": "a string",
    "bool": "true or false",
    "list[int]": "an array of integers",
    "list[str]": "an array of strings",
}
_NAME_RULE = "may only contain letters, digits, '_', '.' and '-'"


def _shape_problems(exc: ValidationError, data: dict[str, Any], source: SourceMap, file: str) -> list[Problem]:
    problems: list[Problem] = []
    unions: dict[KeyPath, list[str]] = {}
    for error in exc.errors(include_url=False):
        path, union_at = _key_path(error["loc"], data, error["type"])
        if union_at is not None:
            # A value matching no member of a union yields one error per member; say it once.
            tag = next(part for part in error["loc"][len(union_at) :] if isinstance(part, str))
            unions.setdefault(union_at, [])
            if tag not in unions[union_at]:
                unions[union_at].append(tag)
            continue
        problems.append(Problem(file, source.line_of(path), _shape_message(error, path)))
    for path, tags in unions.items():
        kinds = [_TYPE_WORDS.get(tag, tag) for tag in tags]
        value = _value_at(data, path)
        message = f"{_key_label(path)} must be {_or(kinds)}, got {_show(value)}"
        problems.append(Problem(file, source.line_of(path), message))
    return problems


def _key_path(loc: tuple[str | int, ...], data: dict[str, Any], kind: str) -> tuple[KeyPath, KeyPath | None]:
    """Split pydantic's location into the key path written in the file and, when the
    location runs through a union, the path of the union's value.

    Locations mix keys with union member tags such as 'int' or 'list[int]'; walking the
    parsed data tells them apart.
    """
    path: list[str | int] = []
    union_at: KeyPath | None = None
    current: Any = data
    for number, part in enumerate(loc):
        if _has(current, part):
            current = current[part]
        elif not (number == len(loc) - 1 and kind == "missing"):
            if union_at is None:
                union_at = tuple(path)
            continue
        path.append(part)
    return tuple(path), union_at


def _has(container: Any, part: str | int) -> bool:
    if isinstance(container, list):
        return isinstance(part, int) and 0 <= part < len(container)
    return isinstance(container, dict) and part in container


def _shape_message(error: Any, path: KeyPath) -> str:
    kind: str = error["type"]
    ctx: dict[str, Any] = error.get("ctx") or {}
    value = error["input"]
    key = _key_label(path)
    if kind == "extra_forbidden":
        name = str(path[-1])
        message = f"unknown key {name!r} in {_table_label(path[:-1])}"
        known = _known_keys(path[:-1])
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        return f"{message} (did you mean {close[0]!r}?)" if close else message
    if kind == "missing":
        return f"missing required key {str(path[-1])!r} in {_table_label(path[:-1])}"
    if kind == "value_error":
        reason = str(ctx.get("error") or error["msg"].removeprefix("Value error, "))
        if reason.startswith(f"invalid {path[-1]} "):  # already names the key
            return reason
        return f"{key}: {reason}"
    if kind == "literal_error":
        choices = ", ".join(str(ctx.get("expected", "")).rsplit(" or ", 1))
        return f"{key} must be one of {choices}, got {_show(value)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"{key} must be an integer, got {_show(value)}"
    if kind in ("bool_type", "bool_parsing"):
        return f"{key} must be true or false, got {_show(value)}"
    if kind == "string_type":
        return f"{key} must be a string, got {_show(value)}"
    if kind == "list_type":
        return f"{key} must be an array, got {_show(value)}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"{key} must be a table, got {_show(value)}"
    bounds = {
        "greater_than_equal": ("at least", "ge"),
        "less_than_equal": ("at most", "le"),
        "greater_than": ("greater than", "gt"),
        "less_than": ("less than", "lt"),
    }
    if kind in bounds:
        words, bound = bounds[kind]
        return f"{key} must be {words} {ctx.get(bound)}, got {_show(value)}"
    if kind == "too_short":
        count = ctx.get("min_length")
        return f"{key} needs at least {count} {'entry' if count == 1 else 'entries'}"
    if kind == "too_long":
        return f"{key} may have at most {ctx.get('max_length')} entries"
    if kind == "string_pattern_mismatch":
        if ctx.get("pattern") == r"^[A-Za-z0-9_.\-]+$":
            return f"{key} {_show(value)} {_NAME_RULE}"
        return f"{key} must match {ctx.get('pattern')}, got {_show(value)}"
    return f"{key}: {_lower_first(error['msg'])}"


def _key_label(path: KeyPath) -> str:
    """How to name the value at `path` in a message: its dotted key within the nearest
    array-of-tables element ("timeouts.client", "if.src"), or the full dotted key for
    the top-level tables ("global.workers")."""
    parts = list(path)
    while parts and isinstance(parts[-1], int):  # an element of a value array: name the array
        parts.pop()
    tail: list[str] = []
    for part in reversed(parts):
        if isinstance(part, int):
            break
        tail.insert(0, part)
    return ".".join(tail) or "value"


def _table_label(path: KeyPath) -> str:
    """Name a table the way the file could write it: [global], [[frontend.rule]], or
    "timeouts of [[frontend]]" for a table nested in an array element."""
    if not path:
        return "the top level"
    names = [part for part in path if isinstance(part, str)]
    if isinstance(path[-1], int):
        return f"[[{'.'.join(names)}]]"
    if not any(isinstance(part, int) for part in path):
        return f"[{'.'.join(names)}]"
    last_index = max(number for number, part in enumerate(path) if isinstance(part, int))
    inner = ".".join(str(part) for part in path[last_index + 1 :])
    return f"{inner} of {_table_label(path[: last_index + 1])}"


def _known_keys(path: KeyPath) -> list[str]:
    """The keys the model accepts in the table at `path` (for "did you mean")."""
    model: type[BaseModel] | None = Config
    for part in path:
        if isinstance(part, int) or model is None:
            continue
        field = next(
            (f for name, f in model.model_fields.items() if (f.alias or name) == part),
            None,
        )
        model = _model_in(field.annotation) if field is not None else None
    if model is None:
        return []
    return [field.alias or name for name, field in model.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model class inside an annotation such as `list[Rule]` or `Condition | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (list, typing.Union, types.UnionType):
        for argument in typing.get_args(annotation):
            found = _model_in(argument)
            if found is not None:
                return found
    return None


def _value_at(data: Any, path: KeyPath) -> Any:
    for part in path:
        data = data[part]
    return data


def _show(value: Any) -> str:
    """A value as the operator wrote it, roughly: TOML booleans, short reprs."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _or(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


# -- pass 3: meaning -----------------------------------------------------------------

# Hashing algorithms and the hash_key each one needs. A pattern the explicit hash_key must
# match, the form to suggest, and the key used when hash_key is left out (None: the
# operator must name one).
_HASH_KEY_RULES: dict[str, tuple[str, str, str | None]] = {
    "source": (r"src", "src", "src"),
    "uri": (r"uri", "uri", "uri"),
    "hdr": (r"hdr\(.+\)", "hdr(NAME)", None),
    "url_param": (r"url_param\(.+\)", "url_param(NAME)", None),
}
_HASHING = {"source", "uri", "hdr", "url_param", "maglev", "ring"}
_TCP_HASH_KEYS = {"src", "5tuple"}


def _check(config: Config, folder: Path, source: SourceMap) -> list[tuple[KeyPath, str]]:
    """Whole-model checks. Returns (key path, message) pairs.

    Rules, one per function below:
    - frontend default_backend and rule use_backend name a defined backend of the same mode;
    - names of frontends, of backends, and of servers within a backend are unique;
    - a rule has at most one terminal action (use_backend, action, redirect) and does
      something (a terminal action, or set_header/del_header which may also accompany
      one); in a tcp frontend rules test only `src` and only use_backend or action;
    - every frontend can reach a backend: default_backend, a use_backend rule, or a final
      unconditional redirect/deny rule (an http -> https redirector needs no backend);
    - no two listeners (frontend binds, stats.bind, admin.bind) overlap: same port on the
      same address, or on a wildcard address (":8080", "0.0.0.0:8080", "[::]:8080");
    - an [[l4]] table has nodes, each name, address and VXLAN VNI once; maglev and source
      need a seed (every L4 node of a tier must hash alike; nft would pick a random one)
      and a prime table_size, maglev one above 100 x nodes; the VIP is no node's address;
      two [[l4]] tables do not balance the same VIP, protocol and port;
    - a [dsr] tunnel other than "direct" names its local endpoint;
    - [bgp] has at least one neighbor, each address once and not local_address, and
      something to announce (written, or derived from [[l4]] vips or frontend addresses);
    - [dns]: each record's owner name lies in the zone and is written once per type; its
      answers' addresses match the type (A: IPv4, AAAA: IPv6), each once; in a "nearest"
      record each answer's site is a [[dns.site]] (elsewhere a site is a label: SPEC.md's
      own example names one it does not define) and one answer at least has a site; site names
      are unique and no prefix belongs to two sites; NS and SOA names are absolute;
    - [vrrp]: unicast_src goes with unicast_peers and is none of them; no VIP is a peer's
      address or unicast_src;
    - certificate and CA files exist, relative names taken from the config's folder;
    - hash keys fit the algorithm: balance "source" hashes src, "uri" hashes uri, "hdr"
      needs hash_key = "hdr(NAME)" and "url_param" needs "url_param(NAME)". Only an
      explicitly written, incompatible hash_key is an error for source/uri (a left-out
      hash_key means the right one); hdr and url_param need the name written. A tcp
      backend cannot hash or persist on HTTP data.
    A backend without servers is valid: its requests get 503.
    """
    problems: list[tuple[KeyPath, str]] = []
    problems += _check_names(config, source)
    problems += _check_references(config)
    userlists = _check_userlists(config)
    problems += userlists
    names = {userlist.name for userlist in config.userlist}
    for index, frontend in enumerate(config.frontend):
        problems += _check_rules(("frontend", index), frontend.mode, f"frontend {frontend.name!r}", frontend.rule)
        problems += _check_response_rules(("frontend", index), frontend.mode, frontend.response_rule)
        problems += _check_auth_references(("frontend", index), frontend.rule, frontend.response_rule, names)
        problems += _check_errorfiles(("frontend", index), frontend.mode, frontend.errorfiles, folder)
        if frontend.monitor_uri and frontend.mode == "tcp":
            problems.append(
                (
                    ("frontend", index, "monitor_uri"),
                    f"frontend {frontend.name!r} is mode tcp: monitor_uri needs mode http",
                )
            )
        problems += _check_reachable(index, frontend)
        problems += _check_tls_files(index, frontend, folder)
    for index, backend in enumerate(config.backend):
        problems += _check_rules(("backend", index), backend.mode, f"backend {backend.name!r}", backend.rule)
        problems += _check_response_rules(("backend", index), backend.mode, backend.response_rule)
        problems += _check_auth_references(("backend", index), backend.rule, backend.response_rule, names)
        problems += _check_errorfiles(("backend", index), backend.mode, backend.errorfiles, folder)
        problems += _check_hashing(index, backend)
        for number, server in enumerate(backend.server):
            if server.ca_file and not (folder / server.ca_file).is_file():
                problems.append(
                    (
                        ("backend", index, "server", number, "ca_file"),
                        _not_found("CA file", server.ca_file, folder),
                    )
                )
    problems += _check_listeners(config, source)
    for index, table in enumerate(config.l4):
        problems += _check_l4(index, table, source)
    problems += _check_l4_overlaps(config, source)
    problems += _check_l4_tunnels(config, source)
    if config.dsr is not None:
        problems += _check_dsr(config.dsr)
    if config.bgp is not None:
        problems += _check_bgp(config, config.bgp, source)
    if config.dns is not None:
        problems += _check_dns(config.dns, source)
    if config.vrrp is not None:
        problems += _check_vrrp(config.vrrp)
    return problems


def _check_names(config: Config, source: SourceMap) -> list[tuple[KeyPath, str]]:
    # (what is named, where it lives, path of the array, names in order)
    groups: list[tuple[str, str, KeyPath, list[str]]] = [
        ("frontend", "", ("frontend",), [frontend.name for frontend in config.frontend]),
        ("backend", "", ("backend",), [backend.name for backend in config.backend]),
    ]
    for index, backend in enumerate(config.backend):
        names = [server.name for server in backend.server]
        groups.append(("server", f" in backend {backend.name!r}", ("backend", index, "server"), names))
    groups.append(("[[l4]]", "", ("l4",), [table.name for table in config.l4]))
    for index, table in enumerate(config.l4):
        names = [node.name for node in table.node]
        groups.append(("node", f" in [[l4]] {table.name!r}", ("l4", index, "node"), names))
    problems: list[tuple[KeyPath, str]] = []
    for what, where, base, names in groups:
        first: dict[str, int] = {}
        for number, name in enumerate(names):
            if name in first:
                line = source.line_of((*base, first[name], "name"))
                message = f"duplicate {what} name {name!r}{where} (first defined at line {line})"
                problems.append(((*base, number, "name"), message))
            first.setdefault(name, number)
    return problems


def _raw_references(data: dict[str, Any]) -> list[tuple[KeyPath, str]]:
    """Backends referenced but not defined, found in the raw tables: reported even when
    other problems keep the model from being built, so one run shows every problem."""
    backends = data.get("backend")
    frontends = data.get("frontend")
    if not isinstance(backends, list) or not isinstance(frontends, list):
        return []
    names = {b.get("name") for b in backends if isinstance(b, dict)}
    problems: list[tuple[KeyPath, str]] = []
    for index, frontend in enumerate(frontends):
        if not isinstance(frontend, dict):
            continue
        references: list[tuple[KeyPath, Any]] = [
            (("frontend", index, "default_backend"), frontend.get("default_backend"))
        ]
        rules = frontend.get("rule")
        for number, rule in enumerate(rules if isinstance(rules, list) else []):
            if isinstance(rule, dict):
                references.append((("frontend", index, "rule", number, "use_backend"), rule.get("use_backend")))
        for path, name in references:
            if isinstance(name, str) and name not in names:
                problems.append((path, f"backend {name!r} referenced but not defined"))
    return problems


def _check_references(config: Config) -> list[tuple[KeyPath, str]]:
    backends: dict[str, Backend] = {}
    for backend in config.backend:
        backends.setdefault(backend.name, backend)
    problems: list[tuple[KeyPath, str]] = []
    for index, frontend in enumerate(config.frontend):
        references: list[tuple[KeyPath, str]] = []
        if frontend.default_backend is not None:
            references.append((("frontend", index, "default_backend"), frontend.default_backend))
        for number, rule in enumerate(frontend.rule):
            if rule.use_backend is not None:
                references.append((("frontend", index, "rule", number, "use_backend"), rule.use_backend))
        for path, name in references:
            target = backends.get(name)
            if target is None:
                problems.append((path, f"backend {name!r} referenced but not defined"))
            elif target.mode != frontend.mode:
                problems.append(
                    (
                        path,
                        f"frontend {frontend.name!r} is mode {frontend.mode} "
                        f"but backend {name!r} is mode {target.mode}",
                    )
                )
    return problems


_TERMINALS = ("use_backend", "action", "redirect")
# Rewriting these would desynchronise the framing of the message the proxy forwards.
_PROXY_OWNED_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade", "proxy-connection"}
)


def _check_rules(base: KeyPath, mode: str, owner: str, rules: Sequence[BackendRule]) -> list[tuple[KeyPath, str]]:
    """Rules of a frontend or a backend (a backend rule has no use_backend)."""
    problems: list[tuple[KeyPath, str]] = []
    for number, rule in enumerate(rules):
        path: KeyPath = (*base, "rule", number)
        terminals = [name for name in _TERMINALS if getattr(rule, name, None) is not None]
        edits = rule.set_header or rule.add_header or rule.del_header
        if len(terminals) > 1:
            choices = ", ".join(name for name in _TERMINALS if base[0] == "frontend" or name != "use_backend")
            problems.append((path, f"rule has several actions ({', '.join(terminals)}): use one of {choices}"))
        elif not terminals and not edits:
            problems.append(
                (path, f"rule does nothing: add one of {', '.join(_TERMINALS)}, set_header, add_header, del_header")
            )
        if rule.realm is not None and rule.action != "auth":
            problems.append(((*path, "realm"), 'realm belongs to action = "auth"'))
        if rule.realm is not None and ('"' in rule.realm or "\\" in rule.realm or not rule.realm.isprintable()):
            problems.append(
                ((*path, "realm"), f"realm {rule.realm!r} may not contain quotes, backslashes or control characters")
            )
        problems += _check_header_edits(path, rule.set_header, rule.add_header, rule.del_header)
        if rule.redirect is not None:
            problems += _check_redirect((*path, "redirect"), rule)
        if mode != "tcp":
            continue
        where = f"{owner} is mode tcp"
        for key, condition in (("if", rule.if_), ("unless", rule.unless)):
            for test in sorted(condition.model_fields_set if condition is not None else ()):
                if test not in ("src", "ignore_case"):
                    problems.append(((*path, key, test), f"{where}: rules may only test src, not {test}"))
        allowed = "use_backend or action" if base[0] == "frontend" else "action"
        http_only: list[str] = [
            name
            for name in ("redirect", "set_header", "add_header", "del_header", "realm")
            if name in rule.model_fields_set
        ]
        if rule.action == "auth":
            http_only.append("action = auth")
        for name in http_only:
            problems.append(((*path, name.partition(" ")[0]), f"{where}: rules may only use {allowed}, not {name}"))
    return problems


def _check_header_edits(
    path: KeyPath, set_header: dict[str, str], add_header: dict[str, str], del_header: list[str]
) -> list[tuple[KeyPath, str]]:
    problems: list[tuple[KeyPath, str]] = []
    for key, names in (("set_header", list(set_header)), ("add_header", list(add_header)), ("del_header", del_header)):
        for name in names:
            if name.lower() in _PROXY_OWNED_HEADERS:
                problems.append(
                    ((*path, key), f"{key} cannot change {name}: the proxy owns message framing and connection headers")
                )
            elif not _TOKEN.fullmatch(name):
                problems.append(((*path, key), f"{key}: {name!r} is not a valid header name"))
    for key, table in (("set_header", set_header), ("add_header", add_header)):
        for name, value in table.items():
            if "\r" in value or "\n" in value or "\0" in value:
                problems.append(((*path, key), f"{key} {name}: a header value may not contain CR, LF or NUL"))
    return problems


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _check_redirect(path: KeyPath, rule: BackendRule) -> list[tuple[KeyPath, str]]:
    redirect = rule.redirect
    assert redirect is not None
    for key in ("location", "prefix", "scheme"):
        value = getattr(redirect, key)
        if value is not None and any(c in value for c in "\r\n\0"):
            return [((*path, key), f"redirect {key} may not contain CR, LF or NUL")]
    return []


def _check_response_rules(base: KeyPath, mode: str, rules: Sequence[ResponseRule]) -> list[tuple[KeyPath, str]]:
    problems: list[tuple[KeyPath, str]] = []
    for number, rule in enumerate(rules):
        path: KeyPath = (*base, "response_rule", number)
        if mode == "tcp":
            problems.append((path, "response rules need mode http"))
            continue
        if not (rule.set_header or rule.add_header or rule.del_header):
            problems.append((path, "response rule does nothing: add set_header, add_header or del_header"))
        problems += _check_header_edits(path, rule.set_header, rule.add_header, rule.del_header)
    return problems


def _check_auth_references(
    base: KeyPath, rules: Sequence[BackendRule], response_rules: Sequence[ResponseRule], names: set[str]
) -> list[tuple[KeyPath, str]]:
    """Every http_auth names a defined [[userlist]]."""
    problems: list[tuple[KeyPath, str]] = []
    tables: list[tuple[KeyPath, Any]] = []
    for number, rule in enumerate(rules):
        tables += [((*base, "rule", number, "if"), rule.if_), ((*base, "rule", number, "unless"), rule.unless)]
    for number, response_rule in enumerate(response_rules):
        tables += [
            ((*base, "response_rule", number, "if"), response_rule.if_),
            ((*base, "response_rule", number, "unless"), response_rule.unless),
        ]
    for path, condition in tables:
        if condition is not None and condition.http_auth is not None and condition.http_auth not in names:
            problems.append(((*path, "http_auth"), f"userlist {condition.http_auth!r} referenced but not defined"))
    return problems


def _check_userlists(config: Config) -> list[tuple[KeyPath, str]]:
    problems: list[tuple[KeyPath, str]] = []
    seen: set[str] = set()
    for index, userlist in enumerate(config.userlist):
        if userlist.name in seen:
            problems.append((("userlist", index, "name"), f"duplicate userlist name {userlist.name!r}"))
        seen.add(userlist.name)
        users: set[str] = set()
        for number, user in enumerate(userlist.user):
            path: KeyPath = ("userlist", index, "user", number)
            if user.name in users:
                problems.append(((*path, "name"), f"duplicate user {user.name!r} in userlist {userlist.name!r}"))
            users.add(user.name)
            # Whether this system's crypt(3) takes the hash is checked by server.unsupported.
    return problems


def _check_errorfiles(base: KeyPath, mode: str, errorfiles: dict[str, str], folder: Path) -> list[tuple[KeyPath, str]]:
    """Each errorfile: a known status key and an existing file (what it holds is checked by
    server.unsupported, which reads it as the proxy will: proto.errorfile)."""
    problems: list[tuple[KeyPath, str]] = []
    if errorfiles and mode == "tcp":
        return [((*base, "errorfiles"), "errorfiles need mode http")]
    for status, name in errorfiles.items():
        path: KeyPath = (*base, "errorfiles", status)
        if not re.fullmatch(r"[1-5]\d\d", status):
            problems.append((path, f'errorfiles key {status!r} is not an HTTP status such as "503"'))
            continue
        file = folder / name
        if not file.is_file():
            problems.append((path, _not_found("error file", name, folder)))
    return problems


def _check_reachable(index: int, frontend: Frontend) -> list[tuple[KeyPath, str]]:
    if frontend.default_backend is not None or any(rule.use_backend for rule in frontend.rule):
        return []
    if frontend.monitor_uri:
        return []  # a health frontend (HAProxy monitor-uri): other requests get 503, as there

    closed = any(
        rule.if_ is None and rule.unless is None and (rule.redirect is not None or rule.action == "deny")
        for rule in frontend.rule
    )
    if closed:
        return []
    return [(("frontend", index), f"frontend {frontend.name!r} has no backend: set default_backend")]


def _check_tls_files(index: int, frontend: Frontend, folder: Path) -> list[tuple[KeyPath, str]]:
    tls = frontend.tls
    if tls is None:
        return []
    base: KeyPath = ("frontend", index, "tls")
    problems: list[tuple[KeyPath, str]] = []
    for number, cert in enumerate(tls.cert):
        if (folder / cert).is_dir():
            if not certificate_files(folder / cert):
                problems.append(
                    ((*base, "cert", number), f"certificate directory {cert!r} holds no *.pem or *.crt file")
                )
        elif not (folder / cert).is_file():
            problems.append(((*base, "cert", number), _not_found("certificate file", cert, folder)))
    if tls.client_ca and not (folder / tls.client_ca).is_file():
        problems.append(((*base, "client_ca"), _not_found("client CA file", tls.client_ca, folder)))
    if tls.verify_client != "none" and not tls.client_ca:
        problems.append(
            (
                (*base, "verify_client"),
                f"verify_client = {tls.verify_client!r} needs client_ca to verify against",
            )
        )
    return problems


def certificate_files(folder: Path) -> list[Path]:
    """The certificate files of a `tls.cert` directory (HAProxy `crt DIR`), sorted by name."""
    return sorted(path for path in folder.iterdir() if path.suffix in (".pem", ".crt") and path.is_file())


def _not_found(what: str, name: str, folder: Path) -> str:
    message = f"{what} {name!r} not found"
    if not Path(name).is_absolute():
        message += f" (looked for {folder / name})"
    return message


def _check_hashing(index: int, backend: Backend) -> list[tuple[KeyPath, str]]:
    path: KeyPath = ("backend", index)
    explicit = "hash_key" in backend.model_fields_set
    problems: list[tuple[KeyPath, str]] = []
    rule = _HASH_KEY_RULES.get(backend.balance)
    if rule is not None:
        pattern, form, default = rule
        if explicit and not re.fullmatch(pattern, backend.hash_key):
            problems.append(
                (
                    (*path, "hash_key"),
                    f'balance "{backend.balance}" needs hash_key = "{form}", got {backend.hash_key!r}',
                )
            )
        elif not explicit and default is None:
            problems.append(((*path, "balance"), f'balance "{backend.balance}" needs hash_key = "{form}"'))
    if backend.mode == "tcp":
        where = f"backend {backend.name!r} is mode tcp"
        if backend.balance in ("uri", "hdr", "url_param"):
            problems.append(((*path, "balance"), f'{where}: balance "{backend.balance}" needs mode http'))
        elif backend.balance in _HASHING and explicit and backend.hash_key not in _TCP_HASH_KEYS:
            problems.append(((*path, "hash_key"), f"{where}: hash_key may only be src or 5tuple"))
        if backend.cookie is not None:
            problems.append(((*path, "cookie"), f"{where}: cookie persistence needs mode http"))
    return problems


def _check_listeners(config: Config, source: SourceMap) -> list[tuple[KeyPath, str]]:
    listeners: list[tuple[KeyPath, Address, str]] = []
    for index, frontend in enumerate(config.frontend):
        for number, address in enumerate(frontend.bind):
            listeners.append((("frontend", index, "bind", number), address, f"frontend {frontend.name!r}"))
    if config.stats.bind is not None:
        listeners.append((("stats", "bind"), config.stats.bind, "[stats]"))
    if config.admin.bind is not None:
        listeners.append((("admin", "bind"), config.admin.bind, "[admin]"))
    if config.dns is not None:  # its TCP side competes with the TCP listeners
        for number, address in enumerate(config.dns.bind):
            listeners.append((("dns", "bind", number), address, "[dns]"))
    listeners.sort(key=lambda listener: source.line_of(listener[0]))  # blame the later one
    problems: list[tuple[KeyPath, str]] = []
    for later, (path, address, _owner) in enumerate(listeners):
        for earlier_path, earlier_address, earlier_owner in listeners[:later]:
            if addresses_overlap(address, earlier_address):
                clash = "is" if str(address) == str(earlier_address) else f"overlaps {earlier_address}"
                line = source.line_of(earlier_path)
                problems.append((path, f"address {address} {clash} already bound by {earlier_owner} (line {line})"))
                break
    return problems


_HASHED_METHODS = ("maglev", "source")


def is_prime(number: int) -> bool:
    """Trial division: table sizes are at most about a million (config/ imports nothing, so
    not lb.common's)."""
    if number < 2:
        return False
    divisor = 2
    while divisor * divisor <= number:
        if number % divisor == 0:
            return False
        divisor += 1
    return True


def _check_l4(index: int, table: L4, source: SourceMap) -> list[tuple[KeyPath, str]]:
    path: KeyPath = ("l4", index)
    where = f"[[l4]] {table.name!r}"
    problems: list[tuple[KeyPath, str]] = []
    if not table.node:
        problems.append((path, f"{where} has no [[l4.node]] to send flows to"))
    if table.method in _HASHED_METHODS:
        if table.seed is None:
            problems.append(
                (
                    (*path, "method"),
                    f'{where}: method "{table.method}" needs a seed, the same on every L4 node of the tier'
                    " (without one the kernel picks a random seed and the nodes disagree)",
                )
            )
        if not is_prime(table.table_size):
            problems.append(((*path, "table_size"), f"table_size {table.table_size} is not a prime"))
        elif table.method == "maglev" and table.table_size <= 100 * len(table.node):
            problems.append(
                (
                    (*path, "table_size"),
                    f"table_size {table.table_size} is too small for {len(table.node)} nodes:"
                    f" maglev needs a prime above 100 x nodes ({100 * len(table.node)})",
                )
            )
    first_address: dict[str, int] = {}
    first_vni: dict[int, int] = {}
    for number, node in enumerate(table.node):
        node_path: KeyPath = (*path, "node", number)
        if node.address == table.vip:
            problems.append(((*node_path, "address"), f"node {node.name!r} has the VIP {table.vip} as its address"))
        if node.address in first_address:
            line = source.line_of((*path, "node", first_address[node.address], "address"))
            message = f"node address {node.address} listed twice in {where} (first at line {line})"
            problems.append(((*node_path, "address"), message))
            continue  # its VNI is the same too: one problem is enough
        first_address[node.address] = number
        vni = node.tunnel_vni()
        if table.forward == "vxlan" and vni in first_vni:
            line = source.line_of((*path, "node", first_vni[vni]))
            message = f"node {node.name!r} has VXLAN VNI {vni}, already used by the node at line {line}; set vni"
            problems.append(((*node_path, "vni") if node.vni is not None else (*node_path, "address"), message))
        first_vni.setdefault(vni, number)
    return problems


def _check_l4_overlaps(config: Config, source: SourceMap) -> list[tuple[KeyPath, str]]:
    """Two tables matching the same packets: the first rule would win, the second never see any."""
    problems: list[tuple[KeyPath, str]] = []
    for later, table in enumerate(config.l4):
        for earlier, other in enumerate(config.l4[:later]):
            if (other.vip, other.protocol) != (table.vip, table.protocol):
                continue
            shared = set(table.ports) & set(other.ports) if table.ports and other.ports else set()
            if shared or not table.ports or not other.ports:
                what = f"port {min(shared)}" if shared else "every port"
                line = source.line_of(("l4", earlier))
                balanced = f"{table.vip} {table.protocol} {what}"
                message = f"[[l4]] {table.name!r} balances {balanced} like [[l4]] {other.name!r} (line {line})"
                problems.append((("l4", later, "vip"), message))
                break
    return problems


def _check_l4_tunnels(config: Config, source: SourceMap) -> list[tuple[KeyPath, str]]:
    """Across the vxlan tables, one tunnel per L7 node (the tables share its device): a VNI
    naming two addresses would be a second VXLAN device with that VNI, which the kernel
    refuses ("File exists") at run time; an address with two VNIs could not reach the one
    device of its [dsr]. Within a table, _check_l4 has said it already."""
    problems: list[tuple[KeyPath, str]] = []
    by_vni: dict[int, tuple[str, int, int]] = {}  # VNI -> (address, table, node) first seen
    by_address: dict[str, tuple[int, int, int]] = {}  # address -> (VNI, table, node)
    for t, table in enumerate(config.l4):
        if table.forward != "vxlan":
            continue
        for n, node in enumerate(table.node):
            vni, node_path = node.tunnel_vni(), ("l4", t, "node", n)
            key = (*node_path, "vni") if node.vni is not None else (*node_path, "address")
            where = f"node {node.name!r} of [[l4]] {table.name!r} has VXLAN VNI {vni}"
            address, first_t, first_n = by_vni.setdefault(vni, (node.address, t, n))
            if address != node.address and first_t != t:
                line = source.line_of(("l4", first_t, "node", first_n))
                other = config.l4[first_t].name
                problems.append(
                    (key, f"{where}, already used by node {address} of [[l4]] {other!r} (line {line}); set vni")
                )
                continue
            known, first_t, first_n = by_address.setdefault(node.address, (vni, t, n))
            if known != vni:
                line = source.line_of(("l4", first_t, "node", first_n))
                other = config.l4[first_t].name
                problems.append(
                    (key, f"{where}, but {known} in [[l4]] {other!r} (line {line}): an L7 node has one tunnel")
                )
    return problems


def _check_dsr(dsr: Dsr) -> list[tuple[KeyPath, str]]:
    if dsr.tunnel.type != "direct" and not dsr.tunnel.local:
        message = f'[dsr] tunnel type "{dsr.tunnel.type}" needs local, this node\'s underlay address'
        return [(("dsr", "tunnel"), message)]
    return []


def _check_bgp(config: Config, bgp: Bgp, source: SourceMap) -> list[tuple[KeyPath, str]]:
    problems: list[tuple[KeyPath, str]] = []
    if not bgp.neighbor:
        problems.append((("bgp",), "[bgp] has no [[bgp.neighbor]] to announce to"))
    first: dict[str, int] = {}
    for number, neighbor in enumerate(bgp.neighbor):
        path: KeyPath = ("bgp", "neighbor", number, "address")
        if neighbor.address == bgp.local_address:
            problems.append((path, f"neighbor {neighbor.address} is this node's own local_address"))
        elif neighbor.address in first:
            line = source.line_of(("bgp", "neighbor", first[neighbor.address], "address"))
            problems.append((path, f"neighbor {neighbor.address} is listed twice (first at line {line})"))
        first.setdefault(neighbor.address, number)
    if not config.bgp_announce():
        message = (
            "[bgp] has nothing to announce: set announce, or give the node an [[l4]] vip"
            " or a frontend bound to an IPv4 address (a wildcard bind names no VIP)"
        )
        problems.append((("bgp",), message))
    return problems


def _check_vrrp(vrrp: Vrrp) -> list[tuple[KeyPath, str]]:
    problems: list[tuple[KeyPath, str]] = []
    if vrrp.unicast_src and not vrrp.unicast_peers:
        message = "[vrrp] unicast_src needs unicast_peers (adverts are multicast without)"
        problems.append((("vrrp", "unicast_src"), message))
    if vrrp.unicast_src in vrrp.unicast_peers:
        number = vrrp.unicast_peers.index(vrrp.unicast_src)
        message = f"unicast peer {vrrp.unicast_src} is this node's unicast_src"
        problems.append((("vrrp", "unicast_peers", number), message))
    for number, address in enumerate(vrrp.addresses()):
        if address in vrrp.unicast_peers or address == vrrp.unicast_src:
            message = f"vip {address} is a node's own address: a VIP moves, a node's address does not"
            problems.append((("vrrp", "vips", number), message))
    return problems


def _check_dns(dns: Dns, source: SourceMap) -> list[tuple[KeyPath, str]]:
    problems: list[tuple[KeyPath, str]] = []
    for number, address in enumerate(dns.bind):
        if address.is_unix:
            problems.append((("dns", "bind", number), f"[dns] bind {address}: DNS listens on an IP address and port"))
    sites: dict[str, int] = {}
    prefixes: dict[str, str] = {}
    for index, site in enumerate(dns.site):
        if site.name in sites:
            line = source.line_of(("dns", "site", sites[site.name], "name"))
            message = f"duplicate site name {site.name!r} (first defined at line {line})"
            problems.append((("dns", "site", index, "name"), message))
        sites.setdefault(site.name, index)
        for number, prefix in enumerate(site.prefixes):
            owner = prefixes.get(str(prefix))
            if owner is not None:
                message = f"prefix {prefix} already belongs to site {owner!r}"
                problems.append((("dns", "site", index, "prefixes", number), message))
            prefixes.setdefault(str(prefix), site.name)
    zone = dns.zone
    for which, name in (("mname", dns.soa.mname), ("rname", dns.soa.rname)):
        if name and "." not in name:
            message = f"soa.{which} {name!r} is a single label: write the full name, such as {name}.{zone}"
            problems.append((("dns", "soa", which), message))
    owners: dict[tuple[str, str], int] = {}
    for index, record in enumerate(dns.record):
        path: KeyPath = ("dns", "record", index)
        owner = dns.owner(record)
        if owner != zone and not owner.endswith("." + zone):
            problems.append(((*path, "name"), f"name {record.name!r} is not in the zone {zone}"))
            continue
        if len(owner) > 253:
            problems.append(((*path, "name"), f"name {record.name!r} is longer than 253 characters with the zone"))
            continue
        if (owner, record.type) in owners:
            line = source.line_of(("dns", "record", owners[(owner, record.type)], "name"))
            message = f"{record.type} record for {owner} defined twice (first at line {line})"
            problems.append(((*path, "name"), message))
        owners.setdefault((owner, record.type), index)
        version = 4 if record.type == "A" else 6
        seen: set[str] = set()
        for number, answer in enumerate(record.answers):
            answer_path: KeyPath = (*path, "answers", number)
            if ipaddress.ip_address(answer.address).version != version:
                family = "IPv4" if version == 4 else "IPv6"
                message = (
                    f"address {answer.address} is not {family}: an {record.type} record answers {family} addresses"
                )
                problems.append(((*answer_path, "address"), message))
            if answer.address in seen:
                problems.append(((*answer_path, "address"), f"address {answer.address} is listed twice in {owner}"))
            seen.add(answer.address)
            if record.policy == "nearest" and answer.site and answer.site not in sites:
                message = f'site {answer.site!r} is not defined: policy "nearest" needs a [[dns.site]] of this name'

                problems.append(((*answer_path, "site"), message))
        if record.policy == "nearest" and not any(answer.site for answer in record.answers):
            message = f'{owner}: policy "nearest" needs answers with a site'
            problems.append(((*path, "policy"), message))
    return problems


def addresses_overlap(one: Address, other: Address) -> bool:
    """Whether two listening sockets would compete for the same connections."""
    if one.is_unix or other.is_unix:
        return one.path == other.path
    if one.port == 0 or one.port != other.port:
        return False
    if one.host == other.host or "" in (one.host, other.host):
        return True
    for wildcard, host in ((one.host, other.host), (other.host, one.host)):
        if wildcard == "0.0.0.0" and ":" not in host:
            return True
        if wildcard == "::" and ":" in host:
            return True
    return False


def _normalize(config: Config) -> Config:
    """Fill in what the checks proved implicit: balance "uri" without hash_key hashes uri."""
    if not any(b.balance == "uri" and "hash_key" not in b.model_fields_set for b in config.backend):
        return config
    backends = [
        b.model_copy(update={"hash_key": "uri"}) if b.balance == "uri" and "hash_key" not in b.model_fields_set else b
        for b in config.backend
    ]
    return config.model_copy(update={"backend": backends})
