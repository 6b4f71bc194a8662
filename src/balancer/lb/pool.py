"""A backend's pool of usable servers: the one place that filters servers by state.

It rebuilds the algorithm's selector whenever the backend reports a change (state, health,
weight) and swaps it in whole, so a pick never sees a server it may not use.
"""

from __future__ import annotations

from balancer.lb.base import Selector, build_selector
from balancer.runtime.state import BackendRuntime, ServerRuntime


class ServerPool:
    __slots__ = ("backend", "selector", "usable")

    def __init__(self, backend: BackendRuntime) -> None:
        self.backend = backend
        self.usable: list[ServerRuntime] = []
        self.selector: Selector = build_selector(backend.config.balance, [], hash_type=backend.config.hash_type)
        self.rebuild()
        backend.on_change(self.rebuild)

    def rebuild(self) -> None:
        """Usable primaries; when none is, the usable backups (SPEC "Server states")."""
        servers = self.backend.servers
        usable = [s for s in servers if s.usable and not s.config.backup]
        if not usable:
            usable = [s for s in servers if s.usable and s.config.backup]
        self.usable = usable
        self.selector = build_selector(self.backend.config.balance, usable, hash_type=self.backend.config.hash_type)

    def pick(self, key: bytes | None = None, avoid: ServerRuntime | None = None) -> ServerRuntime | None:
        """The server for a new session, or None when no server is usable."""
        return self.selector.pick(key, avoid)
