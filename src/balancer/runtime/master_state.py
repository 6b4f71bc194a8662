"""What the master knows about servers and counters, across workers and reloads.

Server records (admin state, health, weight) live here and are written into every live
shared segment, so old workers finishing their grace obey a drain as well. A value set at
run time survives a reload while the config's own value for it is unchanged; editing the
file wins over an older run-time change.

Counters are totals since the master started: the sum of every live segment's worker
blocks plus what retired workers and generations left behind (folded into `base` when
they go), so they never go backwards across reloads or worker restarts. `active` is a
gauge and is never folded.
"""

from __future__ import annotations

from typing import Any

from balancer.config.model import Config
from balancer.runtime.shared import FRONTEND_COUNTERS, SERVER_COUNTERS, Layout, ServerRecord, SharedState
from balancer.runtime.state import AdminState, Health

ServerKey = tuple[str, str]
_ACTIVE = SERVER_COUNTERS.index("active")


class MasterState:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.records: dict[ServerKey, ServerRecord] = {}
        self._from_config: dict[ServerKey, tuple[str, int]] = {}
        self._runtime_set: set[ServerKey] = set()
        self.base_servers: dict[ServerKey, list[int]] = {}
        self.base_frontends: dict[str, list[int]] = {}
        self.segments: list[SharedState] = []

    def adopt(self, config: Config, slots: int) -> SharedState:
        """A segment for a new generation running `config` with `slots` workers."""
        records: dict[ServerKey, ServerRecord] = {}
        from_config: dict[ServerKey, tuple[str, int]] = {}
        for backend in config.backend:
            for server in backend.server:
                key = (backend.name, server.name)
                configured = (server.state, server.weight)
                from_config[key] = configured
                old = self.records.get(key)
                if old is not None and key in self._runtime_set and self._from_config.get(key) == configured:
                    records[key] = old
                else:
                    self._runtime_set.discard(key)
                    health: Health = old.health if old is not None else "up"
                    agent = old.agent_weight if old is not None else -1
                    records[key] = ServerRecord(server.state, health, server.weight, agent)
        self.config = config
        self.records = records
        self._from_config = from_config
        layout = Layout(config, slots)
        segment = SharedState.create(layout)
        for key, record in records.items():
            segment.write_server(layout.server_index[key], record)
        segment.publish()
        self.segments.append(segment)
        return segment

    # -- changes ---------------------------------------------------------------------------

    def update(
        self,
        key: ServerKey,
        *,
        admin_state: AdminState | None = None,
        weight: int | None = None,
        health: Health | None = None,
        agent_weight: int | None = None,
        by_operator: bool = True,
    ) -> ServerRecord:
        """Change a server's record everywhere. Raises KeyError for an unknown server."""
        old = self.records[key]
        new = ServerRecord(
            admin_state if admin_state is not None else old.admin_state,
            health if health is not None else old.health,
            weight if weight is not None else old.weight,
            agent_weight if agent_weight is not None else old.agent_weight,
        )
        self.records[key] = new
        if by_operator and (admin_state is not None or weight is not None):
            self._runtime_set.add(key)
        for segment in self.segments:
            index = segment.layout.server_index.get(key)
            if index is not None:
                segment.write_server(index, new)
                segment.publish()
        return new

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

    # -- reading ---------------------------------------------------------------------------

    def server_totals(self) -> dict[ServerKey, dict[str, int]]:
        totals = {key: list(values) for key, values in self.base_servers.items()}
        for segment in self.segments:
            layout = segment.layout
            for slot in range(layout.slots):
                for index, key in enumerate(layout.servers):
                    row = totals.setdefault(key, [0] * len(SERVER_COUNTERS))
                    for i, value in enumerate(segment.read_server_counters(slot, index)):
                        row[i] += value
        return {key: dict(zip(SERVER_COUNTERS, row, strict=True)) for key, row in totals.items()}

    def frontend_totals(self) -> dict[str, dict[str, int]]:
        totals = {name: list(values) for name, values in self.base_frontends.items()}
        for segment in self.segments:
            layout = segment.layout
            for slot in range(layout.slots):
                for index, name in enumerate(layout.frontends):
                    row = totals.setdefault(name, [0] * len(FRONTEND_COUNTERS))
                    for i, value in enumerate(segment.read_frontend_counters(slot, index)):
                        row[i] += value
        return {name: dict(zip(FRONTEND_COUNTERS, row, strict=True)) for name, row in totals.items()}
