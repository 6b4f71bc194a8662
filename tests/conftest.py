"""Test-wide guards.

`blocking_guard` fails a test when something blocks the event loop. It watches a loop
two ways, because neither catches everything on its own:

- asyncio's debug mode with `slow_callback_duration = 0.1` logs "Executing <handle>
  took N seconds" for a slow callback and names the culprit. The stock loop times every
  callback, protocol ones included; uvloop only times handles scheduled with call_soon /
  call_later, not the protocol callbacks it runs straight from libuv (the proxy's hot path).
- a heartbeat timer re-armed every 20 ms notes how late it fires. A late heartbeat means the
  loop did not come back to its timers: something ran too long, whatever the loop flavour.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

# `tests` is not a package; make `import tests.support...` work however pytest is started
# (`python -m pytest` puts the working directory on sys.path, a bare `pytest` does not).
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

SLOW_CALLBACK = 0.1  # seconds one callback may run before it counts as blocking
HEARTBEAT = 0.02
# The heartbeat also absorbs scheduling noise (GIL hand-over to backend threads, GC, a busy CI
# box), so it is allowed a little more than one slow callback before it reports a stall.
HEARTBEAT_LAG = SLOW_CALLBACK + 0.05


class _AsyncioWarnings(logging.Handler):
    def __init__(self, guard: BlockingGuard) -> None:
        super().__init__(logging.WARNING)
        self.guard = guard

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread in self.guard.loop_threads and record.getMessage().startswith("Executing "):
            self.guard.problems.append(record.getMessage())


class BlockingGuard:
    """Collects evidence that a watched event loop was blocked; see the module docstring."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.loop_threads: set[int] = set()
        self._heartbeat: asyncio.TimerHandle | None = None

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start watching `loop`; call from the loop's own thread (e.g. first thing in main())."""
        loop.set_debug(True)
        loop.slow_callback_duration = SLOW_CALLBACK
        self.loop_threads.add(threading.get_ident())
        expected = loop.time() + HEARTBEAT

        def beat() -> None:
            nonlocal expected
            lag = loop.time() - expected
            if lag > HEARTBEAT_LAG:
                self.problems.append(f"event loop stalled: a heartbeat timer fired {lag:.3f}s late")
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
