"""The speculation policy (coordinator/speculation.py): pure, no store, no sockets."""

from __future__ import annotations

import statistics

from hypothesis import given
from hypothesis import strategies as st

from corral.coordinator.speculation import Phase, Running, SpeculationPolicy, settle

POLICY = SpeculationPolicy(factor=1.5, min_seconds=5.0, done_fraction=0.75)


def phase(
    durations: list[float], running: list[Running], total: int = 0, done: int | None = None
) -> Phase:
    done = len(durations) if done is None else done
    return Phase(total or done + len(running), done, durations, running)


def test_a_task_past_one_and_a_half_medians_is_a_straggler() -> None:
    slow = Running("slow", started=0.0, worker_id="a")
    fresh = Running("fresh", started=90.0, worker_id="b")
    p = phase([10.0, 10.0, 12.0, 8.0, 10.0, 11.0], [slow, fresh])
    assert POLICY.threshold(p) == 15.0
    assert POLICY.stragglers(p, now=100.0) == [slow]
    assert POLICY.stragglers(p, now=14.9) == []  # not yet past 15 s


def test_min_seconds_guards_short_phases() -> None:
    slow = Running("slow", started=0.0, worker_id="a")
    p = phase([0.1, 0.1, 0.1], [slow])
    assert POLICY.threshold(p) == 5.0
    assert POLICY.stragglers(p, now=4.0) == []
    assert POLICY.stragglers(p, now=5.5) == [slow]


def test_no_backup_before_most_of_the_phase_is_done() -> None:
    slow = Running("slow", started=0.0, worker_id="a")
    others = [Running(f"r{i}", 99.0, "b") for i in range(4)]
    p = phase([1.0, 1.0, 1.0], [slow, *others])  # 3 of 8 done
    assert POLICY.threshold(p) is None
    assert POLICY.stragglers(p, now=1000.0) == []


def test_failed_and_killed_tasks_count_as_done_but_give_no_duration() -> None:
    slow = Running("slow", started=0.0, worker_id="a")
    assert POLICY.stragglers(phase([], [slow], total=4, done=3), now=1000.0) == []  # no median
    p = phase([2.0], [slow], total=4, done=3)  # two failed, one succeeded in 2 s
    assert POLICY.stragglers(p, now=6.0) == [slow]


def test_a_task_gets_one_backup_ever() -> None:
    backed = Running("slow", started=0.0, worker_id="a", backed_up=True)
    assert POLICY.stragglers(phase([1.0] * 9, [backed]), now=1000.0) == []


def test_candidates_skip_the_asking_workers_own_tasks_longest_first() -> None:
    old = Running("old", started=0.0, worker_id="a")
    mine = Running("mine", started=1.0, worker_id="b")
    newer = Running("newer", started=2.0, worker_id="c")
    p = phase([1.0] * 9, [newer, mine, old])
    q = phase([1.0] * 9, [Running("other", started=0.5, worker_id="a")])
    got = POLICY.candidates([p, q], now=100.0, worker_id="b")
    assert [r.task_id for r in got] == ["old", "other", "newer"]


def test_settle_table() -> None:
    assert settle("backup", succeeded=True, backup_live=True) == "record"
    assert settle("primary", succeeded=True, backup_live=True) == "record"
    assert settle("backup", succeeded=False, backup_live=True) == "drop_backup"
    assert settle("primary", succeeded=False, backup_live=True) == "promote_backup"
    assert settle("primary", succeeded=False, backup_live=False) == "record"


durations = st.lists(st.floats(0.0, 1000.0), min_size=1, max_size=30)
most = st.lists(st.floats(0.0, 1000.0), min_size=3, max_size=30)  # 3 of 4 or more done


@given(most, st.floats(0.0, 5000.0), st.floats(0.0, 5000.0))
def test_a_straggler_has_run_past_factor_medians_and_min_seconds(
    done: list[float], started: float, now: float
) -> None:
    run = Running("t", started=started, worker_id="a")
    got = POLICY.stragglers(phase(done, [run]), now)
    limit = max(1.5 * statistics.median(done), 5.0)
    assert (got == [run]) == (now - started > limit)


@given(durations, st.integers(0, 30), st.floats(0.0, 5000.0))
def test_never_a_backup_below_the_done_fraction(done: list[float], left: int, now: float) -> None:
    runs = [Running(f"t{i}", 0.0, "a") for i in range(left + 1)]
    p = phase(done, runs)
    if p.done < 0.75 * p.total:
        assert POLICY.stragglers(p, now) == []
    for r in POLICY.candidates([p], now, "a"):
        raise AssertionError(f"{r} runs on the asking worker")
