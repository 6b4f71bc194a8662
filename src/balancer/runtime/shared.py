"""State shared between the master and its workers, in one shared-memory segment.

Theory of operation. The master creates one segment per generation of workers (an
anonymous memfd the workers inherit) laid out from the config: a header, one state record
per server, then one counter block per worker slot. Every byte has exactly one writer:

- the master writes the header and the server records (admin state, health, weight), and
  bumps the header's epoch after any change;
- worker N writes only counter block N.

Workers poll the epoch a few times a second and apply changed server records to their
live state; they copy their counters into their block on the same beat (and once more on
exit). The master sums the blocks for the admin API and Prometheus. Readers may see a
record mid-update; each field is an aligned 8-byte word, and a torn read of one counter
is off by at most one beat, which the next read corrects.

The gauges that limits and balancing read node-wide (a server's requests in flight, a
backend's queue, a frontend's and the process's client connections) are written through at
every change instead, and every worker reads the others' (runtime.node_count): `cells`
gives a gauge's word index in each slot, `node_count` this worker's view of one.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from typing import cast

from balancer.config.model import Config
from balancer.runtime.node_count import NodeCount
from balancer.runtime.state import ERROR_CAUSES, RESPONSE_BUCKETS_MS, STATUS_CLASSES, AdminState, Health

MAGIC = 0x42414C31  # "BAL1"
_HEADER = struct.Struct("<QQQQ")  # magic, epoch, servers, slots
_SERVER = struct.Struct("<qqqq")  # admin state, health, weight, agent weight (-1: none)
# Per server and slot: active, requests, bytes_in, bytes_out, errors, connect_failures,
# response time sum (ms), responses timed, then the response-time histogram's buckets.
# One bucket per bound of the response-time histogram, and one for what is above the last.
BUCKET_NAMES = tuple(f"bucket{i}" for i in range(len(RESPONSE_BUCKETS_MS) + 1))
_SERVER_TOTALS = ("active", "requests", "bytes_in", "bytes_out", "errors", "connect_failures", "resp_ms", "resp_n")
SERVER_COUNTERS = (*_SERVER_TOTALS, *BUCKET_NAMES)
_COUNTERS = struct.Struct("<" + "q" * len(SERVER_COUNTERS))
# Per frontend and slot: connections, requests, requests denied by a rule, requests and
# connections refused by rate_limit and conn_limit, bytes from and to clients, TLS
# handshakes and how many of them resumed a session, then responses by status class.
FRONTEND_COUNTERS = (
    "connections",
    "requests",
    "denied",
    "rate_limited",
    "conn_limited",
    "bytes_in",
    "bytes_out",
    "tls_handshakes",
    "tls_resumed",
    *STATUS_CLASSES,
)
_FRONTEND = struct.Struct("<" + "q" * len(FRONTEND_COUNTERS))
# Per backend and slot: requests, requests waiting for a server slot now (a gauge), responses
# by status class, failed exchanges with its servers by cause.
BACKEND_COUNTERS = ("requests", "queued", *STATUS_CLASSES, *ERROR_CAUSES)
_BACKEND = struct.Struct("<" + "q" * len(BACKEND_COUNTERS))
_WORD = 8  # bytes of one counter; every counter is an aligned word

ADMIN_STATES = ("ready", "drain", "maint")
HEALTH_STATES = ("up", "down")


@dataclass(frozen=True)
class ServerRecord:
    admin_state: AdminState
    health: Health
    weight: int
    agent_weight: int  # percent, -1 when no agent reported


class Layout:
    """Where everything is, computed identically by the master and the workers."""

    def __init__(self, config: Config, slots: int) -> None:
        self.servers = [(b.name, s.name) for b in config.backend for s in b.server]
        self.server_index = {key: i for i, key in enumerate(self.servers)}
        self.frontends = [f.name for f in config.frontend]
        self.frontend_index = {name: i for i, name in enumerate(self.frontends)}
        self.backends = [b.name for b in config.backend]
        self.backend_index = {name: i for i, name in enumerate(self.backends)}
        self.slots = slots
        self.states_at = _HEADER.size
        self.counters_at = self.states_at + _SERVER.size * len(self.servers)
        self._frontends_at = _COUNTERS.size * len(self.servers)
        self._backends_at = self._frontends_at + _FRONTEND.size * len(self.frontends)
        # Then client connections open now, of the process and of each frontend: the gauges
        # global and frontend maxconn read (written through, not shown by the API).
        self._connections_at = self._backends_at + _BACKEND.size * len(self.backends)
        # Then one word the master writes: 1 while the slot's worker serves (see serving()).
        self._serving_at = self._connections_at + _WORD * (1 + len(self.frontends))
        self.slot_size = self._serving_at + _WORD
        self.size = self.counters_at + self.slot_size * slots

    def serving_at(self, slot: int) -> int:
        return self.counters_at + self.slot_size * slot + self._serving_at

    def server_counters_at(self, slot: int, server: int) -> int:
        return self.counters_at + self.slot_size * slot + _COUNTERS.size * server

    def frontend_counters_at(self, slot: int, frontend: int) -> int:
        return self.counters_at + self.slot_size * slot + self._frontends_at + _FRONTEND.size * frontend

    def backend_counters_at(self, slot: int, backend: int) -> int:
        return self.counters_at + self.slot_size * slot + self._backends_at + _BACKEND.size * backend

    # Word indexes (8-byte cells) of the written-through gauges, one per slot.

    def active_cells(self, server: int) -> list[int]:
        """A server's requests (TCP: connections) in flight: its counters' first word."""
        return [self.server_counters_at(slot, server) // _WORD for slot in range(self.slots)]

    def queued_cells(self, backend: int) -> list[int]:
        """A backend's requests waiting for a server slot: its counters' second word."""
        return [self.backend_counters_at(slot, backend) // _WORD + 1 for slot in range(self.slots)]

    def process_connection_cells(self) -> list[int]:
        return [
            (self.counters_at + self.slot_size * slot + self._connections_at) // _WORD for slot in range(self.slots)
        ]

    def frontend_connection_cells(self, frontend: int) -> list[int]:
        return [cell + 1 + frontend for cell in self.process_connection_cells()]


class SharedState:
    """One mapped segment. `create` in the master; `attach(fd)` in a worker."""

    def __init__(self, layout: Layout, fd: int, memory: mmap.mmap) -> None:
        self.layout = layout
        self.fd = fd
        self.memory = memory
        # Made on first use, in workers only: a mapping with a view cannot be closed.
        self._words: memoryview | None = None

    @classmethod
    def create(cls, layout: Layout) -> SharedState:
        fd = os.memfd_create("balancer-state")  # close-on-exec: handed to workers explicitly
        os.ftruncate(fd, max(layout.size, 1))
        memory = mmap.mmap(fd, max(layout.size, 1))
        _HEADER.pack_into(memory, 0, MAGIC, 0, len(layout.servers), layout.slots)
        return cls(layout, fd, memory)

    @classmethod
    def attach(cls, layout: Layout, fd: int) -> SharedState:
        memory = mmap.mmap(fd, max(layout.size, 1))
        magic, _, servers, slots = _HEADER.unpack_from(memory, 0)
        if magic != MAGIC or servers != len(layout.servers) or slots != layout.slots:
            raise ValueError("shared state segment does not match the configuration")
        return cls(layout, fd, memory)

    def close(self) -> None:
        self.memory.close()
        os.close(self.fd)

    # -- master side: server records -------------------------------------------------------

    @property
    def epoch(self) -> int:
        return int(_HEADER.unpack_from(self.memory, 0)[1])

    def write_server(self, index: int, record: ServerRecord) -> None:
        _SERVER.pack_into(
            self.memory,
            self.layout.states_at + _SERVER.size * index,
            ADMIN_STATES.index(record.admin_state),
            HEALTH_STATES.index(record.health),
            record.weight,
            record.agent_weight,
        )

    def publish(self) -> None:
        """Tell the workers the server records changed."""
        magic, epoch, servers, slots = _HEADER.unpack_from(self.memory, 0)
        _HEADER.pack_into(self.memory, 0, magic, epoch + 1, servers, slots)

    def read_server(self, index: int) -> ServerRecord:
        admin, health, weight, agent = _SERVER.unpack_from(self.memory, self.layout.states_at + _SERVER.size * index)
        return ServerRecord(
            cast(AdminState, ADMIN_STATES[admin]), cast(Health, HEALTH_STATES[health]), int(weight), int(agent)
        )

    # -- worker side: counters -------------------------------------------------------------

    def write_server_counters(self, slot: int, index: int, values: tuple[int, ...]) -> None:
        _COUNTERS.pack_into(self.memory, self.layout.server_counters_at(slot, index), *values)

    def write_frontend_counters(self, slot: int, index: int, values: tuple[int, ...]) -> None:
        _FRONTEND.pack_into(self.memory, self.layout.frontend_counters_at(slot, index), *values)

    def write_backend_counters(self, slot: int, index: int, values: tuple[int, ...]) -> None:
        _BACKEND.pack_into(self.memory, self.layout.backend_counters_at(slot, index), *values)

    def read_server_counters(self, slot: int, index: int) -> tuple[int, ...]:
        return tuple(_COUNTERS.unpack_from(self.memory, self.layout.server_counters_at(slot, index)))

    def read_frontend_counters(self, slot: int, index: int) -> tuple[int, ...]:
        return tuple(_FRONTEND.unpack_from(self.memory, self.layout.frontend_counters_at(slot, index)))

    def read_backend_counters(self, slot: int, index: int) -> tuple[int, ...]:
        return tuple(_BACKEND.unpack_from(self.memory, self.layout.backend_counters_at(slot, index)))

    def node_count(self, cells: list[int], slot: int) -> NodeCount:
        """Worker `slot`'s handle on the gauge whose cells (one per slot) are `cells`."""
        if self._words is None:
            self._words = memoryview(self.memory).cast("q")
        others = [cell for i, cell in enumerate(cells) if i != slot]
        return NodeCount(self._words, cells[slot], others, self.fd, cells[0] * _WORD)

    def read_cells(self, cells: list[int]) -> int:
        """The sum of a gauge's cells (for the master and tests; workers use node_count)."""
        return sum(struct.unpack_from("<q", self.memory, cell * _WORD)[0] for cell in cells)

    def set_serving(self, slot: int, serving: bool) -> None:
        """Master: the worker of `slot` serves (it said it is ready), or not (it died:
        clear_slot says so too). The other workers then accept from its listening sockets
        until its replacement serves (server.Listener standby)."""
        struct.pack_into("<q", self.memory, self.layout.serving_at(slot), int(serving))

    def serving(self, slot: int) -> bool:
        return bool(struct.unpack_from("<q", self.memory, self.layout.serving_at(slot))[0])

    def clear_slot(self, slot: int) -> None:
        start = self.layout.counters_at + self.layout.slot_size * slot
        self.memory[start : start + self.layout.slot_size] = bytes(self.layout.slot_size)
