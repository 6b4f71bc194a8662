"""Test-wide guards.

`blocking_guard` fails a test when something blocks the event loop. It watches a loop
two ways, because neither catches everything on its own:

- asyncio's debug mode with `slow_callback_duration = 0.1` logs "Executing <handle>
  took N seconds" for a slow callback and names the culprit. The stock loop times every
  callback, protocol ones included; uvloop only times handles scheduled with call_soon /
  call_later, not the protocol callbacks it runs straight from libuv (the proxy's hot path).
- a heartbeat timer re-armed every 20 ms notes how late it fires. A late heartbeat means the
  loop did not come back to its timers: something ran too long, whatever the loop flavour.

Both measure wall time, so on a machine with more runnable threads than cores they would
also blame the loop for time it spent waiting for a CPU. On Linux the guard subtracts that:
/proc/self/task/*/schedstat counts, per thread, the time spent runnable but not running.
A stall is excused by as much as the most starved thread of this process waited since the
previous heartbeat (the loop thread itself, or a thread it waited on for the GIL), plus the
most any CPU lost to the hypervisor meanwhile (steal time in /proc/stat, which a shared VM
accrues in bursts), plus the time the garbage collector ran (a full collection of the test
process takes up to ~0.1 s); what remains must still stay under the limit. A time.sleep()
or a blocking socket call in the loop is not excused: a sleeping thread is not waiting for a CPU.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# `tests` is not a package; make `import tests.support...` work however pytest is started
# (`python -m pytest` puts the working directory on sys.path, a bare `pytest` does not).
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

# Seconds one callback may run before it counts as blocking. This is wall time, so a box
# loaded far beyond its cores can trip it without any blocking call; such a box may raise it
# with BALANCER_TEST_SLOW_CALLBACK (CI keeps the default).
SLOW_CALLBACK = float(os.environ.get("BALANCER_TEST_SLOW_CALLBACK", "0.1"))
HEARTBEAT = 0.02
# The heartbeat also absorbs scheduling noise (GIL hand-over to backend threads, GC, a busy CI
# box), so it is allowed a little more than one slow callback before it reports a stall.
HEARTBEAT_LAG = SLOW_CALLBACK + 0.05


_TOOK = re.compile(r" took (\d+(?:\.\d+)?) seconds$")


def _cpu_waits() -> dict[str, int]:
    """Per thread of this process, nanoseconds spent runnable but waiting for a CPU
    ({} where the kernel does not tell)."""
    waits: dict[str, int] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return waits
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as stats:
                waits[tid] = int(stats.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return waits


_TICK = 1 / os.sysconf("SC_CLK_TCK")  # seconds per /proc/stat tick


def _steal() -> dict[str, int]:
    """Per CPU, clock ticks the hypervisor ran something else while this guest wanted the
    CPU ("steal" in /proc/stat; {} where the kernel does not tell). A thread stalled that
    way is no more to blame than one waiting in the run queue."""
    steal: dict[str, int] = {}
    try:
        with open("/proc/stat") as stats:
            for line in stats:
                fields = line.split()
                if fields and fields[0].startswith("cpu") and fields[0] != "cpu" and len(fields) > 8:
                    steal[fields[0]] = int(fields[8])
    except (OSError, ValueError):
        pass
    return steal


class _GcClock:
    """Seconds this process spent in the cyclic garbage collector. A full collection of the
    test process (hundreds of tests' objects) takes up to ~0.1 s here, wherever it strikes:
    the loop was not blocked by the code under test."""

    def __init__(self) -> None:
        self.total = 0.0
        self._started = 0.0
        gc.callbacks.append(self._tick)

    def _tick(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._started


_GC = _GcClock()


class _AsyncioWarnings(logging.Handler):
    def __init__(self, guard: BlockingGuard) -> None:
        super().__init__(logging.WARNING)
        self.guard = guard

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.thread not in self.guard.loop_threads or not message.startswith("Executing "):
            return
        took = _TOOK.search(message)
        self.guard.report(float(took.group(1)) if took else SLOW_CALLBACK * 2, SLOW_CALLBACK, message)


class BlockingGuard:
    """Collects evidence that a watched event loop was blocked; see the module docstring."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.loop_threads: set[int] = set()
        self._heartbeat: asyncio.TimerHandle | None = None
        self._waits = _cpu_waits()
        self._steal = _steal()
        self._gc = _GC.total

    def report(self, seconds: float, limit: float, what: str) -> None:
        """Record `what`, a stall of `seconds`, unless waiting for a CPU explains it."""
        waits = _cpu_waits()
        # a thread born since the last heartbeat has waited all its life within the interval
        starved = max((waits[t] - self._waits.get(t, 0) for t in waits), default=0) / 1e9
        steal = _steal()
        starved += max((steal[c] - self._steal.get(c, 0) for c in steal), default=0) * _TICK
        starved += _GC.total - self._gc
        if seconds - starved > limit:
            note = f" ({starved:.3f}s of it waiting for a CPU)" if starved > 0.005 else ""
            self.problems.append(what + note)

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start watching `loop`; call from the loop's own thread (e.g. first thing in main())."""
        loop.set_debug(True)
        loop.slow_callback_duration = SLOW_CALLBACK
        self.loop_threads.add(threading.get_ident())
        self._waits = _cpu_waits()
        self._steal = _steal()
        self._gc = _GC.total
        expected = loop.time() + HEARTBEAT

        def beat() -> None:
            nonlocal expected
            lag = loop.time() - expected
            if lag > HEARTBEAT_LAG:
                self.report(lag, HEARTBEAT_LAG, f"event loop stalled: a heartbeat timer fired {lag:.3f}s late")
            self._waits = _cpu_waits()
            self._steal = _steal()
            self._gc = _GC.total
            expected = loop.time() + HEARTBEAT
            self._heartbeat = loop.call_later(HEARTBEAT, beat)

        self._heartbeat = loop.call_later(HEARTBEAT, beat)

    def unwatch(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None

    def check(self) -> None:
        """Fail the running test if the loop was blocked (each problem reported once)."""
        if self.problems:
            problems, self.problems = self.problems, []
            pytest.fail("blocking call in the event loop:\n  " + "\n  ".join(problems[:10]), pytrace=False)


@pytest.fixture
def blocking_guard() -> Iterator[BlockingGuard]:
    """A BlockingGuard; whatever it saw and nobody checked fails the test at teardown."""
    guard = BlockingGuard()
    handler = _AsyncioWarnings(guard)
    logger = logging.getLogger("asyncio")
    saved_level = logger.level
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield guard
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved_level)
        guard.unwatch()
    guard.check()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test old code: a data-plane module edited after it was compiled (see
    balancer.native) would be shadowed by its stale extension module."""
    from balancer import native

    stale = native.stale()
    if stale:
        pytest.exit(f"compiled modules older than their source: {', '.join(stale)}; run `make native`", returncode=1)
