"""First available server (HAProxy's `balance first`).

The first server in configuration order with a free slot (`load() < maxconn`, node-wide) takes the
request; the next one only gets traffic once the first is full. Used to pack load onto as
few servers as possible so the others can be powered down. A server with maxconn 0 is
unlimited, so it takes everything and the servers after it stay idle. Weights are ignored.

When every server is full the first one (not to be avoided) is returned: the proxy sees it
is at its maxconn and queues the request (net, BackendContext.waiting).
"""

from __future__ import annotations

from balancer.lb.base import Selector
from balancer.runtime.state import ServerRuntime


class First(Selector):
    __slots__ = ("_servers", "_slots")

    def __init__(self, servers: list[ServerRuntime]) -> None:
        # lb.pool keeps configuration order; maxconn is read once, the config is frozen.
        self._servers = list(servers)
        self._slots = [(s, s.config.maxconn) for s in self._servers]

    def pick(self, key: bytes | None, avoid: ServerRuntime | None) -> ServerRuntime | None:
        full = None
        for server, maxconn in self._slots:
            if server is avoid:
                continue
            if not maxconn or server.load() < maxconn:
                return server
            if full is None:
                full = server
        if full is not None:
            return full
        return self._servers[0] if self._servers else None
