"""How a worker runs Python's cyclic garbage collector.

The data plane frees almost everything by reference counting: a connection's session,
parser, deadline and server connection go the moment the connection closes. The cyclic
collector, left at CPython's defaults (a young collection every 700 net container
allocations, and older generations every 10 of those), then runs on the connection
path itself, every few dozen connections, and its older collections walk every object
the worker holds, including the config, routes and modules loaded at start-up, which
never become garbage.

So once a worker has started: everything alive is moved out of the collector's sight
(`gc.freeze()`: those objects are never walked again, and their memory is never freed,
which they would not be anyway), and young collections run far less often. Cycles that do
form (an exception kept with its traceback, a closure over its owner) are still
collected, later: at most YOUNG_THRESHOLD container objects more are kept alive than with
the defaults, a few MiB.

Why so many: the count that triggers a young collection is allocations minus frees, but
never below zero, so under load it climbs with the swings of the live set rather than with
garbage. HTTP/2 swings hard (100 streams arrive in one read and end together), and each
collection walks every young object still alive: with 1,600 requests in flight
(h2load -c16 -m100) a 10,000 threshold put 11% of the worker's CPU in the collector
(perf), 100,000 under 1%.
"""

from __future__ import annotations

import gc

# Net container allocations between young collections (CPython: 700), and young/middle
# collections between older ones (CPython: 10 and 10).
YOUNG_THRESHOLD = 100_000
MIDDLE_THRESHOLD = 10
OLD_THRESHOLD = 10


def settle_after_start() -> None:
    """Collect what start-up left behind, freeze what remains, space young collections.
    Call once, when the worker is ready to serve; a reload starts a new worker."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
