"""`balancer import-haproxy`: translate an haproxy.cfg into our TOML.

- parse.py: bytes to text (binary and non-UTF-8 files named), text to sections of
  tokenised lines, as HAProxy reads them;
- conditions.py: `.if` / `.elif` / `.else` / `.endif`, evaluated for a stated HAProxy version;
- acl.py: ACLs and rule conditions -> our `if` / `unless` tables;
- weaker.py: which directives allow, deny, redirect, authenticate or strip (their loss
  makes an import weaker than its source: it then fails unless accepted);
- keys.py: which keys of issue #13 this build's model accepts (only those are written);
- translator.py: sections -> TOML, and `validate` (our own loader on the result).
"""

from __future__ import annotations

from balancer.config.haproxy.acl import condition_tables, parse_criterion
from balancer.config.haproxy.parse import Section, SourceLine, parse_haproxy, read_haproxy_file, tokenize
from balancer.config.haproxy.translator import Translation, serves, translate, validate
from balancer.config.haproxy.weaker import weakens_when_lost

__all__ = [
    "Section",
    "SourceLine",
    "Translation",
    "condition_tables",
    "parse_criterion",
    "parse_haproxy",
    "read_haproxy_file",
    "serves",
    "tokenize",
    "translate",
    "validate",
    "weakens_when_lost",
]
