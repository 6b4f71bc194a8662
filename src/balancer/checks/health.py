"""The rise/fall state machine of one server's active health check.

A server that is up goes down after `fall` consecutive failed checks; a server that is
down comes back after `rise` consecutive successes. Between the first result against the
current state and the flip the check is "in transition": it runs at `fastinterval`; while
down it runs at `downinterval`; otherwise at `interval`. Pure logic: the caller feeds
results and reads the interval, so tests drive it with no clock at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from balancer.runtime.state import Health


@dataclass(frozen=True)
class Transition:
    old: Health
    new: Health
    reason: str  # the result that made the flip, e.g. "http status 500 (expected 200)"
    checks: int  # consecutive results that led to it


class HealthTracker:
    def __init__(
        self,
        rise: int,
        fall: int,
        interval: float,
        fastinterval: float | None = None,
        downinterval: float | None = None,
        initial: Health = "up",
    ) -> None:
        self.rise = rise
        self.fall = fall
        self.interval = interval
        self.fastinterval = fastinterval if fastinterval is not None else interval
        self.downinterval = downinterval if downinterval is not None else interval
        self.state: Health = initial
        self.streak = 0  # consecutive results against the current state
        self.last_result = ""

    def record(self, ok: bool, detail: str) -> Transition | None:
        """Feed one check result; returns the transition when the state flips."""
        self.last_result = detail
        against = (not ok) if self.state == "up" else ok
        if not against:
            self.streak = 0
            return None
        self.streak += 1
        needed = self.fall if self.state == "up" else self.rise
        if self.streak < needed:
            return None
        old = self.state
        self.state = "down" if old == "up" else "up"
        checks, self.streak = self.streak, 0
        return Transition(old, self.state, detail, checks)

    def next_interval(self) -> float:
        if self.streak:
            return self.fastinterval
        if self.state == "down":
            return self.downinterval
        return self.interval
