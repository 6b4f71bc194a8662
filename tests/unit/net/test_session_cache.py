"""net.session_cache: the memory the master makes is what net/_tls.c's SessionCache reads,
and it refuses memory of another layout; the master keeps one cache until its size changes.
(Sessions resumed across workers and reloads: tests/e2e/test_e2e_tls_session_cache.py.)"""

from __future__ import annotations

import mmap
import os

import pytest
from tests.support.tools import require_built

from balancer.net import session_cache

_tls = session_cache._tls
require_built(_tls, "net/_tls")  # Python's ssl keeps each worker's own cache


def mapped(fd: int) -> mmap.mmap:
    return mmap.mmap(fd, os.fstat(fd).st_size)


def test_a_cache_is_made_whole_sets_of_slots_and_read_by_the_c_side() -> None:
    assert _tls is not None
    fd = session_cache.create(10)
    assert fd is not None
    try:
        memory = mapped(fd)
        slots = 12  # 10 rounded up to sets of CACHE_WAYS (4)
        assert len(memory) == _tls.CACHE_HEADER_SIZE + slots * _tls.CACHE_SLOT_SIZE
        _tls.SessionCache(memory)
    finally:
        os.close(fd)


def test_memory_of_another_layout_is_refused() -> None:
    assert _tls is not None
    with pytest.raises(ValueError, match="not a session cache"):
        _tls.SessionCache(bytearray(_tls.CACHE_HEADER_SIZE + 4 * _tls.CACHE_SLOT_SIZE))
    fd = session_cache.create(4)
    assert fd is not None
    try:
        short = mapped(fd)[: _tls.CACHE_HEADER_SIZE + _tls.CACHE_SLOT_SIZE]  # a copy: one slot of four
        with pytest.raises(ValueError, match="not a session cache"):
            _tls.SessionCache(bytearray(short))
    finally:
        os.close(fd)


def test_no_cache_for_zero_sessions() -> None:
    assert session_cache.create(0) is None


def test_the_master_keeps_its_cache_until_the_size_changes() -> None:
    master = session_cache.MasterCache()
    before = len(os.listdir("/proc/self/fd"))
    try:
        first = master.for_config(100)
        assert first is not None
        inode = os.fstat(first).st_ino
        assert master.for_config(100) == first and os.fstat(first).st_ino == inode
        other = master.for_config(200)
        assert other is not None and os.fstat(other).st_ino != inode  # a new memfd
        assert len(os.listdir("/proc/self/fd")) == before + 1  # and the old one closed
        assert master.for_config(0) is None
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        master.close()
