"""uvloop's registry of live transports, made free for a loop that serves connections.

uvloop keeps every transport it creates in a `weakref.WeakValueDictionary` keyed by file
descriptor, for one check: `add_reader`/`add_writer` on a descriptor a live transport owns
raise RuntimeError. That dictionary is pure Python: entering a transport runs
`WeakValueDictionary.__setitem__` and a `KeyedRef` built in interpreted frames, ~6,300
instructions, on every accepted and every connected socket (13% of what a relayed L4
connection costs us, bench/conn_cost.py --mode tcp --callgrind), and every `add_reader`
(our TLS transport waits on its sockets with it) fails a lookup in interpreted Python.

`untrack_transports(loop)` swaps that one dictionary's class for one that records nothing
and finds nothing, both in C: the check never fires, which changes nothing here, since
no balancer code watches a descriptor a transport owns (our TLS and PROXY-header paths
wait on sockets that never had a uvloop transport). The dictionary is reached through
the garbage collector's view of the loop; any other loop (asyncio's own) is left as it is.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from types import MappingProxyType
from typing import Any

import uvloop

# Read-only and empty: every lookup raises KeyError, in C.
_NONE: MappingProxyType[Any, Any] = MappingProxyType({})


def _forget(fd: object, transport: object) -> None:
    """Record nothing (stands in for `registry[fd] = transport`)."""


class _UntrackedTransports(weakref.WeakValueDictionary):  # type: ignore[type-arg]
    """A WeakValueDictionary that keeps nothing: uvloop's writes go nowhere, its reads miss."""

    __setitem__ = staticmethod(_forget)
    __getitem__ = staticmethod(_NONE.__getitem__)


def untrack_transports(loop: asyncio.AbstractEventLoop) -> bool:
    """Make `loop`'s transport registry record nothing from now on; True if the loop has
    one (uvloop). Transports entered before stay in it, unread, until they go."""
    if not isinstance(loop, uvloop.Loop):
        return False
    for referent in gc.get_referents(loop):
        if type(referent) is weakref.WeakValueDictionary:
            referent.__class__ = _UntrackedTransports
            return True
    return False
