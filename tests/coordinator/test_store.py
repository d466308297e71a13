"""SQLiteStore on its own: atomicity, counts, FIFO leasing, requirement classes, events written
in the same transaction as the change they record, and a restart reading it all back.

Behaviour every backend shares is in test_store_contract.py; this file is about SQLite.
"""

from __future__ import annotations

import gc
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.coordinator.store import NewTask, NotFound, Outcome, SQLiteStore, job_status
from corral.protocol import TASK_STATUSES, OutputFile, TaskSpec


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "corral.db"


@pytest.fixture
def store(path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(path)
    yield s
    s.close()


def spec(*argv: str, **fields: Any) -> TaskSpec:
    return TaskSpec(argv=list(argv or ["true"]), **fields)


def tasks(prefix: str, n: int, **fields: Any) -> list[NewTask]:
    return [NewTask(f"{prefix}{i}", i, spec(str(i), **fields)) for i in range(n)]


def done(status: str = "succeeded", code: int | None = 0, **kw: Any) -> Outcome:
    return Outcome(status, code, kw.get("error"), kw.get("stdout"), None, kw.get("manifest", {}))


def lease_ids(store: SQLiteStore, n: int, now: float = 10.0, **kw: Any) -> list[str]:
    return [x.task_id for x in store.lease("w", n, now, now + 5, 100, **kw)]


def statuses(store: SQLiteStore, job_id: str) -> list[tuple[str, str]]:
    return [(e.task_id, e.status) for e in store.events(job_id, 0, 1000)]


# creating jobs


def test_create_job_is_all_or_nothing(store: SQLiteStore) -> None:
    duplicate = [NewTask("t0", 0, spec()), NewTask("t1", 1, spec()), NewTask("t0", 2, spec())]
    with pytest.raises(sqlite3.IntegrityError):
        store.create_job("j", "name", "alice", 1.0, duplicate)
    with pytest.raises(NotFound):
        store.get_job("j")
    with pytest.raises(NotFound):
        store.get_task("t1")
    assert store.list_jobs(10) == []
    assert lease_ids(store, 10) == []
    store.create_job("j", "name", "alice", 1.0, tasks("t", 2))  # the ids are free again
    assert store.get_job("j").total == 2


def test_a_clash_with_another_job_leaves_both_as_they_were(store: SQLiteStore) -> None:
    store.create_job("a", "first", "alice", 1.0, tasks("a", 2))
    with pytest.raises(sqlite3.IntegrityError):  # a task id already taken by job a
        store.create_job("b", "second", "bob", 2.0, [NewTask("b0", 0, spec()), *tasks("a", 1)])
    with pytest.raises(sqlite3.IntegrityError):  # a job id already taken
        store.create_job("a", "again", "bob", 3.0, tasks("c", 1))
    assert [j.id for j in store.list_jobs(10)] == ["a"]
    job = store.get_job("a")
    assert (job.name, job.owner, job.total, job.counts["queued"]) == ("first", "alice", 2, 2)
    with pytest.raises(NotFound):
        store.get_task("b0")


def test_add_tasks_is_all_or_nothing(store: SQLiteStore) -> None:
    store.create_job("j", "n", "o", 1.0, tasks("t", 2))
    with pytest.raises(sqlite3.IntegrityError):
        store.add_tasks("j", 2.0, [NewTask("new", 2, spec()), NewTask("t0", 3, spec())])
    assert store.get_job("j").total == 2
    with pytest.raises(NotFound):
        store.get_task("new")
    with pytest.raises(NotFound):
        store.add_tasks("nope", 2.0, [NewTask("x", 0, spec())])
    with pytest.raises(NotFound):
        store.get_task("x")


def test_tasks_read_back_as_submitted(store: SQLiteStore) -> None:
    full = spec(
        "run",
        "--flag",
        env={"A": "1"},
        outputs=["out/*"],
        requires={"os": "linux"},
        limits={"wall_time": 5.0},
        shell=True,
        max_attempts=4,
        name="named",
    )
    store.create_job("j", "job", "alice", 7.0, [NewTask("t", 0, full)])
    t = store.get_task("t")
    assert (t.argv, t.env, t.outputs, t.requires) == (
        full.argv,
        full.env,
        full.outputs,
        {"os": "linux"},
    )
    assert (t.limits, t.shell, t.max_attempts, t.name) == ({"wall_time": 5.0}, True, 4, "named")
    assert (t.status, t.attempts, t.worker_id, t.created) == ("queued", 0, None, 7.0)
    assert store.list_tasks("j", 0, 10) == [t]


# counts and job status


def test_counts_follow_every_transition(store: SQLiteStore) -> None:
    store.create_job("j", "n", "o", 1.0, tasks("t", 5))
    zero = dict.fromkeys(TASK_STATUSES, 0)
    assert store.get_job("j").counts == {**zero, "queued": 5}
    assert store.get_job("j").status == "queued"
    leased = store.lease("w", 4, 10.0, 15.0, 100)
    assert store.get_job("j").counts == {**zero, "queued": 1, "running": 4}
    store.finish(leased[0].task_id, leased[0].lease_id, done(), 11.0)
    store.finish(leased[1].task_id, leased[1].lease_id, done("failed", 1), 11.0)
    store.kill([leased[2].task_id, "t4"], 12.0)
    store.expire(15.0)  # leased[3] had until 15.0
    job = store.get_job("j")
    assert job.counts == {**zero, "succeeded": 1, "failed": 1, "killed": 2, "queued": 1}
    assert (job.status, job.total) == ("running", 5)
    (last,) = store.lease("w", 1, 20.0, 25.0, 100)
    store.finish(last.task_id, last.lease_id, done(), 21.0)
    assert store.get_job("j").status == "failed"


counts = st.fixed_dictionaries({s: st.integers(0, 3) for s in TASK_STATUSES}).filter(
    lambda c: sum(c.values()) > 0
)


@given(c=counts)
def test_job_status_from_counts(c: dict[str, int]) -> None:
    status = job_status(c)
    total = sum(c.values())
    live = c["queued"] + c["running"]
    if c["queued"] == total:
        assert status == "queued"
    elif live:
        assert status == "running"
    elif c["failed"]:
        assert status == "failed"
    elif c["killed"]:
        assert status == "killed"
    else:
        assert status == "succeeded" and c["succeeded"] == total
    assert job_status({k: v for k, v in c.items() if v}) == status  # absent means zero


# leasing


def test_lease_is_fifo_by_submission_then_seq(store: SQLiteStore) -> None:
    store.create_job("old", "n", "o", 1.0, tasks("o", 3))
    store.create_job("new", "n", "o", 2.0, tasks("n", 3))
    got = lease_ids(store, 2) + lease_ids(store, 1) + lease_ids(store, 10)
    assert got == ["o0", "o1", "o2", "n0", "n1", "n2"]
    assert lease_ids(store, 10) == []


def test_lease_marks_running_and_counts_attempts(store: SQLiteStore) -> None:
    store.create_job("j", "n", "o", 1.0, tasks("t", 1))
    store.register_worker("w", "box", 2, {}, 1.0)
    (x,) = store.lease("w", 1, 10.0, 15.0, 100)
    assert (x.task_id, x.job_id, x.attempt, x.expires, x.spec.argv) == ("t0", "j", 1, 15.0, ["0"])
    t = store.get_task("t0")
    assert (t.status, t.worker_id, t.attempts, t.started) == ("running", "w", 1, 10.0)
    assert store.get_worker("w").slots_used == 1
    assert store.next_expiry() == 15.0
    store.expire(15.0)
    (y,) = store.lease("w", 1, 16.0, 21.0, 100)
    assert (y.attempt, y.lease_id != x.lease_id) == (2, True)


def test_requirement_classes_are_matched_once_each(store: SQLiteStore) -> None:
    store.create_job("a", "n", "o", 1.0, tasks("lin", 50, requires={"os": "linux", "arch": "x"}))
    store.create_job("b", "n", "o", 2.0, tasks("mac", 50, requires={"arch": "x", "os": "mac"}))
    # the same requirements with the keys in another order are the same class
    store.create_job(
        "c", "n", "o", 3.0, [NewTask("lin-late", 0, spec(requires={"arch": "x", "os": "linux"}))]
    )
    seen: list[dict[str, str]] = []

    def linux_only(requires: dict[str, str]) -> bool:
        seen.append(requires)
        return requires.get("os") == "linux"

    got = lease_ids(store, 100, fits=linux_only)
    assert got == [f"lin{i}" for i in range(50)] + ["lin-late"]
    assert sorted(r["os"] for r in seen) == ["linux", "mac"]  # per class, not per task
    assert sorted(r["os"] for r in store.queued_requirements()) == ["mac"]


def test_a_failing_matcher_leases_nothing(store: SQLiteStore) -> None:
    store.create_job("j", "n", "o", 1.0, tasks("t", 2))
    store.create_job("k", "n", "o", 2.0, [NewTask("req", 0, spec(requires={"os": "x"}))])
    calls = []

    def explode(requires: dict[str, str]) -> bool:
        calls.append(requires)
        if requires:
            raise RuntimeError("bad capabilities")
        return True

    with pytest.raises(RuntimeError):
        lease_ids(store, 10, fits=explode)
    assert calls  # the matcher ran before anything was committed
    assert store.get_job("j").counts["running"] == 0
    assert store.events("j", 0, 10) == []


def test_scan_bounds_rows_per_class_per_call(store: SQLiteStore) -> None:
    store.create_job("j", "n", "o", 1.0, tasks("t", 10))
    assert len(store.lease("w", 10, 10.0, 15.0, 3)) == 3
    assert len(store.lease("w", 10, 10.0, 15.0, 100)) == 7


# events


def test_every_change_appends_one_event(store: SQLiteStore) -> None:
    store.create_job("j", "n", "o", 1.0, tasks("t", 3, max_attempts=1))
    assert store.events("j", 0, 10) == []  # submitting is not a change of a task
    a, b, c = store.lease("w", 3, 10.0, 15.0, 100)
    assert store.finish(a.task_id, a.lease_id, done("failed", 2), 11.0)
    assert not store.finish(a.task_id, a.lease_id, done(), 11.5)  # stale: no event
    store.kill([b.task_id], 12.0)
    store.kill([b.task_id], 12.5)  # already final: no event
    store.expire(15.0)  # c runs out of its only attempt
    events = store.events("j", 0, 100)
    assert [(e.task_id, e.status, e.exit_code) for e in events] == [
        ("t0", "running", None),
        ("t1", "running", None),
        ("t2", "running", None),
        ("t0", "failed", 2),
        ("t1", "killed", None),
        ("t2", "failed", None),
    ]
    assert [e.time for e in events] == [10.0, 10.0, 10.0, 11.0, 12.0, 15.0]
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs))
    assert store.events("j", seqs[2], 2) == events[3:5]
    assert store.events("other", 0, 10) == []


@pytest.mark.parametrize("change", ["lease", "finish", "finish_many", "kill", "expire"])
def test_a_change_and_its_event_commit_together(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    store.create_job("j", "n", "o", 1.0, tasks("t", 1))
    leased = [] if change == "lease" else store.lease("w", 1, 10.0, 15.0, 100)
    before = (store.get_task("t0"), store.get_job("j"), store.events("j", 0, 100))

    def no_event(*_: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "_event", no_event)
    monkeypatch.setattr(store, "_events", no_event)
    with pytest.raises(sqlite3.OperationalError):
        if change == "lease":
            store.lease("w", 1, 20.0, 25.0, 100)
        elif change == "finish":
            store.finish("t0", leased[0].lease_id, done(), 20.0)
        elif change == "finish_many":
            store.finish_many("w", [("t0", leased[0].lease_id, done())], 20.0)
        elif change == "kill":
            store.kill(["t0"], 20.0)
        else:
            store.expire(20.0)
    monkeypatch.undo()
    assert (store.get_task("t0"), store.get_job("j"), store.events("j", 0, 100)) == before
    lease_ids(store, 1, now=30.0)  # and the store still works


# restart


def test_reopening_the_file_finds_everything(path: Path) -> None:
    first = SQLiteStore(path)
    manifest = {"out.txt": OutputFile("ab" * 32, 3)}
    try:
        first.create_job("j", "job", "alice", 1.0, tasks("t", 3))
        first.register_worker("w", "box", 2, {"os": "linux"}, 1.0)
        a, b = first.lease("w", 2, 10.0, 15.0, 100)
        first.finish(a.task_id, a.lease_id, done(stdout="cd" * 32, manifest=manifest), 11.0)
        before = (
            first.get_job("j"),
            first.list_tasks("j", 0, 10),
            first.get_worker("w"),
            first.events("j", 0, 100),
        )
    finally:
        first.close()

    second = SQLiteStore(path)
    try:
        after = (
            second.get_job("j"),
            second.list_tasks("j", 0, 10),
            second.get_worker("w"),
            second.events("j", 0, 100),
        )
        assert after == before
        assert second.get_task(a.task_id).manifest == manifest
        # the lease handed out before the restart still fences, and still counts
        assert not second.finish(b.task_id, a.lease_id, done(), 12.0)
        assert second.finish(b.task_id, b.lease_id, done(), 12.0)
        (c,) = second.lease("w", 5, 13.0, 18.0, 100)
        assert c.task_id == "t2"
        seqs = [e.seq for e in second.events("j", 0, 100)]
        assert seqs == sorted(set(seqs)) and seqs[: len(before[3])] == [e.seq for e in before[3]]
    finally:
        second.close()


def test_grace_after_restart_pushes_expiry_only_forward(store: SQLiteStore) -> None:
    store.create_job("j", "n", "o", 1.0, tasks("t", 2))
    store.lease("w", 1, 10.0, 15.0, 100)
    store.lease("w", 1, 10.0, 500.0, 100)
    store.grace_running(100.0)
    assert store.next_expiry() == 100.0
    assert store.expire(99.0) == []
    assert [s.task_id for s in store.expire(100.0)] == ["t0"]
    assert store.get_task("t1").status == "running"


# The tables of the first release (no cost, not_before, waiting or blocked; its queue index).
FIRST_RELEASE_SCHEMA = """
CREATE TABLE jobs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, owner TEXT NOT NULL,
    created REAL NOT NULL, total INTEGER NOT NULL
);
CREATE TABLE tasks (
    id TEXT PRIMARY KEY, job_id TEXT NOT NULL, seq INTEGER NOT NULL, status TEXT NOT NULL,
    spec BLOB NOT NULL, requires TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL, worker_id TEXT, lease_id TEXT, lease_expires REAL,
    exit_code INTEGER, error TEXT, stdout TEXT, stderr TEXT, manifest BLOB,
    created REAL NOT NULL, started REAL, finished REAL
);
CREATE INDEX tasks_job ON tasks(job_id, seq);
CREATE INDEX tasks_job_status ON tasks(job_id, status);
CREATE INDEX tasks_queue ON tasks(status, requires, created) WHERE status = 'queued';
CREATE INDEX tasks_running ON tasks(lease_expires) WHERE status = 'running';
CREATE INDEX tasks_worker ON tasks(worker_id) WHERE status = 'running';
CREATE TABLE workers (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, slots INTEGER NOT NULL, status TEXT NOT NULL,
    capabilities BLOB NOT NULL, registered REAL NOT NULL, last_heartbeat REAL NOT NULL
);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, task_id TEXT NOT NULL,
    status TEXT NOT NULL, exit_code INTEGER, time REAL NOT NULL
);
CREATE INDEX events_job ON events(job_id, seq);
"""


def test_a_database_from_before_the_newer_columns_opens(path: Path) -> None:
    old = sqlite3.connect(path)
    old.executescript(FIRST_RELEASE_SCHEMA)
    old.execute("INSERT INTO jobs VALUES ('j', 'old', 'alice', 1.0, 1)")
    old.execute(
        "INSERT INTO tasks (id, job_id, seq, status, spec, requires, max_attempts, created)"
        " VALUES ('t', 'j', 0, 'queued', ?, '', 3, 1.0)",
        (b'{"argv":["echo","old"]}',),
    )
    old.commit()
    old.close()
    store = SQLiteStore(path)
    try:
        task = store.get_task("t")
        assert (task.argv, task.status, task.not_before) == (["echo", "old"], "queued", None)
        store.register_worker("w", "box", 1, {}, 2.0)
        assert lease_ids(store, 1) == ["t"]
        assert store.get_worker("w").slots_used == 1
    finally:
        store.close()
    SQLiteStore(path).close()  # and opening it again adds nothing twice


def test_list_jobs_counts_every_listed_job_in_one_query(store: SQLiteStore) -> None:
    for i in range(5):
        store.create_job(f"j{i}", "n", "o", float(i), tasks(f"j{i}-", i + 1))
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    try:
        jobs = store.list_jobs(10)
    finally:
        store._db.set_trace_callback(None)
    assert [j.total for j in jobs] == [5, 4, 3, 2, 1]
    assert len(statements) == 2  # the jobs, then all their counts


def test_checkpoints_run_on_their_own_thread_until_close(path: Path) -> None:
    def checkpointers() -> int:
        return sum(t.name == "corral-checkpoint" for t in threading.enumerate())

    before = checkpointers()
    first = SQLiteStore(path)
    assert checkpointers() == before + 1
    assert first._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 4096  # the backstop
    first.create_job("j", "n", "o", 1.0, tasks("t", 3))
    first.close()
    assert checkpointers() == before
    second = SQLiteStore(path)  # everything was committed and is still there
    try:
        assert second.get_job("j").total == 3
    finally:
        second.close()


def test_a_store_dropped_without_close_stops_its_checkpoints(path: Path) -> None:
    store = SQLiteStore(path)
    checkpoints = store._checkpoints
    assert checkpoints is not None
    del store
    gc.collect()
    checkpoints._thread.join(timeout=10)  # it notices within one interval
    assert not checkpoints._thread.is_alive()


def test_large_specs_live_outside_the_task_rows(store: SQLiteStore) -> None:
    env = {f"VAR{i}": "x" * 60 for i in range(40)}
    new = [*tasks("big", 2, env=env), NewTask("small0", 2, spec())]
    store.create_job("j", "n", "o", 1.0, new)
    db = store._db
    inline = dict(db.execute("SELECT id, length(spec) FROM tasks").fetchall())
    assert inline["big0"] == inline["big1"] == 0 and inline["small0"] > 0
    assert sorted(r[0] for r in db.execute("SELECT id FROM task_specs")) == ["big0", "big1"]
    assert store.get_task("big0").env == env
    assert store.get_tasks(["big1", "small0"])["big1"].env == env
    assert [t.env for t in store.list_tasks("j", 0, 10)] == [env, env, {}]
    leased = store.lease("w", 3, 10.0, 20.0, 100)
    assert [x.spec.env for x in leased] == [env, env, {}]
    store.finish(leased[0].task_id, leased[0].lease_id, done(), 11.0)
    assert store.get_task("big0").env == env  # a state change leaves the spec where it is
    # a database from before keeps every spec in its row, and reads it from there
    db.execute(
        "UPDATE tasks SET spec = (SELECT spec FROM task_specs WHERE id = 'big1') WHERE id = 'big1'"
    )
    db.execute("DELETE FROM task_specs WHERE id = 'big1'")
    assert store.get_task("big1").env == env
