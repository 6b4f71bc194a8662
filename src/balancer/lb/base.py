"""The interface every balancing algorithm implements, and the registry of algorithms.

An algorithm is built from the servers usable right now (`build(servers)`) and answers
`pick(key, avoid)`. It never filters by state: lb.pool hands it only usable servers and
builds a new selector whenever that set or a weight changes. `avoid` is the server that
just failed, so a retry lands elsewhere when another server exists.

`key` is the request's hash key (hash_key: the client address, URI, header or parameter
value) for the algorithms in USES_KEY; a selector given None instead spreads by weighted
round robin. Constructors take the server list and, keyword-only with defaults, what tests
inject (random source, clock, stores, table size).

Algorithms that learn from traffic keep what they learn outside the selector, so it outlives
rebuilds, and the proxy feeds it:
- least_time: `balancer.lb.least_time.observe(server, seconds)` per answered request;
- least_traffic: `balancer.lb.least_traffic.observe_bytes(server, n)` as bytes flow.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from mypy_extensions import trait

from balancer.runtime.state import ServerRuntime


@trait
class Selector:
    """What every algorithm is. A mypyc trait: the pool's pick per request is a native call
    (through a Protocol it was a Python method call)."""

    def pick(self, key: bytes | None, avoid: ServerRuntime | None) -> ServerRuntime | None:
        """The server for a new session; None only when there is no server at all."""
        raise NotImplementedError


class SelectorFactory(Protocol):
    """A selector class: built from the usable servers, with keyword-only extras."""

    def __call__(self, servers: list[ServerRuntime], /, **options: Any) -> Selector: ...


# config name -> "module:callable"; imported on first use so unused algorithms cost nothing.
REGISTRY: dict[str, str] = {
    "roundrobin": "balancer.lb.roundrobin:SmoothWeightedRoundRobin",
    "static-rr": "balancer.lb.static_rr:StaticRoundRobin",
    "leastconn": "balancer.lb.leastconn:LeastConnections",
    "first": "balancer.lb.first:First",
    "random": "balancer.lb.p2c:PowerOfTwoChoices",
    "source": "balancer.lb.keyhash:KeyHash",
    "uri": "balancer.lb.keyhash:KeyHash",
    "hdr": "balancer.lb.keyhash:KeyHash",
    "url_param": "balancer.lb.keyhash:KeyHash",
    "maglev": "balancer.lb.maglev:Maglev",
    "ring": "balancer.lb.ring:Ring",
    "least_time": "balancer.lb.least_time:LeastTime",
    "least_traffic": "balancer.lb.least_traffic:LeastTraffic",
    "agent_load": "balancer.lb.agent_load:AgentLoad",
}

# Algorithms that hash a request key and follow the backend's `hash_type` ("map" or
# "consistent"). The others take the key too (maglev, ring) but have one way of hashing it.
KEYED: frozenset[str] = frozenset({"source", "uri", "hdr", "url_param"})
# Algorithms whose pick uses the key at all: for the others the proxy need not extract one.
USES_KEY: frozenset[str] = KEYED | {"maglev", "ring"}

_factories: dict[str, SelectorFactory] = {}


def build_selector(name: str, servers: list[ServerRuntime], *, hash_type: str = "map", **options: Any) -> Selector:
    """Build the named algorithm over `servers`. Raises KeyError for an unknown name.

    `hash_type` (the backend's) is passed to the KEYED algorithms and ignored by the others.
    `options` are keyword arguments for the algorithm's constructor, for tests and tools
    (`rng=`, `table_size=`, `store=`, ...); the proxy passes none.
    """
    factory = _factories.get(name)
    if factory is None:
        module_name, _, attr = REGISTRY[name].partition(":")
        factory = _factories[name] = getattr(importlib.import_module(module_name), attr)
    if name in KEYED:
        options["hash_type"] = hash_type
    return factory(servers, **options)
