"""Building blocks for the TOML files the e2e tier hands to `balancer run -c`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["server_blocks", "toml_value"]


def toml_value(value: Any) -> str:
    """A Python str/int/bool/list/dict as a TOML inline value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_value(str(k))} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def server_blocks(servers: Iterable[Any], **common: Any) -> str:
    """`[[backend.server]]` tables for `servers`.

    Each item is a TaggedBackend/TcpEchoServer (its `.name` and `.address` are used) or a
    dict of server keys (`{"name": "s1", "address": "127.0.0.1:9", "weight": 2}`).
    Keys in `common` are added to every server unless the item sets them.
    """
    out = []
    for server in servers:
        keys = dict(server) if isinstance(server, dict) else {"name": server.name, "address": server.address}
        for key, value in common.items():
            keys.setdefault(key, value)
        lines = ["  [[backend.server]]"] + [f"  {key} = {toml_value(value)}" for key, value in keys.items()]
        out.append("\n".join(lines))
    return "\n".join(out) + "\n"
