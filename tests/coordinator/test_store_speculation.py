"""The Store contract for backup attempts of speculative jobs (issue 12), on every backend."""

from __future__ import annotations

from test_store_contract import GIVEN_BACK, ok, spec

from corral.coordinator.store import Leased, NewTask, Outcome, Stopped, Store


def running_with_backup(store: Store) -> tuple[Leased, Leased]:
    """Task t0 of a speculative job, its primary on worker a (leased at 10) and a backup on
    worker b (granted at 20); both leases run to 40."""
    tasks = [NewTask(f"t{i}", i, spec("phase")) for i in range(2)]
    store.create_job("j", "job", "alice", 1.0, tasks, speculative=True)
    for w in ("a", "b"):
        store.register_worker(w, w, 1, {}, 1.0)
    (primary,) = store.lease("a", 1, 10.0, 40.0, 100)
    assert primary.task_id == "t0"
    backup = store.grant_backup("t0", "b", 20.0, 40.0)
    assert backup is not None
    return primary, backup


def failed() -> Outcome:
    return ok("failed", exit_code=1, stdout=None)


def test_a_backup_is_a_second_lease_on_another_worker(store: Store) -> None:
    primary, backup = running_with_backup(store)
    assert backup.lease_id != primary.lease_id
    assert (backup.job_id, backup.attempt, backup.expires) == ("j", 1, 40.0)
    assert backup.spec.name == "phase"
    assert store.get_worker("b").slots_used == 1  # the backup takes its slot
    assert store.backup_holders(["t0", "t1"]) == {"t0": "b"}
    assert store.backup_leases("b") == {backup.lease_id}
    assert store.live_lease("t0", backup.lease_id, 30.0) == ("j", "alice")
    assert store.live_lease("t0", backup.lease_id, 41.0) is None


def test_a_backup_only_for_a_running_task_elsewhere_and_only_once(store: Store) -> None:
    store.create_job("j", "job", "alice", 1.0, [NewTask("t0", 0, spec("p"))], speculative=True)
    assert store.grant_backup("t0", "b", 5.0, 40.0) is None  # queued: nothing to back up
    store.lease("a", 1, 10.0, 40.0, 100)
    assert store.grant_backup("t0", "a", 20.0, 40.0) is None  # its own worker
    assert store.grant_backup("t0", "b", 20.0, 40.0) is not None
    assert store.grant_backup("t0", "c", 20.0, 40.0) is None  # one backup at a time...
    store.expire(50.0)  # ...and ever: expired (both leases), requeued, running again
    store.lease("a", 1, 60.0, 90.0, 100)
    assert store.grant_backup("t0", "b", 70.0, 90.0) is None


def test_the_backup_finishing_first_wins_and_the_primary_is_stale(store: Store) -> None:
    primary, backup = running_with_backup(store)
    assert store.finish_many("b", [("t0", backup.lease_id, ok(stdout="b" * 64))], 30.0) == [True]
    task = store.get_task("t0")
    assert (task.status, task.stdout, task.worker_id) == ("succeeded", "b" * 64, "b")
    assert store.finish_many("a", [("t0", primary.lease_id, ok(stdout="a" * 64))], 31.0) == [False]
    assert store.get_task("t0").stdout == "b" * 64  # exactly one result recorded
    assert store.extend("a", [primary.lease_id], 31.0, 50.0) == [primary.lease_id]
    assert store.extend("b", [backup.lease_id], 31.0, 50.0) == [backup.lease_id]
    assert store.backup_holders(["t0"]) == {}
    assert store.get_worker("b").slots_used == 0
    events = [e.status for e in store.events("j", 0, 100) if e.task_id == "t0"]
    assert events == ["running", "succeeded"]  # one result, one final event


def test_the_primary_finishing_first_wins_and_the_backup_is_stale(store: Store) -> None:
    primary, backup = running_with_backup(store)
    assert store.finish("t0", primary.lease_id, ok(stdout="a" * 64), 30.0)
    assert not store.finish("t0", backup.lease_id, ok(stdout="b" * 64), 31.0)
    task = store.get_task("t0")
    assert (task.status, task.stdout, task.worker_id) == ("succeeded", "a" * 64, "a")
    assert store.extend("b", [backup.lease_id], 31.0, 50.0) == [backup.lease_id]
    assert store.backup_leases("b") == set()


def test_a_lease_is_fenced_to_its_own_worker(store: Store) -> None:
    primary, backup = running_with_backup(store)
    assert store.finish_many("a", [("t0", backup.lease_id, ok())], 30.0) == [False]
    assert store.finish_many("b", [("t0", primary.lease_id, ok())], 30.0) == [False]
    assert store.extend("a", [backup.lease_id], 30.0, 50.0) == [backup.lease_id]
    assert store.get_task("t0").status == "running"
    assert store.backup_holders(["t0"]) == {"t0": "b"}


def test_a_failed_backup_is_dropped_and_the_primary_carries_on(store: Store) -> None:
    primary, backup = running_with_backup(store)
    assert store.finish_many("b", [("t0", backup.lease_id, failed())], 30.0) == [True]
    assert store.get_task("t0").status == "running"
    assert store.backup_holders(["t0"]) == {}
    assert store.extend("a", [primary.lease_id], 31.0, 50.0) == []
    assert store.finish("t0", primary.lease_id, ok(), 32.0)
    assert store.get_task("t0").status == "succeeded"


def test_a_failed_primary_promotes_the_backup(store: Store) -> None:
    primary, backup = running_with_backup(store)
    assert store.finish("t0", primary.lease_id, failed(), 30.0)
    task = store.get_task("t0")
    assert (task.status, task.worker_id, task.started) == ("running", "b", 20.0)
    assert store.extend("a", [primary.lease_id], 31.0, 50.0) == [primary.lease_id]
    assert store.extend("b", [backup.lease_id], 31.0, 50.0) == []
    assert store.live_lease("t0", backup.lease_id, 45.0) == ("j", "alice")
    assert store.finish_many("b", [("t0", backup.lease_id, ok())], 32.0) == [True]
    assert store.get_task("t0").status == "succeeded"


def test_a_mixed_batch_keeps_its_order(store: Store) -> None:
    _, backup = running_with_backup(store)
    (other,) = store.lease("b", 1, 21.0, 40.0, 100)  # t1, on the backup's worker
    got = store.finish_many(
        "b", [("t1", other.lease_id, ok()), ("t0", backup.lease_id, ok()), ("t1", "x", ok())], 30.0
    )
    assert got == [True, True, False]
    assert {store.get_task(t).status for t in ("t0", "t1")} == {"succeeded"}


def test_kill_stops_both_attempts(store: Store) -> None:
    primary, backup = running_with_backup(store)
    stopped = store.kill(["t0"], 30.0)
    assert sorted(stopped, key=lambda s: s.worker_id) == [
        Stopped("t0", "a", primary.lease_id),
        Stopped("t0", "b", backup.lease_id),
    ]
    assert store.extend("a", [primary.lease_id], 31.0, 50.0) == [primary.lease_id]
    assert store.extend("b", [backup.lease_id], 31.0, 50.0) == [backup.lease_id]
    assert not store.finish("t0", backup.lease_id, ok(), 31.0)
    assert store.get_task("t0").status == "killed"
    assert store.get_worker("b").slots_used == 0


def test_an_expired_backup_is_dropped(store: Store) -> None:
    primary, backup = running_with_backup(store)
    store.extend("a", [primary.lease_id], 35.0, 60.0)  # only the primary is renewed
    assert store.next_expiry() == 40.0
    assert store.expire(45.0) == [Stopped("t0", "b", backup.lease_id)]
    assert store.get_task("t0").status == "running"
    assert store.extend("b", [backup.lease_id], 46.0, 70.0) == [backup.lease_id]
    assert store.next_expiry() == 60.0


def test_an_expired_primary_promotes_a_live_backup(store: Store) -> None:
    primary, backup = running_with_backup(store)
    store.extend("b", [backup.lease_id], 35.0, 60.0)  # only the backup is renewed
    store.expire(45.0)
    task = store.get_task("t0")
    assert (task.status, task.worker_id, task.attempts) == ("running", "b", 1)
    assert store.extend("a", [primary.lease_id], 46.0, 70.0) == [primary.lease_id]
    assert store.finish("t0", backup.lease_id, ok(), 47.0)
    assert store.get_task("t0").status == "succeeded"


def test_both_expired_requeue_as_usual(store: Store) -> None:
    running_with_backup(store)
    store.expire(45.0)
    task = store.get_task("t0")
    assert (task.status, task.worker_id) == ("queued", None)
    assert store.backup_holders(["t0"]) == {}
    assert store.next_expiry() is None


def test_a_lost_worker_loses_its_backups_and_a_given_back_one_is_dropped(store: Store) -> None:
    primary, backup = running_with_backup(store)
    store.touch_worker("a", 30.0, "online", None)
    assert store.mark_lost_workers(25.0) == ["b"]
    assert store.backup_holders(["t0"]) == {}
    assert store.get_task("t0").status == "running"
    assert store.extend("a", [primary.lease_id], 31.0, 60.0) == []
    # another task's backup, given back by its worker (desktop mode): only it goes
    store.lease("b", 1, 31.0, 60.0, 100)
    store.register_worker("c", "c", 1, {}, 32.0)
    spare = store.grant_backup("t1", "c", 32.0, 60.0)
    assert spare is not None
    assert store.release("t1", spare.lease_id, 33.0, GIVEN_BACK)
    assert store.backup_holders(["t1"]) == {}
    task = store.get_task("t1")
    assert (task.status, task.worker_id) == ("running", "b")


def test_giving_back_the_primary_promotes_the_backup(store: Store) -> None:
    primary, backup = running_with_backup(store)
    assert store.release("t0", primary.lease_id, 30.0, GIVEN_BACK)
    task = store.get_task("t0")
    assert (task.status, task.worker_id) == ("running", "b")
    assert store.backup_holders(["t0"]) == {}
    assert backup.lease_id not in store.extend("b", [backup.lease_id], 31.0, 50.0)


def test_grace_after_a_restart_covers_backups(store: Store) -> None:
    _, backup = running_with_backup(store)
    store.grace_running(100.0)
    assert store.expire(90.0) == []
    assert store.backup_holders(["t0"]) == {"t0": "b"}
    assert store.extend("b", [backup.lease_id], 91.0, 120.0) == []


def test_speculative_phases_report_running_tasks_with_their_phase(store: Store) -> None:
    tasks = [NewTask(f"m{i}", i, spec("map")) for i in range(4)]
    tasks += [NewTask("r0", 4, spec("reduce"))]
    store.create_job("j", "job", "alice", 1.0, tasks, speculative=True)
    store.create_job("plain", "job", "alice", 1.0, [NewTask("p", 0, spec("map"))])
    store.register_worker("a", "a", 8, {}, 1.0)
    leased = {x.task_id: x for x in store.lease("a", 8, 10.0, 100.0, 100)}
    assert len(leased) == 6
    for t, when in (("m0", 12.0), ("m1", 14.0)):
        assert store.finish(t, leased[t].lease_id, ok(), when)
    store.kill(["m2"], 15.0)
    (phase,) = [p for p in store.speculative_phases() if p.running[0].task_id == "m3"]
    assert (phase.total, phase.done, sorted(phase.durations)) == (4, 3, [2.0, 4.0])
    (run,) = phase.running
    assert (run.task_id, run.started, run.worker_id, run.backed_up) == ("m3", 10.0, "a", False)
    assert len(store.speculative_phases()) == 2  # map and reduce; the plain job is not there
    assert store.get_job("j").speculative and not store.get_job("plain").speculative


def test_finish_many_with_the_backups_read_by_its_caller(store: Store) -> None:
    """`backed` as the service passes it (read in the same transaction): a backup's result
    is settled as one, as when finish_many reads the backups itself."""
    primary, backup = running_with_backup(store)
    with store.atomic():
        backed = store.backup_holders(["t0"])
        assert store.finish_many("b", [("t0", backup.lease_id, ok())], 30.0, backed.keys()) == [
            True
        ]
    assert store.get_task("t0").status == "succeeded"
    assert store.backup_holders(["t0"]) == {}
    assert store.finish_many("a", [("t0", primary.lease_id, ok())], 31.0, set()) == [False]
