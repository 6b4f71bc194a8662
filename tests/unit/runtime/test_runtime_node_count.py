"""runtime.node_count: per-worker cells summed on read, and limits that hold across processes.

The workers here are real processes (fork) sharing one real segment, as `balancer run`'s
workers do; the check of "never more than the limit" counts at the holders, not in the cells.
"""

from __future__ import annotations

import mmap
import os
import random
import struct
import time

import pytest

from balancer.config import parse_config
from balancer.runtime.shared import BACKEND_COUNTERS, SERVER_COUNTERS, Layout, SharedState

CONFIG = """
[[frontend]]
name = "www"
bind = ["127.0.0.1:0"]
default_backend = "web"

[[frontend]]
name = "api"
bind = ["127.0.0.1:0"]
default_backend = "web"

[[backend]]
name = "web"
[[backend.server]]
name = "s1"
address = "127.0.0.1:8001"
[[backend.server]]
name = "s2"
address = "127.0.0.1:8002"

[[backend]]
name = "other"
[[backend.server]]
name = "s1"
address = "127.0.0.1:8003"
"""


def segment(slots: int) -> SharedState:
    return SharedState.create(Layout(parse_config(CONFIG), slots))


def test_each_worker_writes_its_cell_and_every_worker_reads_the_sum() -> None:
    shared = segment(3)
    cells = shared.layout.active_cells(1)
    workers = [shared.node_count(cells, slot) for slot in range(3)]
    workers[0].publish(2)
    workers[2].publish(5)
    assert [w.total() for w in workers] == [7, 7, 7]
    assert [w.others() for w in workers] == [5, 7, 2]
    assert shared.read_cells(cells) == 7


def test_cells_are_the_counters_the_api_reads() -> None:
    """A server's in-flight cell is its `active` counter and a backend's queue cell its
    `queued`: the master's sums (API, metrics) see what the workers write through."""
    shared = segment(2)
    layout = shared.layout
    server = layout.server_index[("other", "s1")]
    shared.node_count(layout.active_cells(server), 1).publish(4)
    assert dict(zip(SERVER_COUNTERS, shared.read_server_counters(1, server), strict=True))["active"] == 4
    backend = layout.backend_index["other"]
    shared.node_count(layout.queued_cells(backend), 1).publish(3)
    assert dict(zip(BACKEND_COUNTERS, shared.read_backend_counters(1, backend), strict=True))["queued"] == 3
    # ... and nothing else moved
    assert shared.read_server_counters(0, server) == (0,) * len(SERVER_COUNTERS)
    assert sum(shared.read_server_counters(1, server)) == 4


def test_gauge_cells_never_overlap() -> None:
    layout = Layout(parse_config(CONFIG), 3)
    gauges = [layout.active_cells(i) for i in range(len(layout.servers))]
    gauges += [layout.queued_cells(i) for i in range(len(layout.backends))]
    gauges += [layout.frontend_connection_cells(i) for i in range(len(layout.frontends))]
    gauges.append(layout.process_connection_cells())
    every = [cell for cells in gauges for cell in cells]
    assert len(every) == len(set(every))
    assert max(every) * 8 + 8 <= layout.size
    assert min(every) * 8 >= layout.counters_at


def test_one_worker_can_fill_the_limit_to_the_last_slot() -> None:
    """The margin kept for other workers' takes in flight is not lost: near the limit a
    take is decided under the lock, exactly."""
    shared = segment(4)
    cells = shared.layout.active_cells(0)
    me, other = shared.node_count(cells, 0), shared.node_count(cells, 1)
    held = 0
    while me.try_take(held, 5):
        held += 1
    assert held == 5
    assert me.total() == 5
    other.publish(0)
    assert not other.try_take(0, 5)
    assert other.total() == 5  # a refused take leaves nothing behind
    me.publish(held - 1)
    assert other.try_take(0, 5)
    assert me.total() == 5


@pytest.mark.parametrize("workers,limit", [(2, 1), (2, 4), (4, 3)])
def test_processes_taking_at_once_never_hold_more_than_the_limit(workers: int, limit: int) -> None:
    """`workers` processes take and release one gauge as fast as they can, some yielding
    the CPU now and then. Each marks itself in a separate page while it holds and, right
    after each take, counts every holder's marks there: never more than `limit`."""
    shared = segment(workers)
    cells = shared.layout.active_cells(0)
    # Shared with the children: one word per worker for what it holds, one for the most it saw.
    holding = mmap.mmap(-1, 8 * workers)
    seen = mmap.mmap(-1, 8 * workers)
    rounds = 20000
    pids = []
    for slot in range(workers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child)
            code = 1
            try:
                count = shared.node_count(cells, slot)
                rng = random.Random(slot)
                held = 0
                most = 0
                layout = f"<{workers}q"
                for _ in range(rounds):
                    if held and (held >= limit or rng.random() < 0.45):
                        held -= 1
                        struct.pack_into("<q", holding, 8 * slot, held)
                        count.publish(held)
                    elif count.try_take(held, limit):
                        held += 1
                        struct.pack_into("<q", holding, 8 * slot, held)
                        most = max(most, sum(struct.unpack_from(layout, holding, 0)))
                    if rng.random() < 0.02:
                        os.sched_yield()
                struct.pack_into("<q", seen, 8 * slot, most)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    deadline = time.monotonic() + 60
    running = set(pids)
    while running and time.monotonic() < deadline:
        for pid in list(running):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                assert os.waitstatus_to_exitcode(status) == 0
                running.discard(pid)
        time.sleep(0.01)  # not synchronisation: a bounded wait for the children to end
    for pid in running:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert not running, "the workers did not finish within 60 s"
    most = max(struct.unpack_from(f"<{workers}q", seen, 0))
    assert most <= limit, f"{most} held at once with a limit of {limit}"
    assert most == limit, f"the limit was never reached ({most}): the test proved nothing"
