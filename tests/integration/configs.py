"""Build balancer TOML configs for integration scenarios.

A scenario names only what it is about; everything else gets a quiet default: one frontend
"www" on 127.0.0.1:0 in front of one backend "web", access log off.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class HasAddress(Protocol):
    name: str

    @property
    def address(self) -> str: ...


ServerSpec = HasAddress | tuple[str, str] | Mapping[str, Any]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _table(header: str, values: Mapping[str, Any]) -> list[str]:
    """`[[header]]` with its keys; values that are lists of dicts become `[[header.key]]` tables."""
    lines = [f"[[{header}]]"]
    nested: list[tuple[str, Sequence[Mapping[str, Any]]]] = []
    for key, value in values.items():
        if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            nested.append((key, value))
        else:
            lines.append(f"{toml_key(key)} = {toml_value(value)}")
    for key, tables in nested:
        for table in tables:
            lines.append("")
            lines.extend(_table(f"{header}.{key}", table))
    return lines


def server_entry(spec: ServerSpec) -> dict[str, Any]:
    if isinstance(spec, Mapping):
        return dict(spec)
    if isinstance(spec, tuple):
        return {"name": spec[0], "address": spec[1]}
    return {"name": spec.name, "address": spec.address}


def make_config(
    servers: Sequence[ServerSpec],
    *,
    mode: str = "http",
    frontend: Mapping[str, Any] | None = None,
    backend: Mapping[str, Any] | None = None,
    global_: Mapping[str, Any] | None = None,
    extra_backends: Sequence[tuple[Mapping[str, Any], Sequence[ServerSpec]]] = (),
) -> str:
    """One frontend "www" (127.0.0.1:0) -> backend "web" with `servers`, in `mode`."""
    lines = ["[global]"]
    for key, value in {"log": "none", **(global_ or {})}.items():
        lines.append(f"{toml_key(key)} = {toml_value(value)}")
    lines.append("")
    lines += _table(
        "frontend",
        {"name": "www", "bind": ["127.0.0.1:0"], "mode": mode, "default_backend": "web", **(frontend or {})},
    )
    backends = [({"name": "web", **(backend or {})}, servers), *extra_backends]
    for table, members in backends:
        lines.append("")
        lines += _table("backend", {"mode": mode, **table, "server": [server_entry(s) for s in members]})
    return "\n".join(lines) + "\n"


def frontend_port(balancer: Any, frontend: str = "www") -> int:
    """The port the frontend bound (configs bind 127.0.0.1:0)."""
    return int(balancer.addresses(frontend)[0][1])
