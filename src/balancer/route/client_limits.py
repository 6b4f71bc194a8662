"""A frontend's per-client limits (SPEC frontend `rate_limit` and `conn_limit`).

Every worker of the node counts in one table (runtime.client_table, made by the master,
`limit:FRONTEND`), each in its own cells, so a client's allowance is the node's, whichever
worker its connections land on. Per client and worker the cells hold:

    tag | requests: period, count, previous count | connections: period, count, previous
        | open connections

Rates are sliding windows (HAProxy's rate counters): time is cut in periods of the window's
length, common to every process (monotonic milliseconds), and the count over the last
window is estimated as this period's count plus the previous period's weighted by the part
of it still inside the window. Only what was admitted counts, so a client that keeps
sending past its limit still gets its steady rate through (as a token bucket, not a ban).

- `rate_limit`: at most `burst + 1` requests per window of `(burst + 1) / requests * per`,
  i.e. `burst + 1` at once (one at the steady rate plus `burst`, as NGINX's `limit_req
  burst=... nodelay`) and `requests` per `per` sustained. Over it: the seconds until the
  estimate lets one through, for `Retry-After` (at least 1).
- `conn_limit`: `per_src` open connections at most (a gauge of opens minus closes), and
  `rate` new connections per `per` (a window as above).

Addresses in `allow` are exempt (each limit has its own list); so is a client without an
address (a unix socket). Sums are read without a lock: see runtime.client_table for the
bound on what a race may let through.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Sequence
from typing import Final

from balancer.config.model import ConnLimit, RateLimit
from balancer.runtime.client_table import ENTRY_WORDS, HEADER_WORDS, ClientTable, address_key

Clock = Callable[[], float]
Key = tuple[int, int]
Networks = Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]

# Cells (see the module docstring); cell 0 is the tag.
REQ_PERIOD: Final = 1
REQ_COUNT: Final = 2
REQ_PREVIOUS: Final = 3
CONN_PERIOD: Final = 4
CONN_COUNT: Final = 5
CONN_PREVIOUS: Final = 6
OPEN: Final = 7
REFUSED: Final = -2  # what `opened` answers for a connection over the limits


def _exempt(address: str, networks: Networks) -> bool:
    if not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


class ClientLimits:
    def __init__(
        self,
        rate: RateLimit | None,
        conn: ConnLimit | None,
        table: ClientTable,
        slot: int,
        clock: Clock = time.monotonic,
    ) -> None:
        self.table = table
        self.words = table.words
        self.slot = slot
        self.clock = clock
        self.rate = rate
        self.conn = conn
        self.tarpit = rate is not None and rate.action == "tarpit"
        self.capacity = rate.capacity if rate is not None else 0
        self.window_ms = max(1, int(rate.window * 1000)) if rate is not None else 1
        self.per_src = conn.per_src if conn is not None else 0
        self.conn_rate = conn.rate if conn is not None else 0
        self.conn_window_ms = max(1, int(conn.per * 1000)) if conn is not None else 1
        self._rate_allow = list(rate.allow) if rate is not None else []
        self._conn_allow = list(conn.allow) if conn is not None else []
        # What this worker refused, for /metrics (server.Balancer.sync_shared).
        self.rate_limited = 0
        self.conn_limited = 0
        # The entry the last `request` counted in: a connection hands it to its next request.
        self.entry = -1
        self._slot_stride = table.entries * table.cell_words

    # -- which clients are limited ----------------------------------------------------------

    def rate_key(self, address: str) -> Key | None:
        """The table key of a client whose requests are limited; None when they are not
        (no rate_limit, no address, or an address of `allow`). Once per connection."""
        if self.rate is None or _exempt(address, self._rate_allow):
            return None
        return address_key(address)

    def conn_key(self, address: str) -> Key | None:
        if self.conn is None or _exempt(address, self._conn_allow):
            return None
        return address_key(address)

    def _entry(self, key: Key, now: int) -> int:
        table = self.table
        index = table.find(key[0], key[1], now)
        if index < 0:
            index = table.insert(key[0], key[1], 0, now, OPEN)
        return index

    # -- requests ---------------------------------------------------------------------------

    def request(self, key: Key, entry: int = -1) -> int:
        """A request of client `key`: 0 when it may pass (and it is counted), else the
        seconds until one would (for Retry-After). `entry`: where this client's previous
        request was counted (`self.entry` after it), -1 for none: a connection keeps it, so
        its next requests skip the hash and the bucket search while the entry is the
        client's."""
        now = int(self.clock() * 1000)
        words = self.words
        if entry >= 0:
            at = HEADER_WORDS + entry * ENTRY_WORDS
            if words[at] != 0 and words[at + 1] == key[0] and words[at + 2] == key[1]:
                words[at + 4] = now
            else:
                entry = -1
        index = entry if entry >= 0 else self._entry(key, now)
        self.entry = index
        wait = self._over(index, now, REQ_PERIOD, self.window_ms, self.capacity)
        if wait:
            self.rate_limited += 1
            return wait
        self._count(index, now, REQ_PERIOD, self.window_ms)
        return 0

    # -- connections ------------------------------------------------------------------------

    def opened(self, key: Key) -> int:
        """A new connection of client `key`: REFUSED when it is over `per_src` or `rate`;
        else the entry it is counted in, to hand back to `closed` with its `tag`."""
        now = int(self.clock() * 1000)
        table = self.table
        index = self._entry(key, now)
        if self.per_src and table.cell_sum(index, OPEN) >= self.per_src:
            self.conn_limited += 1
            return REFUSED
        if self.conn_rate and self._over(index, now, CONN_PERIOD, self.conn_window_ms, self.conn_rate):
            self.conn_limited += 1
            return REFUSED
        at = self._count(index, now, CONN_PERIOD, self.conn_window_ms)
        self.words[at + OPEN] += 1
        return index

    def tag(self, index: int) -> int:
        return self.table.check(index)

    def open_connection(self, address: str) -> tuple[int, int]:
        """A new client connection from `address`: (entry, tag) to hand back to `closed`
        when it ends; (REFUSED, 0) when it is over conn_limit; (-1, 0) when conn_limit does
        not apply to it (none, or an address of its `allow`)."""
        key = self.conn_key(address)
        if key is None:
            return -1, 0
        entry = self.opened(key)
        return (entry, self.tag(entry)) if entry != REFUSED else (REFUSED, 0)

    def closed(self, index: int, tag: int) -> None:
        """A connection `opened` counted in entry `index` (then holding `tag`) closed."""
        words = self.words
        at = self.table.cells(self.slot, index)
        if words[at] == tag and words[at + OPEN] > 0:
            words[at + OPEN] -= 1

    # -- windows ----------------------------------------------------------------------------

    def _over(self, index: int, now: int, cell: int, window: int, capacity: int) -> int:
        """0 when one more event fits the window at cell `cell` (period, count, previous)
        of entry `index`, else the seconds until it would."""
        table = self.table
        words = self.words
        tag = words[HEADER_WORDS + index * ENTRY_WORDS]
        period = now // window
        current = previous = 0
        stride = self._slot_stride
        at = table.cells_at + index * table.cell_words - stride
        for _ in range(table.slots):
            at += stride
            if words[at] != tag:
                continue
            seen = words[at + cell]
            if seen == period:
                current += words[at + cell + 1]
                previous += words[at + cell + 2]
            elif seen == period - 1:
                previous += words[at + cell + 1]
        elapsed = (now - period * window) / window
        if current + previous * (1.0 - elapsed) < capacity:
            return 0
        # The estimate must come under `capacity`:
        if current < capacity:
            # within this period, as the previous one slides out of the window;
            wait = (1.0 - (capacity - current) / previous - elapsed) * window
        else:
            # next period, as this one's count slides out.
            wait = (1.0 - elapsed) * window + (1.0 - capacity / current) * window
        return max(1, math.ceil((wait + 1) / 1000))  # strictly under: one more millisecond

    def _count(self, index: int, now: int, cell: int, window: int) -> int:
        """Count one event in this worker's cells; returns where they start."""
        words = self.words
        at = self.table.own_cells(self.slot, index)
        period = now // window
        seen = words[at + cell]
        if seen != period:
            words[at + cell + 2] = words[at + cell + 1] if seen == period - 1 else 0
            words[at + cell + 1] = 0
            words[at + cell] = period
        words[at + cell + 1] += 1
        return at
