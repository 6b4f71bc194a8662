"""net.deadline: per-connection timeouts filed in a per-loop wheel of TICK-wide slots."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import uvloop

from balancer.net.deadline import TICK, Deadline, wheel_of


def run(test: Callable[[], Awaitable[None]]) -> None:
    uvloop.run(test())  # type: ignore[arg-type]


async def fired_at(deadline_event: asyncio.Event, bound: float) -> None:
    await asyncio.wait_for(deadline_event.wait(), bound)


def test_a_deadline_fires_not_before_its_time_and_at_most_a_tick_late() -> None:
    async def test() -> None:
        loop = asyncio.get_running_loop()
        fired = asyncio.Event()
        times: list[float] = []

        def callback() -> None:
            times.append(loop.time())
            fired.set()

        deadline = Deadline(loop, callback)
        start = loop.time()
        deadline.set(0.05, start)
        await fired_at(fired, 2.0)
        # uvloop's clock has millisecond steps: a millisecond of slack either way.
        assert start + 0.05 - 0.002 <= times[0] <= start + 0.05 + TICK + 0.05
        assert deadline.when == 0.0  # not set any more

    run(test)


def test_moving_a_deadline_later_delays_it_and_earlier_brings_it_forward() -> None:
    async def test() -> None:
        loop = asyncio.get_running_loop()
        fired: list[str] = []
        later, earlier = asyncio.Event(), asyncio.Event()

        def fire_a() -> None:
            fired.append("a")
            later.set()

        def fire_b() -> None:
            fired.append("b")
            earlier.set()

        a = Deadline(loop, fire_a)
        b = Deadline(loop, fire_b)
        start = loop.time()
        a.set(0.02, start)
        a.set(0.3, start)  # moved later: filed for 0.02, files itself again then
        b.set(5.0, start)
        b.set(0.05, start)  # moved earlier: filed again, now
        await fired_at(earlier, 2.0)
        assert fired == ["b"] and loop.time() < start + 0.3
        await fired_at(later, 2.0)
        assert fired == ["b", "a"] and loop.time() >= start + 0.3 - 0.002

    run(test)


def test_a_cancelled_or_cleared_deadline_never_calls_back() -> None:
    async def test() -> None:
        loop = asyncio.get_running_loop()
        fired: list[str] = []
        cancelled = Deadline(loop, lambda: fired.append("cancelled"))
        cleared = Deadline(loop, lambda: fired.append("cleared"))
        marker = asyncio.Event()
        last = Deadline(loop, marker.set)
        start = loop.time()
        cancelled.set(0.02, start)
        cleared.set(0.02, start)
        last.set(0.06, start)
        cancelled.cancel()
        cleared.clear()
        await fired_at(marker, 2.0)
        assert fired == []

    run(test)


def test_deadlines_in_one_slot_share_one_loop_timer() -> None:
    async def test() -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        fired: list[int] = []
        count = 1000

        def callback(i: int) -> Callable[[], None]:
            def fire() -> None:
                fired.append(i)
                if len(fired) == count:
                    done.set()

            return fire

        start = loop.time()
        deadlines = [Deadline(loop, callback(i)) for i in range(count)]
        for deadline in deadlines:
            deadline.set(0.05, start)
        wheel = wheel_of(loop)
        assert len(wheel._slots) == 1  # one slot, one loop timer, for all of them
        await fired_at(done, 2.0)
        assert sorted(fired) == list(range(count))

    run(test)


def test_a_timeout_that_raises_costs_no_other_deadline_its_turn() -> None:
    """One connection's failing timeout callback is logged; the deadlines filed in the same
    slot and in later slots still fire (the wheel keeps its loop timer)."""

    async def test() -> None:
        loop = asyncio.get_running_loop()
        fired: list[str] = []
        done = asyncio.Event()

        def broken() -> None:
            raise RuntimeError("a bug in one connection's timeout")

        def same_slot() -> None:
            fired.append("same slot")

        def later() -> None:
            fired.append("later")
            done.set()

        start = loop.time()
        Deadline(loop, broken).set(0.02, start)
        Deadline(loop, same_slot).set(0.02, start)
        Deadline(loop, later).set(0.1, start)
        await fired_at(done, 2.0)
        assert fired == ["same slot", "later"]

    run(test)
