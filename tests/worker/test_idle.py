"""The idle policy and the other-process CPU accounting, without processes or clocks."""

from __future__ import annotations

import pytest

from corral.worker.idle import (
    Decision,
    IdlePolicy,
    IdleState,
    ProcSample,
    Snapshot,
    other_cpu_percent,
    our_processes,
)

POLICY = IdlePolicy(threshold=20.0, grace=10.0, settle=2.0)
RUN = Decision(stop=False, give_back=False, may_start=True)
WAIT = Decision(stop=False, give_back=False, may_start=False)
STOP = Decision(stop=True, give_back=False, may_start=False)
GIVE_BACK = Decision(stop=True, give_back=True, may_start=False)


def walk(samples: list[tuple[float, float, bool]]) -> list[tuple[str, Decision]]:
    """Feed (time, load, has_tasks) samples from the start state; the modes and decisions."""
    state, out = IdleState(), []
    for now, load, has_tasks in samples:
        state, decision = POLICY.step(state, now, load, has_tasks)
        out.append((state.mode, decision))
    return out


def test_starts_in_idle_wait_and_runs_only_after_settling() -> None:
    assert walk([(0, 5, False), (1, 5, False), (2, 5, False)]) == [
        ("idle-wait", WAIT),
        ("idle-wait", WAIT),
        ("online", RUN),
    ]


def test_a_busy_sample_restarts_the_settling() -> None:
    modes = walk([(0, 5, False), (1, 50, False), (2, 5, False), (3, 5, False), (4, 5, False)])
    assert [m for m, _ in modes] == ["idle-wait"] * 4 + ["online"]


def test_owner_back_suspends_at_once_and_idle_resumes_after_settling() -> None:
    steps = walk(
        [(0, 0, False), (2, 0, True), (3, 90, True), (4, 0, True), (5, 0, True), (6, 0, True)]
    )
    assert steps == [
        ("idle-wait", WAIT),
        ("online", RUN),
        ("suspended", STOP),
        ("suspended", STOP),  # idle for 1 s only: stays stopped
        ("suspended", STOP),
        ("online", RUN),  # idle for 2 s: resume
    ]


def test_busy_past_grace_gives_the_tasks_back() -> None:
    steps = walk([(0, 0, False), (2, 0, True), (3, 90, True), (12, 90, True), (13, 90, True)])
    assert steps[2] == ("suspended", STOP)
    assert steps[3] == ("suspended", STOP)  # 9 s busy: not yet
    assert steps[4] == ("idle-wait", GIVE_BACK)


def test_short_idle_blips_do_not_reset_the_grace_period() -> None:
    steps = walk(
        [(0, 0, False), (2, 0, True), (3, 90, True), (8, 0, True), (9, 90, True), (13, 90, True)]
    )
    assert [m for m, _ in steps[2:5]] == ["suspended"] * 3
    assert steps[5] == ("idle-wait", GIVE_BACK)  # 10 s since the owner came back


def test_busy_without_tasks_is_idle_wait_and_a_late_task_is_stopped() -> None:
    steps = walk([(0, 0, False), (2, 0, False), (3, 90, False), (4, 90, True)])
    assert steps[2] == ("idle-wait", WAIT)
    assert steps[3] == ("suspended", STOP)  # a grant that arrived while busy does not run


def test_threshold_is_inclusive_of_idle() -> None:
    assert walk([(0, 20, False), (2, 20, False)])[-1] == ("online", RUN)


def snap(time: float, **procs: tuple[int, int, float, float, float]) -> Snapshot:
    """Processes as name=(pid, ppid, created, own, children); sid = pid."""
    return Snapshot(
        time,
        {(p[0], p[2]): ProcSample(p[1], p[0], p[3], p[4]) for p in procs.values()},
    )


def test_other_cpu_counts_growth_of_other_processes_only() -> None:
    prev = snap(10, init=(1, 0, 0, 1, 0), worker=(100, 1, 0, 5, 0), hog=(200, 1, 0, 1, 0))
    cur = snap(12, init=(1, 0, 0, 1, 0), worker=(100, 1, 0, 7, 0), hog=(200, 1, 0, 3, 0))
    ours = our_processes(cur, 100, [])
    # the hog used 2 s of CPU in 2 s on a 4-core machine: 25 %; the worker's 2 s do not count
    assert other_cpu_percent(prev, cur, ours, 4) == pytest.approx(25.0)


def test_a_process_born_since_counts_whole_and_a_reaped_child_counts_once() -> None:
    prev = snap(10, shell=(50, 1, 0, 1, 0), cc=(60, 50, 9, 1.5, 0))
    # cc exited (1.5 s already counted + 0.5 s more), shell reaped it: children grew by 2.0;
    # a new process born at 11 used 1 s
    cur = snap(12, shell=(50, 1, 0, 1, 2.0), new=(70, 1, 11, 1, 0))
    assert other_cpu_percent(prev, cur, set(), 1) == pytest.approx((0.5 + 1.0) / 2 * 100)


def test_a_process_missed_by_the_last_sample_counts_nothing_yet() -> None:
    prev = snap(10)
    cur = snap(12, old=(80, 1, 3, 100, 0))  # existed before the last look: no idea when it ran
    assert other_cpu_percent(prev, cur, set(), 1) == 0.0


def test_our_processes_are_the_worker_tree_and_task_sessions() -> None:
    cur = Snapshot(
        1,
        {
            (1, 0): ProcSample(0, 1, 0, 0),
            (100, 0): ProcSample(1, 100, 0, 0),  # the worker
            (101, 0): ProcSample(100, 101, 0, 0),  # a task leader
            (102, 0): ProcSample(101, 101, 0, 0),  # its child
            (103, 0): ProcSample(1, 101, 0, 0),  # a daemon the task left, re-parented to init
            (200, 0): ProcSample(1, 200, 0, 0),  # the owner's editor
        },
    )
    assert {k[0] for k in our_processes(cur, 100, [101])} == {100, 101, 102, 103}
