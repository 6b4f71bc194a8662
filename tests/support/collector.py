"""Holding off Python's cyclic garbage collector in a test: what outlives its use inside is
held by a reference cycle (the data plane frees by reference counting alone)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def cyclic_collector_off() -> Iterator[None]:
    """Only reference counting frees objects inside; gc.get_objects(generation=0) then
    holds just what was made inside and is still alive."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
