"""Per-frontend and per-backend settings resolved once, for the connection classes.

Connections read plain attributes from these objects on the hot path instead of walking
the config model. A reload builds new contexts; connections keep the ones they started with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from balancer.config.model import Backend, Frontend
from balancer.lb.pool import ServerPool
from balancer.net.upstream import UpstreamPool
from balancer.route.rules import RuleSet
from balancer.runtime.record import LogRecord
from balancer.runtime.state import BackendRuntime

LogSink = Callable[[LogRecord], None]


class BackendContext:
    def __init__(self, config: Backend, runtime: BackendRuntime) -> None:
        self.config = config
        self.name = config.name
        self.runtime = runtime
        self.servers = ServerPool(runtime)
        self.idle = UpstreamPool(config.pool.max_idle_per_server, config.pool.idle_timeout)
        self.connect_timeout = config.timeouts.connect
        self.server_timeout = config.timeouts.server
        self.retries = config.retries
        self.redispatch = config.redispatch
        self.host_header = config.host.encode()

    def close(self) -> None:
        self.idle.close_all()


class FrontendContext:
    def __init__(self, config: Frontend, backends: dict[str, BackendContext], log: LogSink) -> None:
        self.config = config
        self.name = config.name
        self.rules = RuleSet(config)
        self.backends = backends
        self.log = log
        self.forwardfor = config.forwardfor
        self.client_timeout = config.timeouts.client
        self.request_timeout = config.timeouts.http_request
        self.keep_alive_timeout = config.timeouts.http_keep_alive
        self.tunnel_timeout = config.timeouts.tunnel
        self.max_request_line = config.limits.request_line
        self.max_header_bytes = config.limits.headers
        self.max_header_count = config.limits.header_count
        self.max_body = config.limits.body
        self.default_backend = backends.get(config.default_backend or "")
        # Live client connections, so a stop can close idle ones and wait for busy ones.
        self.sessions: set[Stoppable] = set()
        self.stopping = False
        self.connections = 0
        self.requests = 0


class Stoppable(Protocol):
    """What a frontend's live connections offer to a graceful stop."""

    def stop(self) -> None:
        """Close now if idle; otherwise close as soon as the exchange in flight ends."""

    def abort(self) -> None:
        """Close now, whatever is in flight."""
