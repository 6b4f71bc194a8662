"""Which configuration keys of issue #13 this build's config model has, for `import-haproxy`.

The importer writes a key only when our own loader accepts it: a directive whose key is
missing stays untranslated (named, and a loss when it guards), so a translation always
validates. `ALL_KEYS` is every key the importer knows how to write (tests use it to look at
translations the model may not accept yet).
"""

from __future__ import annotations

from pydantic import BaseModel

from balancer.config import model

__all__ = ["ALL_KEYS", "product_keys"]

# importer's name -> (model class, field) whose presence means the key is accepted
_FIELDS: dict[str, tuple[type[BaseModel], str]] = {
    "ignore_case": (model.Condition, "ignore_case"),
    "path_sub": (model.Condition, "path_sub"),
    "path_dir": (model.Condition, "path_dir"),
    "host_beg": (model.Condition, "host_beg"),
    "host_end": (model.Condition, "host_end"),
    "hdr_beg": (model.Condition, "hdr_beg"),
    "hdr_end": (model.Condition, "hdr_end"),
    "hdr_sub": (model.Condition, "hdr_sub"),
    "hdr_reg": (model.Condition, "hdr_reg"),
    "url_param": (model.Condition, "url_param"),
    "dst_port": (model.Condition, "dst_port"),
    "http_auth": (model.Condition, "http_auth"),
    "ssl": (model.Condition, "ssl"),
    "auth": (model.Rule, "realm"),
    "add_header": (model.Rule, "add_header"),
    "redirect_scheme": (model.Redirect, "scheme"),
    "backend_rule": (model.Backend, "rule"),
    "response_rule": (model.Frontend, "response_rule"),
    "userlist": (model.Config, "userlist"),
    "monitor_uri": (model.Frontend, "monitor_uri"),
    "errorfiles": (model.Frontend, "errorfiles"),
    "persist": (model.Backend, "persist"),
    "cookie_options": (model.Cookie, "indirect"),
    "log_facility": (model.Global, "log_facility"),
    "buffer_request": (model.Frontend, "buffer_request"),
}
ALL_KEYS = frozenset(_FIELDS)


def product_keys() -> frozenset[str]:
    """The keys of `ALL_KEYS` this build's loader accepts."""
    return frozenset(key for key, (cls, name) in _FIELDS.items() if name in cls.model_fields)
