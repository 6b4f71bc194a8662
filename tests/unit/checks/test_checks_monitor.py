"""The health monitor's loops with an injected clock: scripted probe results, a seeded RNG and
an `asyncio.sleep` that records what it was asked to wait and returns at once.

What it shows: the waits (a random share of the interval first, then the interval, the fast
interval while a change is pending, the down interval while down, each with +-10% jitter), one
log line per flip, the slowstart ramp, and how agent replies become the server's agent state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterator
from typing import Any

import pytest

import balancer.checks.monitor as monitor_mod
from balancer.checks.monitor import SLOWSTART_STEPS, HealthMonitor
from balancer.config import parse_config
from balancer.proto.agent import AgentReply
from balancer.runtime.master_state import MasterState, ServerStatus

INTERVAL, FAST, DOWN = 2.0, 0.5, 5.0
CHECK = (
    'check = { type = "http", path = "/health", interval = "2s", fastinterval = "500ms", '
    'downinterval = "5s", rise = 2, fall = 3, timeout = "1s" }'
)
AGENT_INTERVAL = 3.0
AGENT = 'agent = { port = 15555, interval = "3s" }'
PORTS = {19001: "s1", 19002: "s2"}
HOSTS = {"127.0.0.1": "s1", "127.0.0.2": "s2"}


def make_state(*, check: bool = True, agent: bool = False, slowstart: str = "0s") -> MasterState:
    """Backend `web` with s1 (127.0.0.1:19001) and s2 (127.0.0.2:19002), both ready and up."""
    text = f"""
[[frontend]]
name = "www"
bind = ["127.0.0.1:18080"]
default_backend = "web"

[[backend]]
name = "web"
{CHECK if check else ""}
{AGENT if agent else ""}

  [[backend.server]]
  name = "s1"
  address = "127.0.0.1:19001"
  slowstart = "{slowstart}"

  [[backend.server]]
  name = "s2"
  address = "127.0.0.2:19002"
"""
    config = parse_config(text)
    state = MasterState(config)  # no shared segments: update() only keeps the records
    state.records = {(b.name, s.name): ServerStatus(s.state, "up", s.weight) for b in config.backend for s in b.server}
    return state


class Clock:
    """Stands in for asyncio.sleep: records each wait and only yields to the loop once.

    A wait of exactly `hold` seconds blocks until `release()` (to stop a ramp half-way).
    """

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.real_sleep = asyncio.sleep
        self.hold: float | None = None
        self.released = asyncio.Event()

    async def sleep(self, seconds: float, *args: Any) -> None:
        self.waits.append(seconds)
        if seconds == self.hold:
            await self.released.wait()
        await self.real_sleep(0)

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    fake = Clock()
    monkeypatch.setattr(monitor_mod.asyncio, "sleep", fake.sleep)
    yield fake


class Script:
    """Each server's probe results in order; when a server's run out, its probe blocks for good."""

    def __init__(self, results: dict[str, list[Any]]) -> None:
        self.results = results
        self.done = {name: asyncio.Event() for name in results}

    async def next(self, name: str) -> Any:
        if not self.results[name]:
            self.done[name].set()
            await asyncio.Event().wait()
        return self.results[name].pop(0)

    async def finished(self) -> None:
        for event in self.done.values():
            await event.wait()


def http_results(text: str) -> list[tuple[bool, str]]:
    """ "+" a passed HTTP check, "-" a 500."""
    return [(True, "http status 200") if c == "+" else (False, "http status 500 (expected 200)") for c in text]


def use_http_script(monkeypatch: pytest.MonkeyPatch, script: Script) -> None:
    async def http_check(address: Any, check: Any, timeout: float) -> tuple[bool, str]:
        return await script.next(PORTS[address.port])  # type: ignore[no-any-return]

    monkeypatch.setattr(monitor_mod, "http_check", http_check)


def drive(state: MasterState, rng: random.Random, script: Script, clock: Clock) -> None:
    """Run the monitor until every server's script is used up, then let side tasks finish."""

    async def main() -> None:
        monitor = HealthMonitor(state, rng)
        monitor.start(state.config)
        await asyncio.wait_for(script.finished(), 5)
        for _ in range(SLOWSTART_STEPS * 4):
            await clock.real_sleep(0)
        monitor.stop()

    asyncio.run(main())


# -- active checks -------------------------------------------------------------------------------


def test_waits_follow_the_state_with_jitter(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    state = make_state()
    results = "+" + "---" + "--" + "+-" + "++" + "+"
    bases = [
        INTERVAL,  # "+"
        FAST,  # "-": a fall is pending
        FAST,  # "--"
        DOWN,  # "---": down
        DOWN,  # "-" while down
        DOWN,
        FAST,  # "+": a rise is pending
        DOWN,  # "-" breaks it
        FAST,  # "+"
        INTERVAL,  # "++": up again
        INTERVAL,
    ]
    script = Script({"s1": http_results(results), "s2": []})
    use_http_script(monkeypatch, script)

    drive(state, random.Random(7), script, clock)

    # s1 and s2 each wait a random share of the interval first (s1's task starts first), then
    # s2's probe blocks and every further wait is s1's, one after each result
    first, second, *after = clock.waits
    assert 0 <= first < INTERVAL and 0 <= second < INTERVAL and first != second, clock.waits
    assert len(after) == len(bases), clock.waits
    for i, (wait, base) in enumerate(zip(after, bases, strict=True)):
        assert base * 0.9 <= wait <= base * 1.1, f"wait {i} is {wait} for a base of {base}: {after}"
    assert len(set(after)) == len(after), "jitter: no two waits alike"
    assert state.records[("web", "s1")].health == "up"
    assert state.records[("web", "s1")].last_check == "http status 200"


def test_first_waits_are_spread_over_the_interval(clock: Clock) -> None:
    monitor = HealthMonitor(make_state(), random.Random(1))

    async def main() -> None:
        for _ in range(50):
            await monitor._sleep(INTERVAL, first=True)

    asyncio.run(main())
    assert all(0 <= w < INTERVAL for w in clock.waits)
    assert min(clock.waits) < INTERVAL / 4 and max(clock.waits) > INTERVAL * 3 / 4, clock.waits


def test_a_flip_is_published_and_logged_in_one_line(
    monkeypatch: pytest.MonkeyPatch, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    state = make_state()
    script = Script({"s1": http_results("+---"), "s2": http_results("++")})
    use_http_script(monkeypatch, script)
    caplog.set_level(logging.INFO, logger="balancer.health")

    drive(state, random.Random(3), script, clock)

    s1, s2 = state.records[("web", "s1")], state.records[("web", "s2")]
    assert (s1.health, s1.effective().health, s1.last_check) == ("down", "down", "http status 500 (expected 200)")
    assert (s2.health, s2.last_check) == ("up", "http status 200")
    assert s1.changed_at > 0
    lines = [r.getMessage() for r in caplog.records if r.name == "balancer.health"]
    assert len(lines) == 1, lines
    line = lines[0]
    assert "web/s1" in line, line
    assert "DOWN" in line and "was up" in line, line
    assert "http status 500 (expected 200)" in line, line
    assert "3 consecutive" in line, line
    assert "1 of 2 servers usable" in line, line


def test_slowstart_ramps_the_weight_after_recovery(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    state = make_state(slowstart="1s")
    state.records[("web", "s1")] = ServerStatus("ready", "down", 100)
    weights: list[int] = []
    real_update = state.update

    def update(key: tuple[str, str], **changes: Any) -> ServerStatus:
        new = real_update(key, **changes)
        if key == ("web", "s1") and "ramp" in changes:
            weights.append(new.effective().weight)
        return new

    monkeypatch.setattr(state, "update", update)
    script = Script({"s1": http_results("-++"), "s2": []})
    use_http_script(monkeypatch, script)

    drive(state, random.Random(5), script, clock)

    assert state.records[("web", "s1")].health == "up"
    assert weights == [100 * step // SLOWSTART_STEPS for step in range(1, SLOWSTART_STEPS + 1)], weights
    ramp_waits = [w for w in clock.waits if w == pytest.approx(1.0 / SLOWSTART_STEPS)]
    assert len(ramp_waits) == SLOWSTART_STEPS - 1, clock.waits


def test_a_restart_of_the_monitor_mid_ramp_does_not_freeze_the_weight(
    monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    # A reload (supervisor: monitor.stop(); monitor.start(new config)) in the middle of a
    # slowstart ramp must not leave the server at a fraction of its weight for good.
    state = make_state(slowstart="1s")
    state.records[("web", "s1")] = ServerStatus("ready", "down", 100)
    clock.hold = 1.0 / SLOWSTART_STEPS  # the ramp's steps wait until released
    first = Script({"s1": http_results("++"), "s2": []})
    second = Script({"s1": http_results("+" * 10), "s2": []})
    scripts = [first]

    async def http_check(address: Any, check: Any, timeout: float) -> tuple[bool, str]:
        return await scripts[-1].next(PORTS[address.port])  # type: ignore[no-any-return]

    monkeypatch.setattr(monitor_mod, "http_check", http_check)
    during: list[ServerStatus] = []

    async def main() -> None:
        monitor = HealthMonitor(state, random.Random(11))
        monitor.start(state.config)
        await asyncio.wait_for(first.finished(), 5)
        during.append(state.records[("web", "s1")])
        monitor.stop()  # what a reload does
        scripts.append(second)
        monitor.start(state.config)
        clock.release()
        await asyncio.wait_for(second.finished(), 5)
        for _ in range(SLOWSTART_STEPS * 4):
            await clock.real_sleep(0)
        monitor.stop()

    asyncio.run(main())

    assert (during[0].health, during[0].ramp) == ("up", 1.0 / SLOWSTART_STEPS), during
    record = state.records[("web", "s1")]
    assert record.health == "up"
    assert record.ramp == 1.0, f"ramp frozen at {record.ramp} (effective weight {record.effective().weight} of 100)"


def test_no_slowstart_means_full_weight_at_once(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    state = make_state()
    state.records[("web", "s1")] = ServerStatus("ready", "down", 100)
    script = Script({"s1": http_results("++"), "s2": []})
    use_http_script(monkeypatch, script)

    drive(state, random.Random(5), script, clock)

    record = state.records[("web", "s1")]
    assert (record.health, record.ramp, record.effective().weight) == ("up", 1.0, 100)


# -- agent replies become agent state --------------------------------------------------------------


def test_agent_replies_become_the_agent_state(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    state = make_state(check=False, agent=True)
    replies: list[tuple[AgentReply | None, str]] = [
        (AgentReply(health="up", weight_percent=80), "agent said 'up 80%'"),
        (AgentReply(admin_state="drain"), "agent said 'drain'"),  # the weight persists
        (None, "agent connect: Connection refused"),  # unreachable: nothing changes
        (AgentReply(health="up", weight_percent=50), "agent said 'up 50%'"),  # no drain word: the drain ends
        (AgentReply(health="down"), "agent said 'down'"),
        (AgentReply(admin_state="maint", weight_percent=10), "agent said 'maint 10%'"),
        (AgentReply(admin_state="ready"), "agent said 'ready'"),
    ]
    script = Script({"s1": list(replies), "s2": [(None, "agent connect: Connection refused")]})
    seen: list[tuple[str, int, str, str, int]] = []
    asked: list[tuple[str, int]] = []

    async def agent_check(address: Any, timeout: float) -> tuple[AgentReply | None, str]:
        asked.append((address.host, address.port))
        name = HOSTS[address.host]
        if name == "s1":
            status = state.records[("web", "s1")]
            effective = status.effective()
            seen.append(
                (status.agent_state, status.agent_weight, effective.admin_state, effective.health, effective.weight)
            )
        return await script.next(name)  # type: ignore[no-any-return]

    monkeypatch.setattr(monitor_mod, "agent_check", agent_check)

    drive(state, random.Random(9), script, clock)

    assert set(asked) == {("127.0.0.1", 15555), ("127.0.0.2", 15555)}, "the agent is asked at each server's host"
    assert seen == [
        ("ready", -1, "ready", "up", 100),  # before any reply
        ("ready", 80, "ready", "up", 80),
        ("drain", 80, "drain", "up", 80),
        ("drain", 80, "drain", "up", 80),
        ("ready", 50, "ready", "up", 50),
        ("down", 50, "ready", "down", 50),
        ("maint", 10, "maint", "up", 10),
        ("ready", 10, "ready", "up", 10),
    ]
    s1 = state.records[("web", "s1")]
    assert s1.admin_state == "ready" and s1.weight == 100, "the operator's own state and weight are untouched"
    s2 = state.records[("web", "s2")]
    assert (s2.agent_state, s2.agent_weight) == ("ready", -1), "an unreachable agent changes nothing"
    assert clock.waits and all(w <= AGENT_INTERVAL * 1.1 for w in clock.waits), clock.waits


def test_a_check_loop_that_missed_its_cancellation_ends_after_stop(
    monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    """Python 3.11's wait_for returns the probe's result when the cancellation arrives as the
    probe completes, and the loop would check on for ever (a master that never exits, a
    reload that leaves old checks running). Here every probe swallows its cancellation."""
    probes = 0

    async def http_check(address: Any, check: Any, timeout: float) -> tuple[bool, str]:
        nonlocal probes
        probes += 1
        with contextlib.suppress(asyncio.CancelledError):  # as wait_for when the probe had just completed
            await clock.real_sleep(0.001)
        return True, "http status 200"

    monkeypatch.setattr(monitor_mod, "http_check", http_check)

    async def main() -> None:
        monitor = HealthMonitor(make_state(), random.Random(3))
        monitor.start(monitor.state.config)
        tasks = list(monitor.tasks)
        while probes < 10:
            await clock.real_sleep(0.001)
        monitor.stop()
        _, running = await asyncio.wait(tasks, timeout=2)  # wait() cancels nothing itself
        after = probes
        await clock.real_sleep(0.05)
        for task in running:  # so that a failure does not hang the test
            task.get_coro().close()
        assert not running and probes == after, f"{len(running)} loops still checking"

    asyncio.run(main())
