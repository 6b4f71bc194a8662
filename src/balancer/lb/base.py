"""The interface every balancing algorithm implements, and the registry of algorithms.

An algorithm is built from the servers usable right now (`build(servers)`) and answers
`pick(key, avoid)`. It never filters by state: lb.pool hands it only usable servers and
builds a new selector whenever that set or a weight changes. `avoid` is the server that
just failed, so a retry lands elsewhere when another server exists.
"""

from __future__ import annotations

import importlib
from typing import Protocol

from balancer.runtime.state import ServerRuntime


class Selector(Protocol):
    def pick(self, key: bytes | None, avoid: ServerRuntime | None) -> ServerRuntime | None:
        """The server for a new session; None only when there is no server at all."""
        ...


class SelectorFactory(Protocol):
    def __call__(self, servers: list[ServerRuntime]) -> Selector: ...


# config name -> "module:callable"; imported on first use so unused algorithms cost nothing.
REGISTRY: dict[str, str] = {
    "roundrobin": "balancer.lb.roundrobin:SmoothWeightedRoundRobin",
    "static-rr": "balancer.lb.static_rr:StaticRoundRobin",
}


def build_selector(name: str, servers: list[ServerRuntime]) -> Selector:
    """Build the named algorithm over `servers`. Raises KeyError for an unknown name."""
    module_name, _, attr = REGISTRY[name].partition(":")
    factory: SelectorFactory = getattr(importlib.import_module(module_name), attr)
    return factory(servers)
