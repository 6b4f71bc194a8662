"""Giving memory back to the system after a crowd of connections has gone.

A worker that held many busy connections (1,000 slow readers of a large response) has
freed their buffers once they close, but glibc keeps the freed heap for reuse: the RSS
stayed at its peak until a reload. HAProxy's pools do the same unless told otherwise; an
operator watching RSS reads it as a leak. `HeapTrimmer` asks glibc to return free memory
(malloc_trim) once the number of open connections has fallen to half of a peak of at
least `min_peak`, and again at every further halving until fewer than `min_peak // 8`
remain, plus once on the beat after that: a crowd that leaves over several beats is given
back in full (a single trim at the first halving kept what the second half freed), and
what the last connections free as they finish closing is given back too. Rare (a few
trims per crowd), and only after the memory was really freed. On a libc without
malloc_trim it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable

log = logging.getLogger("balancer")


def _malloc_trim() -> Callable[[int], int] | None:
    # The process's own symbols, libc's among them: ctypes.util.find_library would run
    # `ldconfig -p` in a subprocess at every worker start.
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class HeapTrimmer:
    def __init__(self, min_peak: int = 256) -> None:
        self.min_peak = min_peak
        self.peak = 0  # the most connections open since the last trim
        self.crowd = False  # a crowd of at least min_peak was here and has not all gone
        self.settling = False  # the crowd has gone: one more trim on the next beat
        self.trims = 0
        self._trim = _malloc_trim()

    def observe(self, open_connections: int) -> bool:
        """Called periodically with the worker's open connections; True when it trimmed."""
        if self.settling:
            self.settling = False
            return self._trim_now(open_connections)
        if open_connections > self.peak:
            self.peak = open_connections
            if self.peak >= self.min_peak:
                self.crowd = True
            return False
        if not self.crowd or open_connections * 2 > self.peak:
            return False
        self.peak = open_connections
        if open_connections < self.min_peak // 8:
            self.crowd = False
            self.settling = True
        return self._trim_now(open_connections)

    def _trim_now(self, open_connections: int) -> bool:
        if self._trim is None:
            return False
        self._trim(0)
        self.trims += 1
        log.debug("heap trimmed after connections fell to %d", open_connections)
        return True
