"""When a worker gives its heap back: after a crowd leaves, at each halving, and once more."""

from __future__ import annotations

from balancer.heap import HeapTrimmer


def _trims(counts: list[int]) -> list[int]:
    """The connection counts at which the trimmer trimmed, fed `counts` beat by beat."""
    trimmer = HeapTrimmer(min_peak=256)
    return [count for count in counts if trimmer.observe(count)]


def test_a_crowd_leaving_over_several_beats_is_trimmed_at_each_halving_and_after_it_left() -> None:
    # 300 slow readers leaving over several beats: the memory the second half frees is given
    # back too (one trim at 150 kept it, the flake CI met).
    assert _trims([10, 300, 300, 200, 140, 90, 60, 20, 0, 0, 0]) == [140, 60, 20, 0]


def test_a_crowd_leaving_at_once_is_trimmed_and_once_more_on_the_next_beat() -> None:
    assert _trims([300, 0, 0, 0]) == [0, 0]


def test_no_trim_without_a_crowd_or_while_it_stays() -> None:
    assert _trims([10, 200, 100, 0, 0]) == []
    assert _trims([300, 290, 280, 300, 260]) == []


def test_a_new_crowd_after_the_first_is_trimmed_again() -> None:
    assert _trims([300, 0, 0, 500, 100, 0]) == [0, 0, 100, 0]
