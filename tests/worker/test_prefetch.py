"""The prefetch decision: pure, no processes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from corral.worker.prefetch import (
    HORIZON,
    MAX_PER_SLOT,
    RunTimes,
    prefetch_room,
    worth_asking,
)


def test_nothing_until_a_task_has_finished() -> None:
    assert prefetch_room(4, None) == 0


def test_long_tasks_are_never_prefetched() -> None:
    assert prefetch_room(1, HORIZON) == 0
    assert prefetch_room(8, 30.0) == 0


def test_a_long_running_task_stops_prefetch() -> None:
    assert prefetch_room(2, 0.001, oldest=0.01) == 2 * MAX_PER_SLOT
    assert prefetch_room(2, 0.001, oldest=HORIZON) == 0


def test_short_tasks_fill_the_horizon_up_to_the_cap() -> None:
    assert prefetch_room(1, 0.05) == 2  # two 50 ms tasks make the 100 ms horizon
    assert prefetch_room(2, 0.05) == 4
    assert prefetch_room(1, 0.001) == MAX_PER_SLOT
    assert prefetch_room(3, 0.0) == 3 * MAX_PER_SLOT


@given(st.integers(0, 64), st.floats(0, 100, allow_nan=False))
def test_room_is_bounded(slots: int, mean: float) -> None:
    room = prefetch_room(slots, mean)
    assert 0 <= room <= MAX_PER_SLOT * max(slots, 0)
    assert room == 0 or mean * room <= HORIZON * slots + 1e-9


def test_mean_follows_recent_tasks() -> None:
    times = RunTimes()
    times.add(0.002)
    assert times.mean == 0.002
    for _ in range(40):  # the work changed: tasks now take 2 s
        times.add(2.0)
    assert times.mean is not None and times.mean > 1.9
    assert prefetch_room(1, times.mean) == 0


def test_asks_at_once_when_nothing_waits_locally() -> None:
    assert worth_asking(1, 0, 0)
    assert worth_asking(1, 8, 0)
    assert not worth_asking(0, 8, 0)


def test_with_a_local_queue_asks_once_half_the_room_is_free() -> None:
    assert not worth_asking(3, 8, 5)
    assert worth_asking(4, 8, 4)
    assert worth_asking(1, 0, 1)  # no prefetch: every free slot is worth a call
