"""The Store contract for the batched hot path (issue 6), on every backend: several results of
one worker in one transaction, tasks by id, a job's owner, and what a lease records."""

from __future__ import annotations

import pytest
from test_store_contract import Backend, ok, spec, submit

from corral.coordinator.store import NewTask, NotFound, Store, open_store
from corral.protocol import OutputFile


def test_finish_many_records_a_batch_and_its_events_in_order(store: Store) -> None:
    submit(store, "j", 3)
    a, b, c = store.lease("w1", 3, 10.0, 20.0, 100)
    manifest = {"out.txt": OutputFile("b" * 64, 3, 0o644)}
    results = [
        (a.task_id, a.lease_id, ok(manifest=manifest)),
        (b.task_id, b.lease_id, ok(status="failed", exit_code=2, error="boom", stdout=None)),
        (c.task_id, c.lease_id, ok(stderr="d" * 64)),
    ]
    assert store.finish_many("w1", results, 15.0) == [True, True, True]
    ta, tb, tc = (store.get_task(x.task_id) for x in (a, b, c))
    assert (ta.status, ta.exit_code, ta.manifest, ta.finished) == ("succeeded", 0, manifest, 15.0)
    assert (tb.status, tb.exit_code, tb.error, tb.stdout) == ("failed", 2, "boom", None)
    assert (tc.status, tc.stderr, tc.worker_id) == ("succeeded", "d" * 64, "w1")
    last = [(e.task_id, e.status, e.exit_code) for e in store.events("j", 0, 100)[-3:]]
    assert last == [
        (a.task_id, "succeeded", 0),
        (b.task_id, "failed", 2),
        (c.task_id, "succeeded", 0),
    ]
    assert store.next_expiry() is None
    assert store.get_job("j").counts["succeeded"] == 2


def test_finish_many_fences_each_result_on_its_own(store: Store) -> None:
    submit(store, "j", 4)
    a, b, c, d = store.lease("w1", 4, 10.0, 20.0, 100)
    submit(store, "k", 1)
    (other,) = store.lease("w2", 1, 11.0, 20.0, 100)
    store.kill([b.task_id], 11.0)
    before = {t: store.get_task(t) for t in (a.task_id, b.task_id, other.task_id)}
    seq, k_events = store.events("j", 0, 100)[-1].seq, store.events("k", 0, 100)
    results = [
        (a.task_id, "never-issued", ok()),  # a lease that was never this task's
        (b.task_id, b.lease_id, ok()),  # killed meanwhile
        (other.task_id, other.lease_id, ok()),  # live, but w2's, not w1's
        ("no-such-task", c.lease_id, ok()),
        (d.task_id, d.lease_id, ok()),
    ]
    assert store.finish_many("w1", results, 15.0) == [False, False, False, False, True]
    assert {t: store.get_task(t) for t in before} == before
    assert [e.task_id for e in store.events("j", seq, 100)] == [d.task_id]
    assert store.events("k", 0, 100) == k_events
    assert store.finish_many("w2", [(other.task_id, other.lease_id, ok())], 16.0) == [True]


def test_finish_many_with_a_task_twice_counts_it_once(store: Store) -> None:
    submit(store, "j", 2)
    a, b = store.lease("w1", 2, 10.0, 20.0, 100)
    results = [
        (a.task_id, "stale", ok()),
        (a.task_id, a.lease_id, ok(exit_code=0)),
        (b.task_id, b.lease_id, ok()),
        (a.task_id, a.lease_id, ok(status="failed", exit_code=1)),
    ]
    assert store.finish_many("w1", results, 15.0) == [False, True, True, False]
    assert store.get_task(a.task_id).status == "succeeded"
    assert [e.status for e in store.events("j", 0, 100)].count("succeeded") == 2


def test_finish_many_requeues_retries_and_settles_dependents(store: Store) -> None:
    tasks = [
        NewTask("a", 0, spec("a")),
        NewTask("b", 1, spec("b")),
        NewTask("c", 2, spec("c", max_attempts=3)),
        NewTask("after-a", 3, spec("after-a", after=["a"])),
        NewTask("after-ab", 4, spec("after-ab", after=["a", "b"])),
        NewTask("after-c", 5, spec("after-c", after=["c"])),
    ]
    store.create_job("j", "deps", "alice", 1.0, tasks)
    leased = {x.task_id: x for x in store.lease("w1", 10, 2.0, 12.0, 100)}
    assert sorted(leased) == ["a", "b", "c"]
    results = [
        ("a", leased["a"].lease_id, ok()),
        ("b", leased["b"].lease_id, ok()),
        ("c", leased["c"].lease_id, ok(status="queued", exit_code=1, not_before=9.0)),
    ]
    assert store.finish_many("w1", results, 4.0) == [True, True, True]
    retry = store.get_task("c")
    assert (retry.status, retry.worker_id, retry.not_before, retry.finished) == (
        "queued",
        None,
        9.0,
        None,
    )
    assert [store.dependencies_left(t) for t in ("after-a", "after-ab", "after-c")] == [0, 0, 1]
    assert sorted(x.task_id for x in store.lease("w1", 10, 5.0, 15.0, 100)) == [
        "after-a",
        "after-ab",
    ]


def test_finish_many_fails_dependents_of_a_failure_transitively(store: Store) -> None:
    tasks = [
        NewTask("a", 0, spec("a")),
        NewTask("b", 1, spec("b")),
        NewTask("c", 2, spec("c", after=["a"])),
        NewTask("d", 3, spec("d", after=["c"])),
    ]
    store.create_job("j", "deps", "alice", 1.0, tasks)
    x = {t.task_id: t for t in store.lease("w1", 10, 2.0, 12.0, 100)}
    results = [
        ("a", x["a"].lease_id, ok(status="failed", exit_code=1)),
        ("b", x["b"].lease_id, ok()),
    ]
    assert store.finish_many("w1", results, 4.0) == [True, True]
    assert [store.get_task(t).status for t in "abcd"] == ["failed", "succeeded", "failed", "failed"]
    assert store.get_job("j").status == "failed"
    failed = [(e.task_id, e.status) for e in store.events("j", 0, 100) if e.time == 4.0]
    assert failed == [("a", "failed"), ("b", "succeeded"), ("c", "failed"), ("d", "failed")]


def test_finish_many_of_nothing(store: Store) -> None:
    assert store.finish_many("w1", [], 1.0) == []


def test_get_tasks_returns_the_ones_that_exist(store: Store) -> None:
    ids = submit(store, "j", 5)
    found = store.get_tasks([ids[3], "nope", ids[0], ids[3]])
    assert found == {ids[3]: store.get_task(ids[3]), ids[0]: store.get_task(ids[0])}
    assert store.get_tasks([]) == {}
    many = submit(store, "k", 700)
    assert set(store.get_tasks(many)) == set(many)


def test_job_owner(store: Store) -> None:
    submit(store, "j", 1, owner="bob")
    assert store.job_owner("j") == "bob"
    with pytest.raises(NotFound):
        store.job_owner("nope")


def test_a_lease_counts_as_the_workers_heartbeat(store: Store) -> None:
    store.register_worker("w1", "box", 4, {}, 1.0)
    store.touch_worker("w1", 2.0, "idle-wait", None)
    assert store.lease("w1", 4, 5.0, 15.0, 100) == []
    assert store.get_worker("w1").last_heartbeat == 2.0  # nothing taken, nothing recorded
    submit(store, "j", 3)
    store.lease("w1", 2, 6.0, 16.0, 100)
    worker = store.get_worker("w1")
    assert (worker.last_heartbeat, worker.status, worker.slots_used) == (6.0, "online", 2)


def test_slots_used_counts_running_tasks_by_cost(store: Store) -> None:
    store.register_worker("w1", "box", 8, {}, 1.0)
    store.register_worker("w2", "box", 8, {}, 1.0)
    submit(store, "big", 1, requires={"cpus": "3"})
    submit(store, "small", 2, now=2.0)
    big, small, _ = store.lease("w1", 8, 5.0, 15.0, 100)
    assert store.get_worker("w1").slots_used == 5
    assert store.get_worker("w2").slots_used == 0
    store.set_blocked(big.task_id, True)
    assert store.get_worker("w1").slots_used == 2
    store.finish_many("w1", [(small.task_id, small.lease_id, ok())], 6.0)
    assert {w.id: w.slots_used for w in store.list_workers()} == {"w1": 1, "w2": 0}


def test_extend_many_leases_at_once(store: Store) -> None:
    submit(store, "j", 600)
    leased = store.lease("w1", 600, 10.0, 20.0, 600)
    ids = [x.lease_id for x in leased]
    assert store.extend("w1", [*ids, "gone", ids[0]], 15.0, 40.0) == ["gone"]
    assert store.next_expiry() == 40.0


def test_atomic_commits_several_calls_together(store: Store, backend: Backend) -> None:
    submit(store, "j", 2)
    (a,) = store.lease("w1", 1, 10.0, 20.0, 100)
    with store.atomic():
        assert store.finish_many("w1", [(a.task_id, a.lease_id, ok())], 15.0) == [True]
        (b,) = store.lease("w1", 1, 15.0, 25.0, 100)
    other = backend.track(open_store(backend.spec()))
    assert other.get_task(a.task_id).status == "succeeded"
    assert other.get_task(b.task_id).status == "running"


def test_a_failing_call_inside_atomic_undoes_only_its_own_changes(store: Store) -> None:
    submit(store, "j", 2)
    (a,) = store.lease("w1", 1, 10.0, 20.0, 100)
    with store.atomic():
        assert store.finish_many("w1", [(a.task_id, a.lease_id, ok())], 15.0) == [True]
        with pytest.raises(NotFound):
            store.revoke_token("no-such-token", 15.0)
        with pytest.raises(Exception, match="(?i)unique|duplicate"):
            store.add_tasks("j", 15.0, [NewTask(a.task_id, 9, spec())])  # a duplicate id
        (b,) = store.lease("w1", 1, 15.0, 25.0, 100)
    assert store.get_task(a.task_id).status == "succeeded"
    assert store.get_task(b.task_id).status == "running"
    assert store.get_job("j").total == 2


def test_atomic_rolls_everything_back_on_error(store: Store) -> None:
    submit(store, "j", 1)
    (a,) = store.lease("w1", 1, 10.0, 20.0, 100)
    before = (store.get_task(a.task_id), store.events("j", 0, 100))
    with pytest.raises(RuntimeError), store.atomic():
        store.finish_many("w1", [(a.task_id, a.lease_id, ok())], 15.0)
        raise RuntimeError("the caller failed after recording")
    assert (store.get_task(a.task_id), store.events("j", 0, 100)) == before


def test_job_finished_without_counting(store: Store) -> None:
    submit(store, "j", 2)
    assert not store.job_finished("j")
    a, b = store.lease("w1", 2, 10.0, 20.0, 100)
    assert not store.job_finished("j")
    store.finish_many("w1", [(a.task_id, a.lease_id, ok())], 15.0)
    assert not store.job_finished("j")
    store.kill([b.task_id], 16.0)
    assert store.job_finished("j")
    assert store.job_finished("j") == (
        store.get_job("j").status in ("succeeded", "failed", "killed")
    )
    with pytest.raises(NotFound):
        store.job_finished("nope")


def test_finish_many_of_a_large_batch(store: Store) -> None:
    submit(store, "j", 1500)
    leased = store.lease("w1", 1500, 10.0, 20.0, 1500)
    results = [(x.task_id, x.lease_id, ok()) for x in leased]
    assert store.finish_many("w1", results, 15.0) == [True] * 1500
    assert store.get_job("j").counts["succeeded"] == 1500
