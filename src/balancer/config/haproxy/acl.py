"""HAProxy ACLs and conditions -> our `if` / `unless` condition tables, for `import-haproxy`.

`parse_criterion` reads one ACL test (`path_beg -i /api /v2`) into a criterion of ours, or
says why it has no equivalent. `condition_tables` turns a rule's condition (`if a !b ||
{ path_end .css }`) into (if, unless) table pairs whose OR it is, one rule each: a table is
an AND of keys, a key's list an OR of values, `ignore_case = true` makes every string test
of its table case-insensitive (HAProxy's `-i`). What one table cannot say (two tests of one
key that must both match, `-i` mixed with case-sensitive tests in an AND, several negated
tests on different keys) is refused with a reason, never dropped.
"""

from __future__ import annotations

import copy
import ipaddress
import itertools
import re
from dataclasses import dataclass
from typing import Any

from balancer.config.haproxy.keys import product_keys

__all__ = ["Crit", "Decl", "condition_tables", "parse_criterion"]


@dataclass(frozen=True)
class Crit:
    """One translatable ACL test: a condition key of ours and its values (OR)."""

    key: str  # a Condition key (path, host_beg, hdr, url_param, ...), or true, false, ssl_fc
    values: tuple[str, ...] = ()
    header: str = ""  # the header name (hdr*), the parameter name (url_param)
    ignore_case: bool = False


# An ACL name -> its declarations (OR); a str is the reason one cannot be translated.
Decl = Crit | str

# keys whose values are strings compared as the table's ignore_case says
_STRING_KEYS = frozenset(
    {"path", "path_beg", "path_end", "path_sub", "path_dir", "path_reg", "hdr", "hdr_beg", "hdr_end", "hdr_sub"}
    | {"hdr_reg", "query", "url_param"}
)
# keys holding { name = [values] }
_NAMED_KEYS = frozenset({"hdr", "hdr_beg", "hdr_end", "hdr_sub", "hdr_reg", "url_param"})

_FETCH = re.compile(
    r"^(path|url|hdr|req\.hdr|urlp|url_param|query|method|src|dst_port|ssl_fc|http_auth|status"
    r"|always_true|always_false)"
    r"(?:_(beg|end|reg|sub|dom|dir|len|cnt|str|found|ip|val))?(?:\(([^()]*)\))?$"
)
PREDEFINED: dict[str, Crit] = {
    "TRUE": Crit("true"),
    "FALSE": Crit("false"),
    "LOCALHOST": Crit("src", ("127.0.0.0/8", "::1")),
    "METH_GET": Crit("method", ("GET", "HEAD")),
    "METH_HEAD": Crit("method", ("HEAD",)),
    "METH_POST": Crit("method", ("POST",)),
    "METH_PUT": Crit("method", ("PUT",)),
    "METH_DELETE": Crit("method", ("DELETE",)),
    "METH_OPTIONS": Crit("method", ("OPTIONS",)),
    "METH_TRACE": Crit("method", ("TRACE",)),
    "METH_CONNECT": Crit("method", ("CONNECT",)),
    "HTTP_URL_SLASH": Crit("path_beg", ("/",)),
}
_PATH_KEYS = {"str": "path", "beg": "path_beg", "end": "path_end", "reg": "path_reg"} | {
    "sub": "path_sub",
    "dir": "path_dir",
}
_HOST_KEYS = {"str": "host", "beg": "host_beg", "end": "host_end"}
_HEADER_KEYS = {"str": "hdr", "beg": "hdr_beg", "end": "hdr_end", "sub": "hdr_sub", "reg": "hdr_reg"}


def _regex_problem(values: list[str]) -> str:
    for value in values:
        try:
            re.compile(value)
        except re.error:
            return f"the regular expression {value!r} (not valid in Python)"
    return ""


def parse_criterion(words: list[str] | tuple[str, ...], notes: list[str], keys: frozenset[str] | None = None) -> Decl:
    """One ACL test (`path_beg -i /api /v2`) -> a criterion of ours, or why not. `notes`
    receives remarks on a translation that is close but not exact (the importer refuses
    those for rules that allow, deny, redirect, authenticate or strip). `keys`: the
    condition keys our model accepts (default: this build's)."""
    keys = product_keys() if keys is None else keys
    if not words:
        return "an empty ACL"
    fetch_word = words[0]
    ignore_case = False
    method: str | None = None
    values: list[str] = []
    index = 1
    flags = True
    while index < len(words):
        word = words[index]
        if flags and word in ("-i", "-n", "-M"):
            ignore_case = ignore_case or word == "-i"
        elif flags and word == "-m" and index + 1 < len(words):
            method = words[index + 1]
            index += 1
        elif flags and word in ("-f", "-u") and index + 1 < len(words):
            if word == "-f":
                return f"ACL values from a file (-f {words[index + 1]})"
            index += 1
        elif flags and word == "--":
            flags = False
        else:
            flags = False
            values.append(word)
        index += 1
    match = _FETCH.match(fetch_word)
    if match is None:
        return f"the fetch {fetch_word!r}"
    base, suffix, argument = match.group(1), match.group(2), match.group(3)
    how = method or suffix or "str"
    if base in ("always_true", "always_false"):
        return Crit("true" if base == "always_true" else "false")
    if base == "ssl_fc":
        return Crit("ssl_fc") if not values and suffix is None else f"the fetch {fetch_word!r}"
    if base == "http_auth":
        if suffix is None and argument and not values and "http_auth" in keys:
            return Crit("http_auth", (argument.strip(),))
        return f"the fetch {fetch_word!r}" + (" with a group" if argument and "," in argument else "")
    if how != "found" and not values:
        return f"{fetch_word} without values"
    caseless = ignore_case and "ignore_case" in keys
    host = base in ("hdr", "req.hdr") and (argument or "").split(",")[0].strip().lower() == "host"
    if ignore_case and not caseless and not host and base not in ("method", "src", "dst_port", "status"):
        if how in ("reg", "sub") and base == "path":
            values = [value if how == "reg" else re.escape(value) for value in values]
            values = [f"(?i){value}" for value in values]
            how = "reg"
        else:
            notes.append(f"{fetch_word} -i: this build compares case-sensitively")
    if base == "path":
        key = _PATH_KEYS.get(how)
        if key is None:
            return f"{fetch_word} -m {how}"
        if key in ("path_sub", "path_dir") and key not in keys:
            if key == "path_dir":
                return f"{fetch_word} -m dir"
            key, values = "path_reg", [(("(?i)" if caseless else "") + re.escape(value)) for value in values]
            caseless = False
        problem = _regex_problem(values) if key == "path_reg" else ""
        return problem or Crit(key, tuple(values), ignore_case=caseless)
    if base == "url":
        if how == "beg" and not any("?" in value for value in values):
            return Crit("path_beg", tuple(values), ignore_case=caseless)  # the same for origin-form requests
        return f"{fetch_word} (only url_beg without a query is translated)"
    if base in ("hdr", "req.hdr"):
        if not argument:
            return f"{fetch_word} without a header name"
        name = argument.split(",")[0].strip()
        if name.lower() == "host" and how in ("str", "beg", "end", "dom"):
            hosts = tuple(value.lower() for value in values)
            if how == "dom":
                notes.append(f"{fetch_word} also matches sub-domains in HAProxy; translated as an exact host match")
                return Crit("host", hosts)
            key = _HOST_KEYS[how]
            if key != "host" and key not in keys:
                return f"{fetch_word} -m {how}"
            return Crit(key, hosts)  # host names compare case-insensitively in balancer
        if how == "found":
            return Crit("hdr", (), name)
        key = _HEADER_KEYS.get(how, "")
        if not key or (key != "hdr" and key not in keys):
            return f"{fetch_word} -m {how}"
        problem = _regex_problem(values) if key == "hdr_reg" else ""
        return problem or Crit(key, tuple(values), name, ignore_case=caseless)
    if base == "method" and how == "str":
        return Crit("method", tuple(value.upper() if ignore_case else value for value in values))
    if base == "src" and how in ("str", "ip"):
        for value in values:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                return f"src {value!r} (not an address or network)"
        return Crit("src", tuple(values))
    if base in ("dst_port", "status") and how in ("str", "int") and (base == "status" or "dst_port" in keys):
        if not all(re.fullmatch(r"\d{1,5}", value) for value in values):
            return f"{fetch_word} {' '.join(values)} (only single numbers are translated)"
        return Crit(base, tuple(values))
    if base == "query" and how == "str":
        return Crit("query", tuple(values), ignore_case=caseless)
    if base in ("urlp", "url_param") and argument:
        if "url_param" in keys and how in ("str", "found"):
            return Crit("url_param", tuple(values), argument, ignore_case=caseless)
        if how == "str":
            notes.append(f"{fetch_word} translated as query = NAME=VALUE: it matches only when that is the whole query")
            return Crit("query", tuple(f"{argument}={value}" for value in values))
    return f"{fetch_word}" + (f" -m {method}" if method else "")


def _value(key: str, values: tuple[str, ...]) -> Any:
    if key in ("dst_port", "status"):
        return [int(value) for value in values]
    if key == "http_auth":
        return values[0]
    return list(values)


def _merge(table: dict[str, Any], crit: Crit, union: bool) -> bool:
    """Add `crit` to a condition table; False if the table cannot hold both (AND of two
    tests of one key, or case-insensitive and case-sensitive string tests in one table).
    With `union`, tests of one key are merged into one list (OR)."""
    if crit.key == "ssl_fc":  # only where it is not a constant (a backend's rules)
        if "ssl" in table:
            return False
        table["ssl"] = True
        return True
    if crit.key in _STRING_KEYS:
        strings = [key for key in table if key in _STRING_KEYS]
        if strings and bool(table.get("ignore_case")) != crit.ignore_case:
            return False
        if crit.ignore_case:
            table["ignore_case"] = True
    if crit.key in _NAMED_KEYS:
        named: dict[str, list[str]] = table.setdefault(crit.key, {})
        existing = next((name for name in named if name.lower() == crit.header.lower()), None)
        if existing is None:
            named[crit.header] = list(crit.values)
            return True
        if not union:
            return False
        if not named[existing] or not crit.values:
            named[existing] = []
        else:
            named[existing] += [v for v in crit.values if v not in named[existing]]
        return True
    if crit.key in table:
        if not union or crit.key == "http_auth":
            return False
        table[crit.key] += [v for v in _value(crit.key, crit.values) if v not in table[crit.key]]
        return True
    table[crit.key] = _value(crit.key, crit.values)
    return True


Term = tuple[bool, list[Decl], str]  # negated, declarations (OR), label


def condition_terms(words: list[str], acls: dict[str, list[Decl]], keys: frozenset[str]) -> list[list[Term]] | str:
    """`a !b || { path_beg /x }` -> OR-groups of AND-terms, or why not."""
    groups: list[list[Term]] = [[]]
    index = 0
    while index < len(words):
        word = words[index]
        if word in ("||", "or"):
            groups.append([])
            index += 1
            continue
        negated = False
        if word.startswith("!"):
            negated = True
            word = word[1:]
            if not word:
                index += 1
                if index >= len(words):
                    return "a condition ending with '!'"
                word = words[index]
        if word == "{":
            end = index + 1
            while end < len(words) and words[end] != "}":
                end += 1
            if end >= len(words):
                return "an anonymous ACL without its closing '}'"
            inner = list(words[index + 1 : end])
            decl = parse_criterion(inner, [], keys)
            groups[-1].append((negated, [decl], "{ " + " ".join(inner) + " }"))
            index = end + 1
            continue
        if word in acls:
            groups[-1].append((negated, acls[word], word))
        elif word in PREDEFINED:
            groups[-1].append((negated, [PREDEFINED[word]], word))
        else:
            return f"the ACL {word!r} is not defined"
        index += 1
    if any(not group for group in groups):
        return "an empty condition"
    return groups


def _const(crit: Crit, ssl: bool | None) -> bool | None:
    if crit.key == "true":
        return True
    if crit.key == "false":
        return False
    if crit.key == "ssl_fc":
        return ssl
    return None


Table = dict[str, Any]
_MAX_RULES = 16


def condition_tables(
    condition: tuple[str, list[str]] | None,
    acls: dict[str, list[Decl]],
    ssl: bool | None,
    keys: frozenset[str] | None = None,
) -> list[tuple[Table | None, Table | None]] | str:
    """A HAProxy condition -> (if, unless) table pairs whose OR it is (one rule each), or why
    not. [] means the condition never matches; [(None, None)] means always. `ssl`: whether
    the frontend's connections are TLS (ssl_fc is then a constant), None when not known (a
    backend's rules: ssl_fc is then the condition key `ssl`)."""
    keys = product_keys() if keys is None else keys
    if condition is None:
        return [(None, None)]
    kind, words = condition
    parsed = condition_terms(words, acls, keys)
    if isinstance(parsed, str):
        return parsed
    for group in parsed:
        for _negated, decls, label in group:
            reasons = [decl for decl in decls if isinstance(decl, str)]
            if reasons:
                return f"ACL {label!r}: {reasons[0]} has no equivalent"
            if ssl is None and "ssl" not in keys and any(isinstance(d, Crit) and d.key == "ssl_fc" for d in decls):
                return f"ACL {label!r}: ssl_fc in a backend has no equivalent in this build"
    if kind == "unless":
        if len(parsed) == 1 and len(parsed[0]) == 1 and parsed[0][0][0]:
            _negated, decls, label = parsed[0][0]
            return _if_tables([[(False, decls, label)]], ssl)
        return _unless_tables(parsed, ssl)
    return _if_tables(parsed, ssl)


def _if_tables(groups: list[list[Term]], ssl: bool | None) -> list[tuple[Table | None, Table | None]] | str:
    result: list[tuple[Table | None, Table | None]] = []
    for group in groups:
        positives: list[list[Crit]] = []
        negatives: list[Crit] = []
        possible = True
        for negated, decls, _label in group:
            crits = [decl for decl in decls if isinstance(decl, Crit)]
            if negated:
                for crit in crits:  # not (a or b) = not a and not b
                    value = _const(crit, ssl)
                    if value is True:
                        possible = False
                    elif value is None:
                        negatives.append(crit)
            else:
                constants = [_const(crit, ssl) for crit in crits]
                if True in constants:
                    continue  # the term always matches
                alternatives = [crit for crit, value in zip(crits, constants, strict=True) if value is None]
                if not alternatives:
                    possible = False
                positives.append(alternatives)
        if not possible:
            continue
        unless: Table | None = None
        if negatives:
            unless = {}
            for crit in negatives:
                if not _merge(unless, crit, union=True):
                    return "negated ACLs that one unless table cannot hold (mixed -i, or one key twice)"
            if len([key for key in unless if key != "ignore_case"]) > 1 or any(
                len(unless[key]) > 1 for key in _NAMED_KEYS if key in unless
            ):
                return "several negated ACLs on different criteria: balancer's unless is one table"
        combinations = list(itertools.islice(itertools.product(*positives), _MAX_RULES + 1))
        if len(combinations) > _MAX_RULES:
            return "a condition that needs more than 16 rules"
        for combination in combinations:
            table: Table = {}
            for crit in combination:
                if not _merge(table, crit, union=False):
                    if crit.key in _STRING_KEYS and any(k in table for k in _STRING_KEYS if k != crit.key):
                        return "case-insensitive (-i) and case-sensitive tests that must both match"
                    return f"two {crit.key} tests that must both match: balancer's if has one list per key"
            result.append((table or None, copy.deepcopy(unless)))
    if len(result) > _MAX_RULES:
        return "a condition that needs more than 16 rules"
    return result


def _unless_tables(groups: list[list[Term]], ssl: bool | None) -> list[tuple[Table | None, Table | None]] | str:
    """`unless a b` -> unless = { a, b } (the rule is skipped when all match)."""
    if len(groups) > 1:
        return "'unless' with '||'"
    table: Table = {}
    for negated, decls, label in groups[0]:
        if negated:
            return "'unless' with a negated ACL among others"
        crits = [decl for decl in decls if isinstance(decl, Crit)]
        if len(crits) != 1:
            return f"'unless' with ACL {label!r} declared on several lines"
        value = _const(crits[0], ssl)
        if value is False:
            return [(None, None)]  # unless (false and ...) = always
        if value is True:
            continue
        if not _merge(table, crits[0], union=False):
            return f"two {crits[0].key} tests that must both match"
    if not table:
        return []  # unless true: never
    return [(None, table)]
