"""A fixed-size table keyed by client address, in shared memory, used by every worker at once.

Theory of operation. The master creates the table (an anonymous memfd, like
runtime.shared's segment, but one per table so that a table can outlive a generation of
workers); the workers inherit the descriptor and map it. The memory holds a header, then
`buckets * ways` entries of five 8-byte words, then, when the table has counter cells, one
region of cells per worker slot:

    header  magic, buckets, ways, cell words, slots, salt, expire (ms)
    entry   check, key0, key1, value, used
    cells   slot 0: `cell words` per entry; slot 1: ...

A key is a client address as 16 bytes (an IPv4 address as its IPv4-mapped IPv6 form) in
two words. Its bucket is a hash of the key salted with a random value the master drew, so
nobody can aim many addresses at one bucket; it is looked for in the bucket's `ways`
entries only (set-associative, as a CPU cache). An entry is forgotten `expire` after its
last use, and a new key takes the bucket's free or expired entry, else the one used least
recently (approximate LRU: least recently used within its bucket, not the whole table).

Python has no atomic operations on shared memory, and several processes write the same
entries, so no invariant may depend on two words changing together:

- `check` is a salted hash of key and value, written last by a writer and verified by
  every reader: an entry caught mid-write, or written by two processes at once so that the
  words of both mixed, reads as absent (a miss), never as a wrong answer. A miss costs a
  stick table one rebalanced client and heals at the next write. `check` 0 is a free entry.
- `used` (monotonic milliseconds; CLOCK_MONOTONIC is one clock for every process of a
  machine) stands alone: any process may refresh it, each 8-byte aligned word is written
  whole, and the last writer wins, which is what a last-use time means anyway.
- A new key is written under an `fcntl.lockf` byte-range lock on its bucket (one byte of
  the file per bucket), so two workers meeting a new client at once agree on one entry.
  Lookups and refreshes take no lock.
- Counters that must not lose an update (rate limits, open connections) live in per-slot
  cells: worker N writes only slot N's cells, readers sum over the slots. A slot's cells
  for an entry start with a tag, the entry's check word when they were written: when an
  entry passes to another key, the cells written for the old one no longer match and count
  as zero, so no process ever has to clear another's cells. The master clears the cells
  of a slot whose worker died (its open connections died with it).

Sums over the slots are read without a lock, so two workers may each admit the last
request a limit allows: a limit may be exceeded by at most one per worker, once.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import random
import socket
from typing import Final

MAGIC: Final = 0x42414C54  # "BALT"
HEADER_WORDS: Final = 8
ENTRY_WORDS: Final = 5
CHECK: Final = 0
KEY0: Final = 1
KEY1: Final = 2
VALUE: Final = 3
USED: Final = 4
WAYS: Final = 8
_MASK: Final = (1 << 64) - 1
_SIGN: Final = 1 << 63


def _signed(value: int) -> int:
    """A 64-bit unsigned value as the signed word memoryview "q" stores."""
    return value - (1 << 64) if value & _SIGN else value


def address_key(address: str) -> tuple[int, int] | None:
    """A client address as the table's two key words; None for what is not an IP address
    (a unix-socket client: "", "-", "unix")."""
    try:
        if ":" in address:
            packed = socket.inet_pton(socket.AF_INET6, address)
        else:
            packed = b"\0" * 10 + b"\xff\xff" + socket.inet_pton(socket.AF_INET, address)
    except (OSError, ValueError):
        return None
    return _signed(int.from_bytes(packed[:8], "big")), _signed(int.from_bytes(packed[8:], "big"))


def mix(a: int, b: int, c: int, salt: int) -> int:
    """A salted 64-bit hash of three words (splitmix64's finaliser), never 0."""
    h = ((a ^ salt) & _MASK) * 0x9E3779B97F4A7C15 & _MASK
    h ^= h >> 29
    h = ((h ^ b) & _MASK) * 0xBF58476D1CE4E5B9 & _MASK
    h ^= h >> 32
    h = ((h ^ c) & _MASK) * 0x94D049BB133111EB & _MASK
    h ^= h >> 31
    return _signed(h) or 1


class ClientTable:
    """One mapped table. `create` in the master; `attach(fd)` in a worker (or a test's
    second process). `index` values name entries; they stay valid while the table lives,
    though the entry may pass to another key (compare `check` with what you saw)."""

    def __init__(self, fd: int, memory: mmap.mmap) -> None:
        self.fd = fd
        self.memory = memory
        self.words = memoryview(memory).cast("q")
        words = self.words
        if words[0] != MAGIC:
            raise ValueError("not a client table")
        self.buckets = int(words[1])
        self.ways = int(words[2])
        self.cell_words = int(words[3])
        self.slots = int(words[4])
        self.salt = int(words[5])
        self.expire_ms = int(words[6])
        self.entries = self.buckets * self.ways
        self.entries_at = HEADER_WORDS
        self.cells_at = HEADER_WORDS + self.entries * ENTRY_WORDS

    @staticmethod
    def geometry(size: int) -> tuple[int, int]:
        """(buckets, ways) for at least `size` entries."""
        ways = min(WAYS, max(1, size))
        return -(-size // ways), ways

    @classmethod
    def create(cls, size: int, expire: float, cell_words: int = 0, slots: int = 1) -> ClientTable:
        """A new empty table of at least `size` entries, each forgotten `expire` seconds
        after its last use, with `cell_words` words of counters per entry and worker slot."""
        buckets, ways = cls.geometry(size)
        words = HEADER_WORDS + buckets * ways * (ENTRY_WORDS + cell_words * slots)
        fd = os.memfd_create("balancer-table")  # close-on-exec: handed to workers explicitly
        os.ftruncate(fd, words * 8)
        memory = mmap.mmap(fd, words * 8)
        header = memoryview(memory).cast("q")
        salt = random.getrandbits(63)
        for i, value in enumerate((MAGIC, buckets, ways, cell_words, slots, salt, int(expire * 1000))):
            header[i] = value
        header.release()
        return cls(fd, memory)

    @classmethod
    def attach(cls, fd: int) -> ClientTable:
        size = os.fstat(fd).st_size
        return cls(fd, mmap.mmap(fd, size))

    def close(self) -> None:
        self.words.release()
        self.memory.close()
        os.close(self.fd)

    # -- entries ---------------------------------------------------------------------------

    def bucket(self, key0: int, key1: int) -> int:
        return (mix(key1, key0, 0, self.salt) & 0x7FFFFFFFFFFFFFFF) % self.buckets

    def find(self, key0: int, key1: int, now: int) -> int:
        """The entry of the key, refreshed as used at `now` (ms); -1 when it is absent,
        expired or caught mid-write."""
        words = self.words
        salt = self.salt
        first = self.bucket(key0, key1) * self.ways
        for index in range(first, first + self.ways):
            at = HEADER_WORDS + index * ENTRY_WORDS
            check = words[at]
            if check == 0 or words[at + 1] != key0 or words[at + 2] != key1:
                continue
            if check != mix(key0, key1, words[at + 3], salt):
                continue  # torn: another process is writing it
            if now - words[at + 4] > self.expire_ms:
                return -1
            words[at + 4] = now
            return index
        return -1

    def value(self, index: int) -> int:
        return int(self.words[HEADER_WORDS + index * ENTRY_WORDS + VALUE])

    def used_at(self, index: int) -> int:
        """When the entry was last used (monotonic ms)."""
        return int(self.words[HEADER_WORDS + index * ENTRY_WORDS + USED])

    def check(self, index: int) -> int:
        return int(self.words[HEADER_WORDS + index * ENTRY_WORDS])

    def set_value(self, index: int, value: int) -> None:
        """A new value for a live entry: value first, then its check word."""
        words = self.words
        at = HEADER_WORDS + index * ENTRY_WORDS
        words[at + 3] = value
        words[at] = mix(words[at + 1], words[at + 2], value, self.salt)

    def insert(self, key0: int, key1: int, value: int, now: int, busy_cell: int = -1, keep: bool = False) -> int:
        """The key's entry with `value`, taking one in its bucket if it has none (under
        the bucket's lock). With `keep`, a live entry the key has (another process put it
        there since this one looked) keeps its value: the first writer wins. The entry
        taken: the key's own (even expired, so counters of a returning client carry on),
        else a free or expired one, else the least recently used, preferring entries
        whose `busy_cell` counter sums to 0 (a client with open connections keeps its
        entry while another can go)."""
        bucket = self.bucket(key0, key1)
        first = bucket * self.ways
        words = self.words
        fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, bucket, os.SEEK_SET)
        try:
            victim = -1
            victim_rank = (3, 0)
            for index in range(first, first + self.ways):
                at = HEADER_WORDS + index * ENTRY_WORDS
                check = words[at]
                if check != 0 and words[at + 1] == key0 and words[at + 2] == key1:
                    if (
                        keep
                        and check == mix(key0, key1, words[at + 3], self.salt)
                        and now - words[at + 4] <= self.expire_ms
                    ):
                        words[at + 4] = now
                        return index
                    victim = index
                    break
                if check == 0:
                    rank = (0, 0)
                elif now - words[at + 4] > self.expire_ms:
                    rank = (1, int(words[at + 4]))
                elif busy_cell >= 0 and self.cell_sum(index, busy_cell) > 0:
                    rank = (3, int(words[at + 4]))
                else:
                    rank = (2, int(words[at + 4]))
                if victim < 0 or rank < victim_rank:
                    victim, victim_rank = index, rank
            at = HEADER_WORDS + victim * ENTRY_WORDS
            words[at] = 0  # free while the words change: readers see a miss
            words[at + 1] = key0
            words[at + 2] = key1
            words[at + 3] = value
            words[at + 4] = now
            words[at] = mix(key0, key1, value, self.salt)
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, bucket, os.SEEK_SET)
        return victim

    def live(self, now: int) -> list[tuple[int, int, int, int]]:
        """Every entry in use and not expired: (index, key0, key1, value). For counts and
        the admin side; a full scan."""
        words = self.words
        found = []
        for index in range(self.entries):
            at = HEADER_WORDS + index * ENTRY_WORDS
            check = words[at]
            if check == 0 or now - words[at + 4] > self.expire_ms:
                continue
            key0, key1, value = int(words[at + 1]), int(words[at + 2]), int(words[at + 3])
            if check == mix(key0, key1, value, self.salt):
                found.append((index, key0, key1, value))
        return found

    # -- per-slot counter cells ------------------------------------------------------------

    def cells(self, slot: int, index: int) -> int:
        """Where slot `slot`'s cells of entry `index` start (word 0 is their tag)."""
        return self.cells_at + (slot * self.entries + index) * self.cell_words

    def own_cells(self, slot: int, index: int) -> int:
        """Slot `slot`'s cells of entry `index`, for its owner to write: zeroed first when
        they were written for another key (their tag is not the entry's check)."""
        words = self.words
        at = self.cells(slot, index)
        tag = words[HEADER_WORDS + index * ENTRY_WORDS]
        if words[at] != tag:
            for i in range(at + 1, at + self.cell_words):
                words[i] = 0
            words[at] = tag
        return at

    def cell_sum(self, index: int, cell: int) -> int:
        """Cell `cell` (1.. cell_words-1) of entry `index` summed over the slots whose
        cells belong to the entry's current key."""
        words = self.words
        tag = words[HEADER_WORDS + index * ENTRY_WORDS]
        total = 0
        for slot in range(self.slots):
            at = self.cells(slot, index)
            if words[at] == tag:
                total += words[at + cell]
        return int(total)

    def clear_slot(self, slot: int) -> None:
        """Forget slot `slot`'s cells (its worker is gone)."""
        if not self.cell_words:
            return
        start = self.cells(slot, 0) * 8
        length = self.entries * self.cell_words * 8
        self.memory[start : start + length] = bytes(length)
