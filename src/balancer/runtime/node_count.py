"""A gauge every worker of a node counts in its own cell, read as one number by all.

Theory of operation. Requests in flight on a server, a backend's queue, a frontend's client
connections and the process's: with `workers = N` each worker counts its own part and
writes it, at every change, into its own aligned 8-byte cell of the generation's shared
segment (runtime.shared lays the cells out, one per worker slot). A reader sums the N cells.
Each cell has one writer, so no update is ever lost and no atomic instruction is needed; an
aligned word is never read torn. Access goes through a `memoryview(...).cast("q")` of the
segment: about 25 ns a write and 20 ns a read here, where struct.pack_into takes 60 ns.

A worker that dies leaves its cells behind; the master clears its block
(MasterState.retire_slot) before the replacement starts, so a crash never leaks a slot.

Limits. `try_take(value, limit)` adds one to this worker's count only if the node then holds
at most `limit`. It writes first and checks after (the worker's own new count, plus what the
other cells say, plus one for each other worker): a worker's loop is single-threaded, so at
any moment each other worker has at most one take whose write this worker may not see yet,
either because it is between its write and its check, or because the CPU has not yet made
its write visible (x86 lets a load pass an earlier store). Writing before checking is what
makes a worker descheduled half-way harmless: its count is visible to all while it sleeps.
Near the limit, where that margin would refuse the last N - 1 slots, the take is decided
under an `fcntl.lockf` byte-range lock on the segment (one byte per gauge), one worker at a
time: read the others, take if below the limit, release. The lock's system calls are full
memory barriers; the lock-free takers keep their margin, so they never use a slot a locked
taker is about to fill. Whatever the interleaving, the node never holds more than `limit`.
A lock costs about 1.5 us (two system calls), and only near the limit: a take that finds
the node full is refused without it (refusing is always safe; the queue asks again).

Why this and not the master as owner: a take or a release is one write and N reads, tens of
nanoseconds, where asking another process costs a system call each way (microseconds) on
every request. With one worker nothing is shared (ServerRuntime.node is None): the proxy's
CPU per keep-alive request is unchanged (bench/micro_http.py in CPU time, two series of 10
interleaved runs: medians 2.65 and 2.72 us before, 2.65 and 2.64 us after).
"""

from __future__ import annotations

import fcntl


class NodeCount:
    """One gauge: this worker's cell in `view` (word index `own`) and the other workers'
    cells (`others`); `lock_at` is the byte of the segment (file `fd`) locked near a limit."""

    __slots__ = ("_fd", "_lock_at", "_others", "_own", "_spare", "_view")

    def __init__(self, view: memoryview, own: int, others: list[int], fd: int, lock_at: int) -> None:
        self._view = view
        self._own = own
        self._others = others
        self._fd = fd
        self._lock_at = lock_at
        # Each other worker may have one take in flight that this one cannot see yet.
        self._spare = len(others)

    def publish(self, value: int) -> None:
        """This worker's count is now `value` (write-through, at every change)."""
        self._view[self._own] = value

    def others(self) -> int:
        """What the other workers count now."""
        view = self._view
        total = 0
        for index in self._others:
            total += view[index]
        return total

    def total(self) -> int:
        """The node's count: this worker's cell plus the others'."""
        return self._view[self._own] + self.others()

    def try_take(self, value: int, limit: int) -> bool:
        """One more for this worker, whose count is `value` now, if the node then holds at
        most `limit` (>= 1): True with `value + 1` published, else False with `value` left."""
        view = self._view
        view[self._own] = value + 1
        others = self.others()
        if value + 1 + others + self._spare <= limit:
            return True
        view[self._own] = value
        if value + others >= limit:
            return False  # full as far as can be seen: refusing needs no lock
        fd = self._fd
        at = self._lock_at
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, at)
        try:
            if value + self.others() < limit:
                view[self._own] = value + 1
                return True
            return False
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, at)
