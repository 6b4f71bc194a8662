"""What the master knows about servers and counters, across workers and reloads.

Server records (admin state, health, weight) live here and are written into every live
shared segment, so old workers finishing their grace obey a drain as well. A value set at
run time survives a reload while the config's own value for it is unchanged; editing the
file wins over an older run-time change.

Counters are totals since the master started: the sum of every live segment's worker
blocks plus what retired workers and generations left behind (folded into `base` when
they go), so they never go backwards across reloads or worker restarts. `active` is a
gauge and is never folded, nor is a backend's `queued`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, cast

from balancer.config.model import Config
from balancer.runtime.shared import (
    BACKEND_COUNTERS,
    FRONTEND_COUNTERS,
    SERVER_COUNTERS,
    Layout,
    ServerRecord,
    SharedState,
)
from balancer.runtime.state import AdminState, Health

ServerKey = tuple[str, str]
_ACTIVE = SERVER_COUNTERS.index("active")
_QUEUED = BACKEND_COUNTERS.index("queued")


@dataclass(frozen=True)
class ServerStatus:
    """Everything the master knows about a server's state, and who said what."""

    admin_state: AdminState  # set by the operator (or the file)
    health: Health  # set by active checks and passive observation
    weight: int  # set by the operator (or the file)
    agent_state: str = "ready"  # what the agent said: ready, drain, maint or down
    agent_weight: int = -1  # percent, -1 when no agent reported
    ramp: float = 1.0  # slowstart: share of the weight while a recovered server warms up
    last_check: str = ""
    changed_at: float = 0.0  # time.time() of the last state change

    @property
    def usable(self) -> bool:
        """Takes new sessions, as workers see it (operator, agent, checks and weight)."""
        record = self.effective()
        return record.admin_state == "ready" and record.health == "up" and record.weight > 0

    def effective(self) -> ServerRecord:
        """What workers act on: the stricter of operator and agent, the scaled weight."""
        admin: AdminState = self.admin_state
        if _SEVERITY.get(self.agent_state, 0) > _SEVERITY[admin]:
            admin = cast(AdminState, self.agent_state)
        health: Health = "down" if self.health == "down" or self.agent_state == "down" else "up"
        weight = self.weight
        if self.agent_weight >= 0:
            # A positive share never rounds a serving server down to no traffic at all.
            weight = max(1, weight * self.agent_weight // 100) if weight and self.agent_weight else 0
        if self.ramp < 1.0 and weight:
            weight = max(1, int(weight * self.ramp))
        return ServerRecord(admin, health, weight, -1)


_SEVERITY = {"ready": 0, "drain": 1, "maint": 2}


class MasterState:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.records: dict[ServerKey, ServerStatus] = {}
        self._from_config: dict[ServerKey, dict[str, Any]] = {}
        self._runtime_set: dict[ServerKey, set[str]] = {}  # fields the operator set at run time
        self.base_servers: dict[ServerKey, list[int]] = {}
        self.base_frontends: dict[str, list[int]] = {}
        self.base_backends: dict[str, list[int]] = {}
        self.segments: list[SharedState] = []

    def adopt(self, config: Config, slots: int) -> SharedState:
        """A segment for a new generation running `config` with `slots` workers."""
        records: dict[ServerKey, ServerStatus] = {}
        from_config: dict[ServerKey, dict[str, Any]] = {}
        for backend in config.backend:
            for server in backend.server:
                key = (backend.name, server.name)
                configured = {"admin_state": server.state, "weight": server.weight}
                from_config[key] = configured
                old = self.records.get(key)
                if old is None:
                    records[key] = ServerStatus(server.state, "up", server.weight, changed_at=time.time())
                    continue
                # Field by field: a value set at run time stays while the file's own value
                # for that field is unchanged; a new value in the file wins.
                kept = self._runtime_set.get(key, set())
                before = self._from_config.get(key, {})
                changes: dict[str, Any] = {}
                for field, value in configured.items():
                    if field in kept and before.get(field) == value:
                        continue
                    kept.discard(field)
                    changes[field] = value
                # What no longer has a source is forgotten: without a check, no check result
                # may keep a server down; without an agent, no agent state or weight applies.
                if backend.check is None:
                    changes["health"] = "up"
                    changes["ramp"] = 1.0
                if backend.agent is None:
                    changes["agent_state"] = "ready"
                    changes["agent_weight"] = -1
                records[key] = replace(old, **changes)
        self.config = config
        self.records = records
        self._from_config = from_config
        layout = Layout(config, slots)
        segment = SharedState.create(layout)
        for key, status in records.items():
            segment.write_server(layout.server_index[key], status.effective())
        segment.publish()
        self.segments.append(segment)
        return segment

    # -- changes ---------------------------------------------------------------------------

    def update(self, key: ServerKey, *, by_operator: bool = False, **changes: Any) -> ServerStatus:
        """Change fields of a server's status (see ServerStatus) and publish the effect to
        every live segment. Raises KeyError for an unknown server."""
        old = self.records[key]
        new = replace(old, **changes)
        if (new.admin_state, new.health, new.agent_state) != (old.admin_state, old.health, old.agent_state):
            new = replace(new, changed_at=time.time())
        self.records[key] = new
        if by_operator:
            self._runtime_set.setdefault(key, set()).update(f for f in changes if f in ("admin_state", "weight"))
        if new.effective() != old.effective():
            for segment in self.segments:
                index = segment.layout.server_index.get(key)
                if index is not None:
                    segment.write_server(index, new.effective())
                    segment.publish()
        return new

    def usable_in(self, backend: str) -> tuple[int, int]:
        """(usable, total) servers of `backend` as workers see them now."""
        statuses = [status for (name, _), status in self.records.items() if name == backend]
        return sum(status.usable for status in statuses), len(statuses)

    # -- workers coming and going ----------------------------------------------------------

    def retire_slot(self, segment: SharedState, slot: int) -> None:
        """A worker of `segment` is gone: keep what it counted, free its block."""
        self._fold(segment, [slot])
        segment.clear_slot(slot)

    def retire(self, segment: SharedState) -> None:
        """Every worker of `segment` is gone."""
        if segment in self.segments:
            self._fold(segment, range(segment.layout.slots))
            self.segments.remove(segment)
            segment.close()

    def _fold(self, segment: SharedState, slots: Any) -> None:
        layout = segment.layout
        for slot in slots:
            for index, key in enumerate(layout.servers):
                values = segment.read_server_counters(slot, index)
                base = self.base_servers.setdefault(key, [0] * len(SERVER_COUNTERS))
                for i, value in enumerate(values):
                    if i != _ACTIVE:
                        base[i] += value
            for index, name in enumerate(layout.frontends):
                frontend_values = segment.read_frontend_counters(slot, index)
                frontend_base = self.base_frontends.setdefault(name, [0] * len(FRONTEND_COUNTERS))
                for i, value in enumerate(frontend_values):
                    frontend_base[i] += value
            for index, name in enumerate(layout.backends):
                backend_values = segment.read_backend_counters(slot, index)
                backend_base = self.base_backends.setdefault(name, [0] * len(BACKEND_COUNTERS))
                for i, value in enumerate(backend_values):
                    if i != _QUEUED:  # a gauge: what a gone worker had waiting is no more
                        backend_base[i] += value

    # -- reading ---------------------------------------------------------------------------

    def server_totals(self) -> dict[ServerKey, dict[str, int]]:
        return self._totals(self.base_servers, SERVER_COUNTERS, lambda layout: layout.servers, "read_server_counters")

    def frontend_totals(self) -> dict[str, dict[str, int]]:
        return self._totals(
            self.base_frontends, FRONTEND_COUNTERS, lambda layout: layout.frontends, "read_frontend_counters"
        )

    def backend_totals(self) -> dict[str, dict[str, int]]:
        return self._totals(
            self.base_backends, BACKEND_COUNTERS, lambda layout: layout.backends, "read_backend_counters"
        )

    def _totals(
        self, base: dict[Any, list[int]], names: tuple[str, ...], keys: Callable[[Layout], list[Any]], reader: str
    ) -> dict[Any, dict[str, int]]:
        """`base` plus every worker block of every live segment, by key, as {counter: total}."""
        totals = {key: list(values) for key, values in base.items()}
        for segment in self.segments:
            read = getattr(segment, reader)
            for slot in range(segment.layout.slots):
                for index, key in enumerate(keys(segment.layout)):
                    row = totals.setdefault(key, [0] * len(names))
                    for i, value in enumerate(read(slot, index)):
                        row[i] += value
        return {key: dict(zip(names, row, strict=True)) for key, row in totals.items()}
