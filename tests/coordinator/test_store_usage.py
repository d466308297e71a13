"""The Store contract for what jobs used (issue 15), on every backend: the peaks
`min_memory=auto` places by, and finished tasks' figures for `show JOB`."""

from __future__ import annotations

from corral.coordinator.scheduler import Matcher
from corral.coordinator.store import NewTask, Outcome, Store
from corral.protocol import TaskSpec

GB = 1 << 30
AUTO = {"min_memory": "auto"}


def make(store: Store, job_id: str, n: int, now: float = 1.0) -> list[str]:
    ids = [f"{job_id}-t{i}" for i in range(n)]
    tasks = [NewTask(t, i, TaskSpec(argv=["x"], requires=AUTO)) for i, t in enumerate(ids)]
    store.create_job(job_id, job_id, "alice", now, tasks)
    return ids


def used(peak: int | None, cpu: float | None, status: str = "succeeded") -> Outcome:
    return Outcome(status, 0, None, None, None, {}, None, peak, cpu)


def test_peaks_and_finished_usage(store: Store) -> None:
    make(store, "a", 3)
    make(store, "b", 1, now=2.0)
    one, two, _ = store.lease("w1", 3, 10.0, 20.0, 100)
    assert store.job_peaks(["a", "b"]) == {"a": None, "b": None}
    assert store.finished_usage("a") == []
    assert store.finish(one.task_id, one.lease_id, used(3 * GB, 2.5), 11.0)
    assert store.finish(two.task_id, two.lease_id, used(None, 1.0, "failed"), 12.0)
    assert store.job_peaks(["a", "b", "a"]) == {"a": 3 * GB, "b": None}
    assert sorted(store.finished_usage("a"), key=str) == [(3 * GB, 2.5), (None, 1.0)]


def test_min_memory_auto_places_by_the_jobs_peak(store: Store) -> None:
    small = Matcher({"memory_free": 2 * GB}, 4)
    large = Matcher({"memory_free": 8 * GB}, 4)
    first = make(store, "a", 3)
    (x,) = store.lease("w1", 1, 10.0, 20.0, 100, small, None, small.peak_fits)
    assert x.task_id == first[0]  # no peak yet: anywhere
    assert store.finish(x.task_id, x.lease_id, used(2 * GB, 1.0), 11.0)
    # 1.2 x 2 GB is more than the small worker has free; the large one takes them
    assert store.lease("w1", 2, 12.0, 20.0, 100, small, None, small.peak_fits) == []
    make(store, "b", 1, now=2.0)  # another job with no peak still goes to the small worker
    (y,) = store.lease("w1", 2, 12.0, 20.0, 100, small, None, small.peak_fits)
    assert y.job_id == "b"
    got = store.lease("w2", 2, 13.0, 20.0, 100, large, None, large.peak_fits)
    assert [g.task_id for g in got] == first[1:]
