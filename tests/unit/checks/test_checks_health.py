"""The rise/fall state machine of an active check, and what counts as an expected status.

`HealthTracker` is pure: a test feeds it check results one by one (no clock, no sockets)
and reads back the state, the flips and the interval the next check should wait.
"""

from __future__ import annotations

import pytest

from balancer.checks.health import HealthTracker, Transition
from balancer.checks.probes import status_expected

INTERVAL, FAST, DOWN = 2.0, 0.5, 5.0


def tracker(rise: int = 2, fall: int = 3, initial: str = "up") -> HealthTracker:
    return HealthTracker(rise, fall, INTERVAL, FAST, DOWN, initial=initial)  # type: ignore[arg-type]


def feed(t: HealthTracker, results: str) -> list[Transition]:
    """Feed results written as a string: "+" a passed check, "-" a failed one."""
    flips = []
    for i, r in enumerate(results):
        flip = t.record(r == "+", f"check {i} {'ok' if r == '+' else 'failed'}")
        if flip is not None:
            flips.append(flip)
    return flips


# -- up -> down --------------------------------------------------------------------------------


def test_fall_consecutive_failures_flip_up_to_down() -> None:
    t = tracker(fall=3)
    assert t.record(False, "http status 500 (expected 200)") is None
    assert t.state == "up"
    assert t.record(False, "http status 500 (expected 200)") is None
    assert t.state == "up"
    flip = t.record(False, "http: timeout")
    assert flip == Transition("up", "down", "http: timeout", 3)
    assert t.state == "down"


def test_fewer_than_fall_failures_change_nothing() -> None:
    t = tracker(fall=3)
    assert feed(t, "--") == []
    assert t.state == "up"


def test_a_success_resets_the_failure_streak() -> None:
    t = tracker(fall=3)
    assert feed(t, "--+--+--+") == []
    assert t.state == "up"
    assert t.streak == 0
    (flip,) = feed(t, "---")
    assert (flip.old, flip.new, flip.checks) == ("up", "down", 3)


def test_fall_one_flips_on_the_first_failure() -> None:
    t = tracker(fall=1)
    flip = t.record(False, "tcp connect: refused")
    assert flip is not None and flip.new == "down" and flip.checks == 1


def test_successes_while_up_never_flip() -> None:
    t = tracker()
    assert feed(t, "+" * 50) == []
    assert t.state == "up"


# -- down -> up --------------------------------------------------------------------------------


def test_rise_consecutive_successes_flip_down_to_up() -> None:
    t = tracker(rise=2, fall=1)
    feed(t, "-")
    assert t.state == "down"
    assert t.record(True, "http status 200") is None
    assert t.state == "down"
    flip = t.record(True, "http status 200")
    assert flip == Transition("down", "up", "http status 200", 2)
    assert t.state == "up"


def test_a_failure_resets_the_success_streak_while_down() -> None:
    t = tracker(rise=3, fall=1, initial="down")
    assert feed(t, "++-++-++-") == []
    assert t.state == "down"
    (flip,) = feed(t, "+++")
    assert (flip.old, flip.new, flip.checks) == ("down", "up", 3)


def test_failures_while_down_never_flip() -> None:
    t = tracker(initial="down")
    assert feed(t, "-" * 50) == []
    assert t.state == "down"


def test_a_full_cycle_flips_exactly_twice() -> None:
    t = tracker(rise=2, fall=2)
    flips = feed(t, "++-+--" + "--" + "+-++" + "++")
    assert [(f.old, f.new) for f in flips] == [("up", "down"), ("down", "up")]
    assert t.state == "up"


def test_the_transition_reason_is_the_result_that_made_the_flip() -> None:
    t = tracker(fall=2)
    t.record(False, "http status 503 (expected 200)")
    flip = t.record(False, "http: timeout")
    assert flip is not None and flip.reason == "http: timeout"
    assert t.last_result == "http: timeout"


def test_last_result_follows_every_check() -> None:
    t = tracker()
    t.record(True, "http status 200")
    assert t.last_result == "http status 200"
    t.record(False, "tcp connect: refused")
    assert t.last_result == "tcp connect: refused"


# -- intervals ---------------------------------------------------------------------------------


def test_interval_while_steadily_up() -> None:
    t = tracker()
    assert t.next_interval() == INTERVAL
    feed(t, "+++")
    assert t.next_interval() == INTERVAL


def test_fastinterval_while_a_fall_is_pending() -> None:
    t = tracker(fall=3)
    feed(t, "-")
    assert t.next_interval() == FAST
    feed(t, "-")
    assert t.next_interval() == FAST
    feed(t, "+")  # streak broken: back to the normal pace
    assert t.next_interval() == INTERVAL


def test_downinterval_while_down_and_fastinterval_while_a_rise_is_pending() -> None:
    t = tracker(rise=3, fall=2)
    feed(t, "--")
    assert t.state == "down"
    assert t.next_interval() == DOWN
    feed(t, "-")
    assert t.next_interval() == DOWN
    feed(t, "+")
    assert t.next_interval() == FAST
    feed(t, "+")
    assert t.next_interval() == FAST
    feed(t, "-")  # rise streak broken: still down
    assert t.next_interval() == DOWN
    feed(t, "+++")
    assert t.state == "up"
    assert t.next_interval() == INTERVAL


def test_fast_and_down_intervals_default_to_interval() -> None:
    t = HealthTracker(rise=1, fall=2, interval=1.5)
    feed(t, "-")
    assert t.next_interval() == 1.5
    feed(t, "-")
    assert t.state == "down"
    assert t.next_interval() == 1.5


def test_initial_state_down() -> None:
    t = tracker(rise=2, initial="down")
    assert t.state == "down"
    assert t.next_interval() == DOWN
    (flip,) = feed(t, "++")
    assert flip.new == "up"


# -- status_expected ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expect", "ok"),
    [
        (200, 200, True),
        (201, 200, False),
        (500, 200, False),
        (204, 204, True),
        (200, [200, 204], True),
        (204, [200, 204], True),
        (301, [200, 204], False),
        (500, [], False),
        (200, "2xx", True),
        (299, "2xx", True),
        (300, "2xx", False),
        (199, "2xx", False),
        (404, "4XX", True),
        (200, "200-399", True),
        (399, "200-399", True),
        (302, "200-399", True),
        (400, "200-399", False),
        (199, "200-399", False),
        (200, "200,301", True),
        (301, "200,301", True),
        (302, "200,301", False),
        (301, "200, 301", True),
        (302, "2xx,300-302", True),
        (404, "2xx,300-302", False),
        (200, "200", True),
        (500, "200", False),
        (200, "", False),
        (200, "junk", False),
    ],
)
def test_status_expected(status: int, expect: int | list[int] | str, ok: bool) -> None:
    assert status_expected(status, expect) is ok
