"""Which client tables (runtime.client_table) a config needs, and who keeps them.

The master makes them and hands their descriptors to each generation of workers
(`BALANCER_TABLES`: a JSON object, table name -> descriptor). Names:

- `stick:BACKEND`: the stick table of a backend with `stick`. A reload whose config has
  the same backend with the same `stick` settings (size, expire) gets the same table, so
  clients keep their servers across reloads; old and new workers share it meanwhile.
- `limit:FRONTEND`: the per-client counters of a frontend with `rate_limit` or
  `conn_limit`. Their cells are per worker slot and slots are per generation, so each
  generation gets a new one (a reload starts every client's allowance afresh).

A table lives while a generation uses it or, for a stick table, while the current
config could hand it to the next generation.
"""

from __future__ import annotations

from balancer.config.model import Config, Frontend
from balancer.runtime.client_table import ClientTable

# Clients a frontend's limits follow at once: past that, the least recently seen of a
# bucket are forgotten (and get a fresh allowance when they come back).
LIMIT_TABLE_SIZE = 65536
# Per client and worker: tag; requests: period, count, previous count; new connections:
# period, count, previous count; open connections.
LIMIT_CELLS = 8


def limited(frontend: Frontend) -> bool:
    return frontend.rate_limit is not None or frontend.conn_limit is not None


def limit_expire(frontend: Frontend) -> float:
    """How long a client's counters matter after its last request: two windows."""
    windows = [1.0]
    if frontend.rate_limit is not None:
        windows.append(frontend.rate_limit.window)
    if frontend.conn_limit is not None:
        windows.append(frontend.conn_limit.per)
    return 2 * max(windows)


class TableKeeper:
    """The master's client tables, by name, counted by the generations that use them."""

    def __init__(self) -> None:
        self._sticks: dict[str, tuple[tuple[int, float], ClientTable]] = {}
        self._users: dict[int, int] = {}  # id(table) -> generations using it (+1 if kept in _sticks)
        self._tables: dict[int, ClientTable] = {}

    def adopt(self, config: Config, slots: int) -> dict[str, ClientTable]:
        """The tables of a new generation running `config` with `slots` workers."""
        tables: dict[str, ClientTable] = {}
        wanted_sticks = set()
        for backend in config.backend:
            if backend.stick is None:
                continue
            wanted_sticks.add(backend.name)
            settings = (backend.stick.size, backend.stick.expire)
            kept = self._sticks.get(backend.name)
            if kept is None or kept[0] != settings:
                if kept is not None:
                    self._drop(kept[1])
                table = ClientTable.create(backend.stick.size, backend.stick.expire)
                self._hold(table)
                self._sticks[backend.name] = (settings, table)
            tables[f"stick:{backend.name}"] = self._sticks[backend.name][1]
        for name in list(self._sticks):
            if name not in wanted_sticks:
                self._drop(self._sticks.pop(name)[1])
        for frontend in config.frontend:
            if limited(frontend):
                tables[f"limit:{frontend.name}"] = ClientTable.create(
                    LIMIT_TABLE_SIZE, limit_expire(frontend), LIMIT_CELLS, slots
                )
        for table in tables.values():
            self._hold(table)
        return tables

    def stick_tables(self) -> dict[str, ClientTable]:
        """The stick tables kept now, by backend name (what [peers] replicates)."""
        return {name: table for name, (_, table) in self._sticks.items()}

    def release(self, tables: dict[str, ClientTable]) -> None:
        """A generation using `tables` is gone."""
        for table in tables.values():
            self._drop(table)
        tables.clear()

    @staticmethod
    def retire_slot(tables: dict[str, ClientTable], slot: int) -> None:
        """The worker of `slot` died: what it counted (open connections) died with it."""
        for table in tables.values():
            table.clear_slot(slot)

    def _hold(self, table: ClientTable) -> None:
        self._tables[id(table)] = table
        self._users[id(table)] = self._users.get(id(table), 0) + 1

    def _drop(self, table: ClientTable) -> None:
        users = self._users.get(id(table), 0) - 1
        if users > 0:
            self._users[id(table)] = users
            return
        self._users.pop(id(table), None)
        self._tables.pop(id(table), None)
        table.close()
