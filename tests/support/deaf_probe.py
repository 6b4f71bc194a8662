"""A health probe that misses its cancellation, for the check loops' stop and reload tests.

Python 3.11's `wait_for` returns the awaited probe's result when a cancellation arrives as
the probe completes: the task goes on as if never cancelled. `DeafProbe` stands in for
`tcp_check` and does so every time a cancellation meets it, until `swallowing` is turned
off (a test's clean-up, so that every loop can end)."""

from __future__ import annotations

import asyncio
from typing import Any


class DeafProbe:
    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds  # how long a probe takes: the window a cancellation meets
        self.by_task: dict[int, int] = {}  # probes made, by id() of the task that made them
        self.inside = asyncio.Event()  # set while a probe runs
        self.swallowing = True

    @property
    def count(self) -> int:
        return sum(self.by_task.values())

    async def __call__(self, address: Any, timeout: float) -> tuple[bool, str]:
        task = id(asyncio.current_task())
        self.by_task[task] = self.by_task.get(task, 0) + 1
        self.inside.set()
        try:
            await asyncio.sleep(self.seconds)
        except asyncio.CancelledError:
            if not self.swallowing:
                raise
        self.inside.clear()
        return True, ""
