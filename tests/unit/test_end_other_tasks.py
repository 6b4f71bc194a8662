"""supervisor.end_other_tasks: a stopped master ends its last tasks even when one of them
missed a cancellation (Python 3.11's wait_for drops one that arrives as the awaited thing
completes), and never waits longer than its timeout for one that will not end."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from balancer.supervisor import end_other_tasks


async def swallows(times: int) -> None:
    """A loop that survives its first `times` cancellations, as a check loop around wait_for does."""
    missed = 0
    while True:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            missed += 1
            if missed > times:
                raise


def test_a_task_that_missed_cancellations_is_ended() -> None:
    async def main() -> None:
        task = asyncio.create_task(swallows(3))
        await asyncio.sleep(0.02)
        started = time.monotonic()
        await end_other_tasks(5.0)
        assert task.cancelled() and time.monotonic() - started < 1.0

    asyncio.run(main())


def test_one_that_never_ends_is_named_after_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        task = asyncio.create_task(swallows(10**9))
        await asyncio.sleep(0.02)
        started = time.monotonic()
        await end_other_tasks(0.3)
        assert 0.3 <= time.monotonic() - started < 1.5 and not task.done()
        task.get_coro().close()  # the test's own cleanup

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    assert "1 task(s) did not end: swallows" in caplog.text
