"""The node's stick tables as `[peers]` sees them (cluster.peers.StickStore), in the master.

The tables themselves are the master's shared client tables (runtime.client_tables), one
per backend with `stick`, which every worker reads and writes. What the workers wrote comes
from each live generation's journal (runtime.stick_journal), not from scanning the tables.
Entries from a peer are written into the tables directly, not into a journal: they are
never sent back.

Names travel, not numbers: a backend by its name, a server by its name (a table stores
route.persistence.server_id of it), a client by its 16-byte address (the table's key). An
entry naming a backend without `stick` here, or a server this backend lacks, is ignored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from balancer.config.model import Config
from balancer.proto.peers import StickUpdate
from balancer.route.persistence import server_id
from balancer.runtime.client_table import ClientTable
from balancer.runtime.stick_journal import StickJournal


def _key_bytes(key0: int, key1: int) -> bytes:
    return key0.to_bytes(8, "big", signed=True) + key1.to_bytes(8, "big", signed=True)


def _key_words(key: bytes) -> tuple[int, int] | None:
    if len(key) != 16:
        return None
    return int.from_bytes(key[:8], "big", signed=True), int.from_bytes(key[8:], "big", signed=True)


class NodeStickStore:
    """`tables()`: backend name -> its stick table now; `journals()`: (the config a
    generation runs, its journal) for every live generation; `config()`: the current one."""

    def __init__(
        self,
        tables: Callable[[], dict[str, ClientTable]],
        journals: Callable[[], list[tuple[Config, StickJournal]]],
        config: Callable[[], Config],
    ) -> None:
        self._tables = tables
        self._journals = journals
        self._config = config
        # Server id -> name per backend, for the config they were made from: made once per
        # config, not per entry (a full copy is 100,000 entries, a server id a hash).
        self._names_of: Config | None = None
        self._names: dict[str, dict[int, str]] = {}

    @staticmethod
    def _now() -> int:
        return int(time.monotonic() * 1000)

    def _servers(self, backend: str) -> dict[int, str]:
        config = self._config()
        if config is not self._names_of:
            self._names_of = config
            self._names = {b.name: {server_id(s.name): s.name for s in b.server} for b in config.backend}
        return self._names.get(backend, {})

    def snapshot(self) -> Iterator[StickUpdate]:
        now = self._now()
        for backend, table in self._tables().items():
            names = self._servers(backend)
            for index, key0, key1, value in table.live(now):
                server = names.get(value)
                if server is not None:
                    left = table.expire_ms - (now - table.used_at(index))
                    yield StickUpdate(backend, _key_bytes(key0, key1), server, max(left, 0))

    def apply(self, update: StickUpdate) -> None:
        table = self._tables().get(update.table)
        key = _key_words(update.key)
        value = server_id(update.server)
        if table is None or key is None or self._servers(update.table).get(value) != update.server:
            return
        # Written as last used when it would be on the sender, so it expires there and here alike.
        used = self._now() - max(table.expire_ms - update.remaining_ms, 0)
        table.insert(key[0], key[1], value, used)

    def take_changes(self) -> tuple[list[StickUpdate], bool]:
        changes: list[StickUpdate] = []
        lost = False
        tables = self._tables()
        for config, journal in self._journals():
            written, missed = journal.read()
            lost = lost or missed
            for change in written:
                if not 0 <= change.table < len(config.backend):
                    continue
                backend = config.backend[change.table].name
                table = tables.get(backend)
                server = self._servers(backend).get(change.value)
                if table is not None and server is not None:
                    changes.append(StickUpdate(backend, _key_bytes(change.key0, change.key1), server, table.expire_ms))
        return changes, lost
