"""Session persistence: send a client back to the server that served it before.

Two mechanisms, either or both per backend (SPEC backend `cookie` and `stick`):

- A **cookie** names the server. Its value is the server's name (config validates names
  as `[A-Za-z0-9_.-]+`), so it needs no table anywhere: any worker, any generation after a
  reload, reads it the same way. What goes into a response header is only ever the name
  of a configured server, digits and the separators below, never bytes a client sent, so
  a cookie cannot inject anything into a header. Modes (HAProxy's, same names):

  - `insert`: the proxy adds `Set-Cookie: NAME=<server>; path=/` (plus `HttpOnly` and
    `Secure` as configured) to a response when the client did not already hold a valid
    cookie for the server that answered (first visit, redispatch, expired or stale
    cookie). With `maxidle` or `maxlife` the value carries two dates, in whole seconds of
    wall-clock time written in base 36: `<server>|<last seen>|<first seen>` (HAProxy keeps
    dates in its value the same way). A cookie idle longer than `maxidle` or older than
    `maxlife` is ignored, so the request is balanced anew and gets a fresh cookie. To
    keep the dates true without a Set-Cookie on every response, the last-seen date is
    refreshed once it is `maxidle / 4` old: a client is thus let go after between
    `3/4 maxidle` and `maxidle` of silence. A cookie without dates is accepted and dated
    on the way back (so turning `maxidle` on at a reload keeps clients where they are).
    With `nocache` a response that gets an inserted cookie also gets
    `Cache-Control: private`, unless it already says `private` or `no-store`: a shared
    cache must not hand one client's server cookie to everyone. The cookie is a session
    cookie (no Expires): browsers drop it when they close; `maxlife` bounds it otherwise.
  - `prefix`: the server's own cookie `NAME=value` reaches the client as
    `NAME=<server>~value`; the proxy strips `<server>~` from requests before the server
    sees them, so the application gets its value back untouched.
  - `rewrite`: the value of the server's own cookie `NAME` is replaced by the server name
    (for applications that set a cookie only to mark a session).

  Insert mode options (HAProxy's): `indirect` (default on) removes the cookie from requests
  before a server sees them; `preserve` leaves a response alone when the server sets a
  cookie of that name itself (without it the server's one is replaced by the proxy's);
  `postonly` inserts only into responses to POST requests.

  In `prefix` and `rewrite` mode the client's cookie changes only when the server sets
  it: after a redispatch the new server's next `Set-Cookie: NAME=...` moves the client.
  `maxidle`, `maxlife`, `httponly`, `secure` and `nocache` apply to `insert` only.

- A **stick table** maps a client address to the server it was last sent to: an LRU of at
  most `size` entries, each forgotten after `expire` seconds without use. It lives in
  shared memory (runtime.client_table), one table per backend made by the master: every
  worker of the node sees the same entries, and a reload that keeps the backend's `stick`
  settings keeps its table (entries name servers by a hash of their name, so adding,
  removing or reordering servers keeps every other client where it was). It works in both
  HTTP and TCP mode, for clients with an address (not on a unix socket; behind
  `accept_proxy`, the address the PROXY header names).

Either way a persisted client goes back to its server while that server is `ready` or
`drain` (drain means: no new sessions, persisted ones continue; a weight of 0 likewise)
and healthy. When it is down, in `maint` or ejected by passive observation, the client is
balanced anew and the new server's cookie replaces the old one, as HAProxy does by
default; with `persist = true` (HAProxy `option persist`) it is sent to its server anyway,
and when that server cannot serve it, `redispatch` decides as for any retry. `redispatch`
is only about retries: it never refuses a persisted client by itself.

This module does no I/O and imports no asyncio; the clocks are injected.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Final, NamedTuple

from balancer.config.model import Backend, Cookie, StickTable
from balancer.runtime.client_table import ClientTable, address_key
from balancer.runtime.state import BackendRuntime, ServerRuntime
from balancer.runtime.stick_journal import StickJournal

Clock = Callable[[], float]
Headers = list[tuple[bytes, bytes]]

# A server name as the config allows it, hence a server id a cookie may carry.
_SERVER_ID: Final = re.compile(rb"[A-Za-z0-9_.\-]+")
# One date of a dated insert cookie: whole seconds in base 36 (int() alone would also take
# signs, spaces and underscores).
_DATE: Final = re.compile(rb"[0-9a-z]{1,12}")
# A Cache-Control that already keeps shared caches from storing the response.
_UNCACHEABLE: Final = re.compile(rb"\r\ncache-control:[^\r]*\b(?:private|no-store)\b", re.IGNORECASE)
_DIGITS: Final = "0123456789abcdefghijklmnopqrstuvwxyz"
# What net.peer reports for a client without an address (a unix socket): nothing to stick.
_NO_ADDRESS: Final = frozenset({"", "-", "unix"})


class CookieValue(NamedTuple):
    """A valid persistence cookie as a request carried it."""

    server: str
    last: int = -1  # last-seen date (seconds); -1 for a cookie without dates
    first: int = -1  # first-seen date


def base36(number: int) -> str:
    if number <= 0:
        return "0"
    digits = []
    while number:
        number, digit = divmod(number, 36)
        digits.append(_DIGITS[digit])
    return "".join(reversed(digits))


def keeps_sessions(server: ServerRuntime) -> bool:
    """May `server` take a persisted client back: ready or drain (any weight), healthy,
    not ejected. `usable` (new sessions) is stricter: ready only, with a weight."""
    return server.admin_state != "maint" and server.health == "up" and not server.ejected


class CookiePersistence:
    """One backend's persistence cookie: read it from requests, write it into responses."""

    def __init__(self, config: Cookie, clock: Clock = time.time) -> None:
        self.name = config.name
        self.mode = config.mode
        self.clock = clock
        self.maxidle = config.maxidle if config.mode == "insert" else 0.0
        self.maxlife = config.maxlife if config.mode == "insert" else 0.0
        self.dated = bool(self.maxidle or self.maxlife)
        self.refresh_after = self.maxidle / 4
        self.nocache = config.nocache
        self.indirect = config.indirect and config.mode == "insert"
        self.preserve = config.preserve
        self.postonly = config.postonly
        self._name_bytes = config.name.encode("ascii")
        name = re.escape(config.name.encode("ascii"))
        # NAME=value inside one Cookie header value (pairs separated by ";"). The value is
        # taken whole and trimmed afterwards: a lazy match followed by optional blanks would
        # backtrack quadratically over a long run of blanks a client sent.
        self._in_request = re.compile(rb"(?:^|;)[ \t]*" + name + rb"[ \t]*=([^;]*)")
        # The value of NAME in a Set-Cookie header line of a response head (lines CRLF-led).
        self._in_response = re.compile(rb"(\r\n(?i:set-cookie):[ \t]*" + name + rb"[ \t]*=[ \t]*)([^;\r]*)")
        # A whole Set-Cookie line of this name, CRLF-led (insert mode without preserve drops it).
        self._line_in_response = re.compile(rb"\r\n(?i:set-cookie):[ \t]*" + name + rb"[ \t]*=[^\r]*")
        attributes = "; path=/"
        if config.httponly:
            attributes += "; HttpOnly"
        if config.secure:
            attributes += "; Secure"
        self._attributes = attributes

    # -- requests --------------------------------------------------------------------------

    def find(self, headers: Headers) -> CookieValue | None:
        """The valid persistence cookie among `headers` (the first one wins), or None when
        there is none or it has expired. In prefix mode every `<server>~` prefix of the
        cookie is stripped in `headers` itself, whatever follows: the server only ever
        sees its own value."""
        found: CookieValue | None = None
        for index, (name, value) in enumerate(headers):
            if len(name) != 6 or name.lower() != b"cookie":
                continue
            if self.mode == "prefix":
                ids: list[bytes] = []
                stripped = self._in_request.sub(partial(_strip_prefix, ids=ids), value)
                if ids:
                    headers[index] = (name, stripped)
                    if found is None:
                        found = self._server_id(ids[0])
                continue
            match = self._in_request.search(value)
            if match is None:
                continue
            if found is None:
                found = self._decode(match.group(1).strip(b" \t"))
            if self.indirect:
                headers[index] = (name, self._without_own_cookie(value))  # "" ones dropped below
        if self.indirect:
            headers[:] = [(n, v) for n, v in headers if v or len(n) != 6 or n.lower() != b"cookie"]
        return found

    def _without_own_cookie(self, value: bytes) -> bytes:
        """A Cookie header value without any NAME=... pair (indirect insert mode)."""
        pairs = [pair for pair in value.split(b";") if pair.partition(b"=")[0].strip(b" \t") != self._name_bytes]
        return b"; ".join(pair.strip(b" \t") for pair in pairs if pair.strip(b" \t"))

    @staticmethod
    def _server_id(raw: bytes) -> CookieValue | None:
        raw = raw.rstrip(b" \t")
        return CookieValue(raw.decode("ascii")) if _SERVER_ID.fullmatch(raw) else None

    def _decode(self, raw: bytes) -> CookieValue | None:
        if self.mode != "insert" or b"|" not in raw:
            return self._server_id(raw)
        parts = raw.split(b"|")
        if len(parts) != 3 or not _SERVER_ID.fullmatch(parts[0]):
            return None
        if not (_DATE.fullmatch(parts[1]) and _DATE.fullmatch(parts[2])):
            return None
        last, first = int(parts[1], 36), int(parts[2], 36)
        now = self.clock()
        if self.maxidle and now - last > self.maxidle:
            return None
        if self.maxlife and now - first > self.maxlife:
            return None
        return CookieValue(parts[0].decode("ascii"), last, first)

    # -- responses -------------------------------------------------------------------------

    def response(
        self, header_lines: bytes, found: CookieValue | None, server: str, method: bytes = b""
    ) -> tuple[bytes, bytes]:
        """The response head from `server` for a `method` request that carried `found`:
        (its header lines, CRLF-led, possibly rewritten; header lines to add, CRLF-ended)."""
        if self.mode == "insert":
            if self._line_in_response.search(header_lines) is not None:
                if self.preserve:
                    return header_lines, b""  # the server's own cookie goes through untouched
                header_lines = self._line_in_response.sub(b"", header_lines)
            if self.postonly and method != b"POST":
                return header_lines, b""
            return header_lines, self._insert(header_lines, found, server)
        if self.mode == "prefix":
            prefix = server.encode() + b"~"
            return self._in_response.sub(lambda m: m.group(1) + prefix + m.group(2), header_lines), b""
        value = server.encode()
        return self._in_response.sub(lambda m: m.group(1) + value, header_lines), b""

    def _insert(self, header_lines: bytes, found: CookieValue | None, server: str) -> bytes:
        if found is not None and found.server == server and not self._stale(found):
            return b""
        value = server
        if self.dated:
            now = int(self.clock())
            first = found.first if found is not None and found.server == server and found.first >= 0 else now
            value = f"{server}|{base36(now)}|{base36(first)}"
        line = f"Set-Cookie: {self.name}={value}{self._attributes}\r\n".encode()
        if self.nocache and _UNCACHEABLE.search(header_lines) is None:
            line += b"Cache-Control: private\r\n"
        return line

    def _stale(self, found: CookieValue) -> bool:
        """The client's cookie for the right server must be written again: its dates are
        due for a refresh, or missing, or there but no longer wanted."""
        if not self.dated:
            return found.last >= 0
        if found.last < 0:
            return True
        return bool(self.maxidle) and self.clock() - found.last >= self.refresh_after


def _strip_prefix(match: re.Match[bytes], ids: list[bytes]) -> bytes:
    """Prefix mode: NAME=<server>~value becomes NAME=value; the server id is noted."""
    whole, raw = match.group(0), match.group(1)  # the value ends the match
    server_id, tilde, _ = raw.lstrip(b" \t").partition(b"~")
    if not tilde:
        return whole
    ids.append(server_id)
    return whole[: len(whole) - len(raw)] + raw.replace(server_id + b"~", b"", 1)


def server_id(name: str) -> int:
    """The word a stick table stores for server `name`: a hash of the name, so an entry
    names the same server in every worker and after a reload that reorders, adds or removes
    servers (a removed server's entries name nobody, and its clients are balanced anew)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8, person=b"balancer-stick").digest()
    return int.from_bytes(digest, "big", signed=True) or 1


class StickEntries:
    """Client address -> server name, over a runtime.client_table.ClientTable: at most
    `size` entries (least recently used within a bucket go first), each forgotten `expire`
    seconds after its last use. The table is shared by every worker of the node when the
    master made it (`table`); otherwise this process has a private one of its own."""

    def __init__(self, config: StickTable, clock: Clock = time.monotonic, table: ClientTable | None = None) -> None:
        self.config = config
        self.size = config.size
        self.expire = config.expire
        self.clock = clock
        self.table = table if table is not None else ClientTable.create(config.size, config.expire)
        self._names: dict[int, str] = {}
        # With [peers]: where this worker notes the entries it writes, for the master to send.
        self.journal: StickJournal | None = None
        self.journal_slot = 0
        self.journal_table = 0  # the backend's index in the config
        self._told: dict[tuple[int, int], int] = {}  # client key -> when this worker last noted it

    def note(self, key0: int, key1: int, value: int) -> None:
        """An entry this worker wrote (a new client, or one moved to another server), or
        one to tell the other nodes again (`get`)."""
        journal = self.journal
        if journal is not None:
            journal.write(self.journal_slot, self.journal_table, key0, key1, value)
            told = self._told
            if len(told) >= 2 * self.size:
                told.clear()  # bounded: clients forgotten here are told once more, no harm
            told[(key0, key1)] = int(self.clock() * 1000)

    def know(self, names: Iterable[str]) -> None:
        """The servers an entry may name (any other id is a server this config lacks)."""
        for name in names:
            self._names[server_id(name)] = name

    def __len__(self) -> int:
        return len(self.table.live(int(self.clock() * 1000)))

    def get(self, client: str) -> str:
        """The server `client` sticks to ("" for none); a hit counts as a use."""
        key = address_key(client)
        if key is None:
            return ""
        table = self.table
        now = int(self.clock() * 1000)
        index = table.find(key[0], key[1], now)
        if index < 0:
            return ""
        value = table.value(index)
        if self.journal is not None:
            # With [peers]: a client still coming back is told to the other nodes again a
            # quarter of `expire` after it was last told, so its entry does not expire there
            # while it is used here (at every use would be at every request).
            told = self._told.get(key, -table.expire_ms)
            if now - told > table.expire_ms // 4:
                self.note(key[0], key[1], value)
        return self._names.get(value, "")

    def claim(self, client: str, server: str) -> str:
        """`client`, which had no entry, is about to be sent to `server`: the server it
        sticks to from now on, `server` unless another worker stuck it elsewhere a moment
        ago (two first connections at once: the first writer wins)."""
        key = address_key(client)
        if key is None:
            return server
        value = server_id(server)
        self._names[value] = server
        table = self.table
        index = table.insert(key[0], key[1], value, int(self.clock() * 1000), keep=True)
        stored = table.value(index)
        if stored == value:
            self.note(key[0], key[1], value)
        return self._names.get(stored, server)

    def put(self, client: str, server: str) -> None:
        """`client` was just sent to `server`."""
        key = address_key(client)
        if key is None:
            return
        value = server_id(server)
        self._names[value] = server
        table = self.table
        now = int(self.clock() * 1000)
        index = table.find(key[0], key[1], now)
        if index < 0:
            table.insert(key[0], key[1], value, now)
        elif table.value(index) != value:
            table.set_value(index, value)
        else:
            return
        self.note(key[0], key[1], value)


class Persistence:
    """A backend's persistence (cookie, stick table or both) over its live servers."""

    def __init__(
        self,
        config: Backend,
        runtime: BackendRuntime,
        wall_clock: Clock = time.time,
        clock: Clock = time.monotonic,
    ) -> None:
        self.runtime = runtime
        self.persist = config.persist
        self.cookie = CookiePersistence(config.cookie, wall_clock) if config.cookie is not None else None
        self.stick = StickEntries(config.stick, clock) if config.stick is not None else None
        if self.stick is not None:
            self.stick.know(runtime.by_name)

    def share_stick(
        self, table: ClientTable, journal: StickJournal | None = None, slot: int = 0, number: int = 0
    ) -> None:
        """Use `table`, the node's table for this backend (the master's), from now on; with
        `journal` ([peers]), note what this worker (`slot`) writes there as backend `number`."""
        if self.stick is not None:
            shared = StickEntries(self.stick.config, time.monotonic, table)
            shared.know(self.runtime.by_name)
            shared.journal, shared.journal_slot, shared.journal_table = journal, slot, number
            self.stick.table.close()
            self.stick = shared

    @classmethod
    def of(cls, config: Backend, runtime: BackendRuntime) -> Persistence | None:
        """The backend's persistence, or None when it has neither cookie nor stick table."""
        if config.cookie is None and config.stick is None:
            return None
        return cls(config, runtime)

    def lookup(self, found: CookieValue | None, client: str) -> ServerRuntime | None:
        """Where a persisted client goes: its server when that server keeps its sessions, or
        whatever its state when the backend has `persist`; None when the client is not
        persisted (no cookie naming a configured server, no stick entry) or its server is
        down, in maint or ejected, so it is balanced anew (HAProxy never refuses a client
        for its cookie)."""
        name = found.server if found is not None else ""
        server = self.runtime.by_name.get(name) if name else None
        if server is None and self.stick is not None and client not in _NO_ADDRESS:
            name = self.stick.get(client)
            server = self.runtime.by_name.get(name) if name else None
        if server is None or self.persist or keeps_sessions(server):
            return server
        return None

    def claim(self, client: str, server: ServerRuntime) -> ServerRuntime:
        """A client that `lookup` found no server for is balanced to `server`: where it
        goes, `server` or the one another worker has just stuck it to (when that one may
        take it). Call before sending it; `assigned` after."""
        if self.stick is None or client in _NO_ADDRESS:
            return server
        name = self.stick.claim(client, server.name)
        if name == server.name:
            return server
        winner = self.runtime.by_name.get(name)
        if winner is not None and winner.usable:
            return winner
        return server

    def assigned(self, client: str, server: ServerRuntime) -> None:
        """`client` was just sent to `server`: the stick table remembers it."""
        if self.stick is not None and client not in _NO_ADDRESS:
            self.stick.put(client, server.name)
