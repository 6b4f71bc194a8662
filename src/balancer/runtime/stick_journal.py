"""What the workers wrote into the node's stick tables, for the master to send to `[peers]`.

Theory of operation. The master reads changes here instead of scanning the tables (a
100,000-entry table is 500,000 words to read at every push). One segment per generation of
workers (an anonymous memfd, like runtime.shared's), one ring per worker slot:

    header  magic, slots, capacity
    slot    head (records ever written), then `capacity` records of four words:
            table number (the backend's index in the generation's config), key0, key1, value

Worker N alone writes ring N: the record's words first, then the head, so a reader that
sees the head sees the record (x86 keeps stores in order; each word is written whole).
A worker writes a record when it gives a client an entry or moves it to another server,
not when an entry is only used (that would be every request): the time an entry has left
reaches the other nodes with the next full copy, and a client that keeps coming back keeps
its entry on the node that serves it.

The master keeps its own tail per ring. A reader that falls `capacity` records behind has
lost some (they were overwritten): `read` says so, and [peers] sends a full copy instead.
"""

from __future__ import annotations

import mmap
import os
from typing import NamedTuple

MAGIC = 0x42414C4A  # "BALJ"
HEADER_WORDS = 3
RECORD_WORDS = 4
CAPACITY = 16384  # records per worker: 512 KiB; at 20 ms between reads, 800,000 changes a second


class StickChange(NamedTuple):
    table: int  # the backend's index in the generation's config
    key0: int
    key1: int
    value: int  # the server, as route.persistence.server_id names it


class StickJournal:
    """`create` in the master, `attach(fd)` in a worker; `write` from worker `slot` only."""

    def __init__(self, fd: int, memory: mmap.mmap) -> None:
        self.fd = fd
        self.memory = memory
        self.words = memoryview(memory).cast("q")
        if self.words[0] != MAGIC:
            raise ValueError("not a stick journal")
        self.slots = int(self.words[1])
        self.capacity = int(self.words[2])
        self.ring_words = 1 + self.capacity * RECORD_WORDS
        self.tails = [0] * self.slots  # the master's read positions

    @classmethod
    def create(cls, slots: int, capacity: int = CAPACITY) -> StickJournal:
        words = HEADER_WORDS + slots * (1 + capacity * RECORD_WORDS)
        fd = os.memfd_create("balancer-stick-journal")  # close-on-exec: handed to workers explicitly
        os.ftruncate(fd, words * 8)
        memory = mmap.mmap(fd, words * 8)
        header = memoryview(memory).cast("q")
        header[0], header[1], header[2] = MAGIC, slots, capacity
        header.release()
        return cls(fd, memory)

    @classmethod
    def attach(cls, fd: int) -> StickJournal:
        return cls(fd, mmap.mmap(fd, os.fstat(fd).st_size))

    def close(self) -> None:
        self.words.release()
        self.memory.close()
        os.close(self.fd)

    def write(self, slot: int, table: int, key0: int, key1: int, value: int) -> None:
        """Worker `slot` changed an entry of table `table`."""
        words = self.words
        ring = HEADER_WORDS + slot * self.ring_words
        head = words[ring]
        at = ring + 1 + (head % self.capacity) * RECORD_WORDS
        words[at] = table
        words[at + 1] = key0
        words[at + 2] = key1
        words[at + 3] = value
        words[ring] = head + 1

    def read(self) -> tuple[list[StickChange], bool]:
        """The changes written since the last read, and whether some were lost (a ring
        went round before it was read). A worker restarted in a slot carries on from the
        head its predecessor left in the segment."""
        words = self.words
        changes: list[StickChange] = []
        lost = False
        for slot in range(self.slots):
            ring = HEADER_WORDS + slot * self.ring_words
            head = int(words[ring])
            tail = self.tails[slot]
            if head - tail > self.capacity:
                lost = True
                tail = head - self.capacity
            for position in range(tail, head):
                at = ring + 1 + (position % self.capacity) * RECORD_WORDS
                changes.append(StickChange(int(words[at]), int(words[at + 1]), int(words[at + 2]), int(words[at + 3])))
            if int(words[ring]) - tail > self.capacity:  # overwritten while being read
                lost = True
            self.tails[slot] = head
        return changes, lost
