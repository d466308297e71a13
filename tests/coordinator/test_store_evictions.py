"""The Store contract for evictions (issue 14: kill --checkpoint, drain --evict), and retries
of killed tasks, on every backend."""

from __future__ import annotations

from test_store_contract import GIVEN_BACK, lease_one, ok, spec, submit

from corral.coordinator.store import NewTask, Store
from corral.protocol import OutputFile

SAVED = {"state": OutputFile("a" * 64, 3)}


def test_a_drain_eviction_is_told_to_the_worker_and_its_give_back_requeues(store: Store) -> None:
    ids = submit(store, "j", 3)
    store.register_worker("w1", "w1", 2, {}, 1.0)
    store.register_worker("w2", "w2", 1, {}, 1.0)
    a, b = store.lease("w1", 2, 10.0, 20.0, 100)
    (c,) = store.lease("w2", 1, 10.0, 20.0, 100)
    asked = store.evict_worker("w1", 11.0)
    assert sorted((s.task_id, s.worker_id, s.lease_id) for s in asked) == [
        (a.task_id, "w1", a.lease_id),
        (b.task_id, "w1", b.lease_id),
    ]
    assert sorted(store.evictions("w1")) == sorted([a.lease_id, b.lease_id])
    assert store.evictions("w2") == []
    assert store.get_task(a.task_id).status == "running"  # until its worker gives it back

    assert store.save_checkpoint(a.task_id, a.lease_id, SAVED, 12.0) == 1  # still live
    assert store.release(a.task_id, a.lease_id, 13.0, GIVEN_BACK)
    task = store.get_task(a.task_id)
    assert (task.status, task.attempts, task.error) == ("queued", 0, GIVEN_BACK)
    assert store.evictions("w1") == [b.lease_id]
    assert store.checkpoints([a.task_id])[a.task_id][0].n == 1  # kept for the next attempt
    assert c.task_id == ids[2] and store.get_task(c.task_id).status == "running"


def test_a_kill_eviction_ends_killed_once_given_back(store: Store) -> None:
    (t0, t1) = submit(store, "j", 2)
    store.register_worker("w1", "w1", 1, {}, 1.0)
    (a,) = store.lease("w1", 1, 10.0, 20.0, 100)
    asked = store.evict([a.task_id, t1, "no-such-task"], True, 11.0)
    assert [(s.task_id, s.lease_id) for s in asked] == [(a.task_id, a.lease_id)]  # running only
    assert store.get_task(t1).status == "queued"  # a queued task is not evicted

    assert not store.release(a.task_id, "stale-lease", 12.0, GIVEN_BACK)
    assert store.release(a.task_id, a.lease_id, 12.0, GIVEN_BACK)
    task = store.get_task(a.task_id)
    assert (task.status, task.error, task.attempts, task.finished) == ("killed", "killed", 1, 12.0)
    assert [e.status for e in store.task_events("j", a.task_id)] == ["running", "killed"]
    assert store.evictions("w1") == []
    assert not store.release(a.task_id, a.lease_id, 13.0, GIVEN_BACK)  # once only


def test_a_kill_asked_stays_asked_through_a_later_drain_of_the_same_attempt(
    store: Store,
) -> None:
    submit(store, "j", 1)
    store.register_worker("w1", "w1", 1, {}, 1.0)
    (a,) = store.lease("w1", 1, 10.0, 20.0, 100)
    store.evict([a.task_id], True, 11.0)
    store.evict_worker("w1", 12.0)
    store.evict([a.task_id], False, 13.0)
    assert store.evictions("w1") == [a.lease_id]
    assert store.release(a.task_id, a.lease_id, 14.0, GIVEN_BACK)
    assert store.get_task(a.task_id).status == "killed"


def test_an_eviction_dies_with_its_attempt(store: Store) -> None:
    (t0,) = submit(store, "j", 1, max_attempts=3)
    store.register_worker("w1", "w1", 1, {}, 1.0)
    (a,) = store.lease("w1", 1, 10.0, 20.0, 100)
    store.evict([t0], True, 11.0)
    retry = ok(status="queued", exit_code=1, not_before=12.5)  # it failed first, retried
    assert store.finish(t0, a.lease_id, retry, 12.0)
    assert store.evictions("w1") == []  # it ended on its own first: the eviction is dead
    (again,) = store.lease("w1", 1, 13.0, 20.0, 100)
    assert store.evictions("w1") == []  # not for the next attempt
    assert store.release(t0, again.lease_id, 14.0, GIVEN_BACK)
    assert store.get_task(t0).status == "queued"  # a plain give-back: requeued


def test_a_worker_lost_while_evicting_for_a_kill_leaves_the_task_killed(store: Store) -> None:
    t0, t1 = submit(store, "j", 2)
    store.register_worker("w1", "w1", 2, {}, 1.0)
    a, b = store.lease("w1", 2, 10.0, 20.0, 100)
    store.evict([a.task_id], True, 11.0)
    store.evict_worker("w1", 11.0)  # b: a drain's eviction, requeued as any lost worker's
    expired = store.expire(21.0)
    assert sorted(s.task_id for s in expired) == sorted([t0, t1])
    killed, requeued = store.get_task(a.task_id), store.get_task(b.task_id)
    assert (killed.status, killed.finished) == ("killed", 21.0)
    assert killed.error is not None and "lost while evicting" in killed.error
    assert (requeued.status, requeued.finished) == ("queued", None)


def test_a_plain_kill_overrides_an_eviction_in_progress(store: Store) -> None:
    submit(store, "j", 1)
    store.register_worker("w1", "w1", 1, {}, 1.0)
    (a,) = store.lease("w1", 1, 10.0, 20.0, 100)
    store.evict([a.task_id], False, 11.0)
    assert [s.lease_id for s in store.kill([a.task_id], 12.0)] == [a.lease_id]
    assert store.evictions("w1") == []
    assert not store.release(a.task_id, a.lease_id, 13.0, GIVEN_BACK)


def test_retry_with_killed_requeues_killed_tasks_and_their_dependents(store: Store) -> None:
    ids = submit(store, "j", 2)
    store.add_tasks("j", 2.0, [NewTask("j-t2", 2, spec("j-t2", after=[ids[0]]))])
    leased = lease_one(store)
    store.save_checkpoint(leased.task_id, leased.lease_id, SAVED, 11.0)
    store.kill(store.job_task_ids("j", only_live=True), 12.0)
    assert store.requeue_failed("j", 13.0) == []  # killed tasks only when asked
    assert store.requeue_failed("j", 14.0, killed=True) == [ids[0], ids[1], "j-t2"]
    again = store.get_task(ids[0])
    assert (again.status, again.error, again.attempts) == ("queued", None, 1)
    assert store.dependencies_left("j-t2") == 1  # held again on its dependency
    assert store.checkpoints([ids[0]])[ids[0]][0].n == 1  # what it resumes from


def test_retry_with_killed_leaves_a_task_whose_dependency_was_killed_elsewhere(
    store: Store,
) -> None:
    (other,) = submit(store, "o", 1)
    store.kill([other], 2.0)
    store.create_job("j", "j", "alice", 3.0, [NewTask("j-t0", 0, spec("x", after=[other]))])
    assert store.requeue_failed("j", 4.0, killed=True) == []
