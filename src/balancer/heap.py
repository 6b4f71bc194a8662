"""Giving memory back to the system after a crowd of connections has gone.

A worker that held many busy connections (1,000 slow readers of a large response) has
freed their buffers once they close, but glibc keeps the freed heap for reuse: the RSS
stayed at its peak until a reload. HAProxy's pools do the same unless told otherwise; an
operator watching RSS reads it as a leak. `HeapTrimmer` asks glibc to return free memory
(malloc_trim) when the number of open connections has fallen to half of a peak of at
least `min_peak` since the last trim: rare, and only after the memory was really freed.
On a libc without malloc_trim it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger("balancer")


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class HeapTrimmer:
    def __init__(self, min_peak: int = 256) -> None:
        self.min_peak = min_peak
        self.peak = 0
        self.trims = 0
        self._trim = _malloc_trim()

    def observe(self, open_connections: int) -> bool:
        """Called periodically with the worker's open connections; True when it trimmed."""
        if open_connections > self.peak:
            self.peak = open_connections
            return False
        if self.peak < self.min_peak or open_connections * 2 > self.peak:
            return False
        self.peak = open_connections
        if self._trim is None:
            return False
        self._trim(0)
        self.trims += 1
        log.debug("heap trimmed after connections fell to %d", open_connections)
        return True
