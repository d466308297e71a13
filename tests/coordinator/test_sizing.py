"""Sizing from past usage (issue 15): summaries, `min_memory=auto`, live samples; pure."""

from __future__ import annotations

import msgspec

from corral.coordinator.livelogs import LiveSamples
from corral.coordinator.scheduler import Matcher, auto_memory, fits, requirement_problem
from corral.coordinator.sizing import job_usage, spread
from corral.protocol import JobUsage, LiveUsage, Spread, Task, TaskSample


def test_spread_is_median_nearest_rank_p95_and_max() -> None:
    assert spread([]) is None
    assert spread([5]) == Spread(5, 5, 5)
    assert spread(range(1, 101)) == Spread(50.5, 95, 100)
    assert spread([1, 2, 3, 100]) == Spread(2.5, 100, 100)


def test_job_usage_leaves_out_what_was_not_measured() -> None:
    assert job_usage([]) is None
    got = job_usage([(100, None), (300, 2.0), (None, 4.0)])
    assert got == JobUsage(3, Spread(200, 300, 300), Spread(3.0, 4.0, 4.0))


def test_min_memory_auto() -> None:
    assert requirement_problem("min_memory", "auto") is None
    assert requirement_problem("min_memory", "lots") is not None
    assert fits({"min_memory": "auto"}, {"memory_free": 0})  # placed by peak_fits instead
    assert auto_memory(None) is None and auto_memory(1000) == 1200
    worker = Matcher({"memory_free": 1200, "slots": 2}, 2)
    assert worker.peak_fits(None) and worker.peak_fits(1000) and not worker.peak_fits(1001)
    assert worker({}) and not worker({"cpus": "3"})  # one task never takes more slots


def task(task_id: str, status: str = "running", worker: str | None = "w1") -> Task:
    return Task(
        task_id, "j", 0, "", status, ["x"], {}, {}, [], {}, {}, False, 1, 3, worker,
        None, None, None, None, {}, 1.0, 2.0, None,
    )  # fmt: skip


def test_live_samples_show_on_running_tasks_of_the_worker_that_sent_them() -> None:
    live = LiveSamples()
    sample = LiveUsage(50.0, 100, 200, 1.5)
    live.heard("w1", [TaskSample("t1", "l1", sample), TaskSample("t2", "l2", sample)], 7.0)
    got = live.attach([task("t1"), task("t2", "succeeded"), task("t3"), task("t1", worker="w2")])
    assert got[0].live == msgspec.structs.replace(sample, sampled=7.0)
    assert [t.live for t in got[1:]] == [None, None, None]
    live.heard("w1", [], 8.0)  # its next heartbeat: nothing runs there now
    assert live.attach([task("t1")])[0].live is None
