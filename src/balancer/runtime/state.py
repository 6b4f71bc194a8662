"""Live state of servers and backends inside one worker.

A server's admin state (set by the operator: ready, drain, maint) is kept apart from its
health (set by checks: up, down); it is usable for new sessions only when both allow it.
Whoever depends on the set of usable servers (lb.pool) listens for changes on the backend.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Final, Literal

from balancer.config.model import Backend, Server
from balancer.runtime.node_count import NodeCount

# Bounds of the response-time histogram, in ms (runtime.shared lays the buckets out).
RESPONSE_BUCKETS_MS: Final = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
_BOUNDS: Final[tuple[float, ...]] = tuple(float(bound) for bound in RESPONSE_BUCKETS_MS)

# Responses counted per frontend and backend by status class, in this order
# (status_class gives the index); "other" is a status outside 100-599.
STATUS_CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")
# Failed exchanges with servers counted per backend, by cause (index constants below).
ERROR_CAUSES: Final = ("connect_refused", "connect_timeout", "connect_error", "response_broken", "response_timeout")
CONNECT_REFUSED: Final = 0
CONNECT_TIMEOUT: Final = 1
CONNECT_ERROR: Final = 2
RESPONSE_BROKEN: Final = 3
RESPONSE_TIMEOUT: Final = 4


def status_class(status: int) -> int:
    """The index in STATUS_CLASSES of a status sent to a client."""
    return status // 100 - 1 if 100 <= status < 600 else 5


AdminState = Literal["ready", "drain", "maint"]
Health = Literal["up", "down"]


def _is_ip(host: str) -> bool:
    """Whether `host` is a numeric IPv4 or IPv6 address without a zone ("fe80::1%eth0"
    needs the resolver's scope lookup)."""
    if "%" in host:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class ServerRuntime:
    """One server of one backend, with its counters."""

    __slots__ = (
        "active",
        "address",
        "admin_state",
        "agent_weight",
        "backend_name",
        "bytes_in",
        "bytes_out",
        "config",
        "connect_failures",
        "ejected",
        "errors",
        "failure_streak",
        "health",
        "host",
        "maxconn",
        "name",
        "node",
        "numeric",
        "port",
        "queued",
        "requests",
        "resp_buckets",
        "resp_time_count",
        "resp_time_sum",
        "weight",
    )

    def __init__(self, config: Server, backend_name: str) -> None:
        self.config = config
        self.name = config.name
        self.backend_name = backend_name
        self.address = config.address
        self.host = config.address.host
        self.port = config.address.port
        # A numeric IP address, which a connect needs no resolver for (net.plain_connect).
        self.numeric = not config.address.is_unix and _is_ip(self.host)
        self.weight = config.weight
        # Read per request: the config's attribute is an interpreted object's, a lookup.
        self.maxconn = config.maxconn
        # Percent from an agent, applied by lb.agent_load; -1: none. The workers leave it at
        # -1 because the master publishes weights already scaled (runtime.master_state).
        self.agent_weight = -1
        self.admin_state: AdminState = config.state
        self.health: Health = "up"
        self.active = 0  # requests or connections in flight from this worker
        # The node-wide view of `active` when several workers share the server; None: one worker.
        self.node: NodeCount | None = None
        self.queued = 0
        self.requests = 0
        self.bytes_in = 0  # from clients towards this server
        self.bytes_out = 0  # from this server towards clients
        self.errors = 0
        self.connect_failures = 0
        self.resp_time_sum = 0.0
        self.resp_time_count = 0
        self.resp_buckets = [0] * (len(RESPONSE_BUCKETS_MS) + 1)  # see runtime.shared
        self.failure_streak = 0  # consecutive failed exchanges (passive observation)
        self.ejected = False  # taken out by passive observation in this worker

    def load(self) -> int:
        """Requests (TCP: connections) in flight on this server from every worker of the
        node: what balancing algorithms and maxconn compare."""
        node = self.node
        if node is None:
            return self.active
        return self.active + node.others()

    def take(self) -> None:
        """One more request in flight, on a server without maxconn."""
        self.active += 1
        node = self.node
        if node is not None:
            node.publish(self.active)

    def try_take(self, maxconn: int) -> bool:
        """One more request in flight if the node then has at most `maxconn` (>= 1) on this
        server; False, and nothing taken, when it is full."""
        node = self.node
        if node is None:
            if self.active >= maxconn:
                return False
        elif not node.try_take(self.active, maxconn):
            return False
        self.active += 1
        return True

    def release(self) -> None:
        """A request in flight (taken by take or try_take) is over."""
        self.active -= 1
        node = self.node
        if node is not None:
            node.publish(self.active)

    def observe_response(self, ms: float) -> None:
        """Count a response that took `ms` milliseconds to its head: the mean and the
        histogram bucket of the first bound it does not exceed."""
        self.resp_time_sum += ms
        self.resp_time_count += 1
        index = 0
        for bound in _BOUNDS:  # most responses stop at the first bounds: no bisect call
            if ms <= bound:
                break
            index += 1
        buckets = self.resp_buckets  # `x[i] += 1` is a generic call, compiled
        buckets[index] = buckets[index] + 1

    @property
    def usable(self) -> bool:
        """May take new sessions: ready, healthy, with a weight, and not ejected."""
        return self.admin_state == "ready" and self.health == "up" and self.weight > 0 and not self.ejected

    def __repr__(self) -> str:
        return f"<server {self.backend_name}/{self.name} {self.address} {self.admin_state}/{self.health}>"


class BackendRuntime:
    """A backend's servers and counters. State changes go through the setters, which tell
    the listeners (the backend's server pool) so they can rebuild what depends on them."""

    def __init__(self, config: Backend) -> None:
        self.config = config
        self.name = config.name
        self.servers = [ServerRuntime(server, config.name) for server in config.server]
        self.by_name = {server.name: server for server in self.servers}
        self.requests = 0
        self.responses = [0] * len(STATUS_CLASSES)  # by status_class
        self.errors_by_cause = [0] * len(ERROR_CAUSES)
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def changed(self) -> None:
        for listener in self._listeners:
            listener()

    def set_state(self, server: ServerRuntime, state: AdminState) -> None:
        server.admin_state = state
        self.changed()

    def set_weight(self, server: ServerRuntime, weight: int) -> None:
        server.weight = weight
        self.changed()

    def set_health(self, server: ServerRuntime, health: Health) -> None:
        server.health = health
        self.changed()
