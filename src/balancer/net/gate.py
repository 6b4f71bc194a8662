"""Admission: stop accepting at maxconn, resume below it (per worker process).

A frontend's listeners pause while the frontend holds `maxconn` client connections, and
every listener pauses while the process holds `global.maxconn`. Paused listeners leave new
connections in the kernel's accept queue (shared with the other workers), where they wait
instead of being refused. Limits are per worker: with N workers a frontend admits up to
N x maxconn connections in all, as with HAProxy's per-process maxconn.
"""

from __future__ import annotations

from collections.abc import Callable


class Gate:
    def __init__(self, process_max: int) -> None:
        self.process_max = process_max
        self.total = 0
        self._limits: dict[str, int] = {}
        self._counts: dict[str, int] = {}
        self._pausers: dict[str, list[tuple[Callable[[], None], Callable[[], None]]]] = {}
        self._paused: set[str] = set()
        self._all_paused = False

    def register(self, frontend: str, maxconn: int, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        """A listener of `frontend` (0 = no frontend limit) and how to pause and resume it."""
        self._limits[frontend] = maxconn
        self._counts.setdefault(frontend, 0)
        self._pausers.setdefault(frontend, []).append((pause, resume))

    def opened(self, frontend: str) -> None:
        self.total += 1
        count = self._counts.get(frontend, 0) + 1
        self._counts[frontend] = count
        limit = self._limits.get(frontend, 0)
        if limit and count >= limit and frontend not in self._paused:
            self._paused.add(frontend)
            self._apply(frontend, pause=True)
        if self.total >= self.process_max and not self._all_paused:
            self._all_paused = True
            for name in self._pausers:
                if name not in self._paused:
                    self._apply(name, pause=True)

    def closed(self, frontend: str) -> None:
        self.total -= 1
        count = self._counts.get(frontend, 1) - 1
        self._counts[frontend] = count
        if self._all_paused and self.total < self.process_max:
            self._all_paused = False
            for name in self._pausers:
                if name not in self._paused:
                    self._apply(name, pause=False)
        limit = self._limits.get(frontend, 0)
        if frontend in self._paused and count < limit:
            self._paused.discard(frontend)
            if not self._all_paused:
                self._apply(frontend, pause=False)

    def _apply(self, frontend: str, pause: bool) -> None:
        for pause_listener, resume_listener in self._pausers.get(frontend, ()):
            (pause_listener if pause else resume_listener)()
