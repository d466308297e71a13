"""The Store contract for dependencies and blocked tasks (issue 5), on every backend."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from test_store_contract import lease_one, ok, spec

from corral.coordinator.store import NewTask, SQLiteStore, Store


def diamond(store: Store, job: str = "j", now: float = 1.0) -> None:
    """a -> b, c -> d, in one job (b, c and d held)."""
    tasks = [
        NewTask("a", 0, spec("a")),
        NewTask("b", 1, spec("b", after=["a"])),
        NewTask("c", 2, spec("c", after=["a"])),
        NewTask("d", 3, spec("d", after=["b", "c"])),
    ]
    store.create_job(job, "diamond", "alice", now, tasks)


def lease_all(store: Store, now: float) -> list[str]:
    return sorted(x.task_id for x in store.lease("w1", 10, now, now + 10, 100))


def test_held_tasks_are_leased_only_when_their_dependencies_succeed(store: Store) -> None:
    diamond(store)
    assert store.get_task("d").after == ["b", "c"]
    assert [store.dependencies_left(t) for t in "abcd"] == [0, 1, 1, 2]
    assert store.get_job("j").counts["queued"] == 4  # held tasks are queued to the public
    (a,) = store.lease("w1", 10, 2.0, 12.0, 100)
    assert a.task_id == "a"
    assert lease_all(store, 3.0) == []
    assert store.finish("a", a.lease_id, ok(), 4.0)
    assert [store.dependencies_left(t) for t in "bcd"] == [0, 0, 2]
    leased = {x.task_id: x for x in store.lease("w1", 10, 5.0, 15.0, 100)}
    assert sorted(leased) == ["b", "c"]
    assert store.finish("b", leased["b"].lease_id, ok(), 6.0)
    assert lease_all(store, 6.5) == []  # d still waits for c
    assert store.finish("c", leased["c"].lease_id, ok(), 7.0)
    assert lease_all(store, 8.0) == ["d"]


def test_a_failed_dependency_fails_its_dependents_transitively(store: Store) -> None:
    diamond(store)
    a = lease_one(store, now=2.0)
    assert store.finish("a", a.lease_id, ok("failed", exit_code=1), 3.0)
    for t in "bcd":
        task = store.get_task(t)
        assert (task.status, task.error, task.finished) == ("failed", "dependency_failed", 3.0)
    failed = [(e.task_id, e.status) for e in store.events("j", 0, 100) if e.task_id != "a"]
    assert sorted(failed) == [("b", "failed"), ("c", "failed"), ("d", "failed")]
    assert store.get_job("j").status == "failed"
    assert lease_all(store, 4.0) == []


def test_a_retried_dependency_keeps_its_dependents_held(store: Store) -> None:
    diamond(store)
    a = lease_one(store, now=2.0)
    assert store.finish("a", a.lease_id, ok("queued", exit_code=1, not_before=2.5), 3.0)
    assert store.get_task("b").status == "queued" and store.dependencies_left("b") == 1


def test_killing_a_dependency_fails_dependents_but_a_job_kill_kills_all(store: Store) -> None:
    diamond(store, "j")
    store.kill(["a"], 2.0)
    assert [store.get_task(t).error for t in "bcd"] == ["dependency_failed"] * 3
    store.create_job(
        "k",
        "n",
        "alice",
        1.0,
        [NewTask("x", 0, spec("x")), NewTask("y", 1, spec("y", after=["x"]))],
    )
    store.kill(store.job_task_ids("k", only_live=True), 3.0)
    assert [store.get_task(t).status for t in "xy"] == ["killed", "killed"]


def test_expiry_out_of_attempts_fails_dependents(store: Store) -> None:
    store.create_job(
        "j",
        "n",
        "alice",
        1.0,
        [NewTask("a", 0, spec("a", max_attempts=1)), NewTask("b", 1, spec("b", after=["a"]))],
    )
    lease_one(store, now=2.0, expires=3.0)
    store.expire(4.0)
    assert store.get_task("a").status == "failed"
    assert (store.get_task("b").status, store.get_task("b").error) == (
        "failed",
        "dependency_failed",
    )


def test_new_tasks_on_finished_dependencies(store: Store) -> None:
    store.create_job(
        "j", "n", "alice", 1.0, [NewTask("a", 0, spec("a")), NewTask("f", 1, spec("f"))]
    )
    a = lease_one(store, now=2.0)
    f = lease_one(store, now=2.0)
    store.finish(a.task_id, a.lease_id, ok(), 3.0)
    store.finish(f.task_id, f.lease_id, ok("failed", exit_code=2), 3.0)
    store.add_tasks(
        "j",
        4.0,
        [
            NewTask("ok", 2, spec("ok", after=["a"])),
            NewTask("bad", 3, spec("bad", after=["a", "f"])),
            NewTask("worse", 4, spec("worse", after=["bad"])),  # earlier in the same call
        ],
    )
    assert store.get_task("ok").status == "queued" and store.dependencies_left("ok") == 0
    for t in ("bad", "worse"):
        assert (store.get_task(t).status, store.get_task(t).error) == (
            "failed",
            "dependency_failed",
        )
    assert ("worse", "failed") in [(e.task_id, e.status) for e in store.events("j", 0, 100)]
    assert lease_all(store, 5.0) == ["ok"]


def test_blocked_tasks_free_their_slots(store: Store) -> None:
    store.register_worker("w1", "box", 1, {}, 1.0)
    store.create_job("j", "n", "alice", 1.0, [NewTask(t, i, spec(t)) for i, t in enumerate("pc")])
    (p,) = store.lease("w1", 1, 2.0, 12.0, 100)
    assert store.get_worker("w1").slots_used == 1
    assert store.set_blocked(p.task_id, True) == "w1"
    assert store.blocked_tasks("w1") == [p.task_id]
    assert store.get_worker("w1").slots_used == 0
    assert store.set_blocked(p.task_id, False) == "w1"
    assert store.blocked_tasks("w1") == [] and store.get_worker("w1").slots_used == 1
    assert store.set_blocked("c", True) is None  # queued, not running
    store.set_blocked(p.task_id, True)
    store.expire(20.0)  # requeued: a new attempt starts unblocked
    (again,) = store.lease("w1", 1, 21.0, 31.0, 100)
    assert store.blocked_tasks("w1") == [] and store.get_worker("w1").slots_used == 1
    assert again.attempt in (1, 2)


def test_an_older_sqlite_database_gains_dependencies(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE tasks (id TEXT PRIMARY KEY, job_id TEXT NOT NULL, seq INTEGER NOT NULL,"
        " status TEXT NOT NULL, spec BLOB NOT NULL, requires TEXT NOT NULL,"
        " attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL, worker_id TEXT,"
        " lease_id TEXT, lease_expires REAL, exit_code INTEGER, error TEXT, stdout TEXT,"
        " stderr TEXT, manifest BLOB, created REAL NOT NULL, started REAL, finished REAL,"
        " cost INTEGER NOT NULL DEFAULT 1, not_before REAL)"
    )
    db.commit()
    db.close()
    store = SQLiteStore(path)
    try:
        diamond(store)
        assert lease_all(store, 2.0) == ["a"]
    finally:
        store.close()
