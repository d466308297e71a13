"""The Store contract: one set of tests, run against every backend.

PostgreSQL tests each get a fresh schema, dropped afterwards. Set CORRAL_TEST_POSTGRES to point
at another server. When PostgreSQL is unreachable the PostgreSQL half is skipped locally but
fails under CI (CI set), so a backend is never silently left untested there.
"""

from __future__ import annotations

import functools
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.coordinator.store import (
    Leased,
    NewTask,
    NotFound,
    Outcome,
    PostgresStore,
    SQLiteStore,
    Stopped,
    Store,
    open_store,
)
from corral.protocol import OutputFile, TaskSpec

PG_DSN = os.environ.get("CORRAL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgres"]
GIVEN_BACK = "given back by its worker; requeued"  # the error a released task is left with


@functools.cache
def _postgres_problem() -> str | None:
    try:
        import psycopg
    except ImportError as e:
        return f"psycopg is not installed ({e}): pip install 'corral[postgres]'"
    try:
        with psycopg.connect(PG_DSN, connect_timeout=3):
            pass
    except psycopg.Error as e:
        return f"PostgreSQL at {PG_DSN} is unreachable: {e}"
    return None


def require_postgres() -> None:
    """Skip when PostgreSQL is missing, except under CI, where that is a failure."""
    problem = _postgres_problem()
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{problem} (CI is set: the PostgreSQL backend must not be skipped)")
    pytest.skip(problem)


class Backend:
    """Opens stores on one database (a SQLite file or a PostgreSQL schema); cleans up."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self._opened: list[Store] = []
        self.path = tmp_path / "corral.db"
        self.schema = f"corral_test_{uuid.uuid4().hex[:16]}"

    def open(self) -> Store:
        store: Store
        if self.kind == "sqlite":
            store = SQLiteStore(self.path)
        else:
            store = PostgresStore(PG_DSN, schema=self.schema)
        self._opened.append(store)
        return store

    def spec(self) -> str:
        """What `open_store` takes to reach this same database."""
        if self.kind == "sqlite":
            return str(self.path)
        sep = "&" if "?" in PG_DSN else "?"
        return f"{PG_DSN}{sep}options=-csearch_path%3D{self.schema}"

    def track(self, store: Store) -> Store:
        self._opened.append(store)
        return store

    def close(self) -> None:
        for store in self._opened:
            store.close()
        if self.kind == "postgres":
            import psycopg

            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


def spec(name: str = "", **kw: object) -> TaskSpec:
    return TaskSpec(argv=["echo", name or "hi"], name=name, **kw)  # type: ignore[arg-type]


def submit(
    store: Store, job_id: str, n: int, now: float = 1.0, owner: str = "alice", **kw: object
) -> list[str]:
    """Create a job of `n` tasks named JOB-tI; return the task ids in order."""
    ids = [f"{job_id}-t{i}" for i in range(n)]
    tasks = [NewTask(t, i, spec(t, **kw)) for i, t in enumerate(ids)]
    store.create_job(job_id, f"job {job_id}", owner, now, tasks)
    return ids


def ok(
    status: str = "succeeded",
    exit_code: int | None = 0,
    error: str | None = None,
    stdout: str | None = "a" * 64,
    stderr: str | None = None,
    manifest: dict[str, OutputFile] | None = None,
    not_before: float | None = None,
) -> Outcome:
    return Outcome(status, exit_code, error, stdout, stderr, manifest or {}, not_before)


def lease_one(store: Store, worker: str = "w1", now: float = 10.0, expires: float = 20.0) -> Leased:
    (leased,) = store.lease(worker, 1, now, expires, 100)
    return leased


# jobs and tasks


def test_create_and_get_job(store: Store) -> None:
    submit(store, "j", 3, now=5.5)
    job = store.get_job("j")
    assert (job.id, job.name, job.owner, job.created, job.total) == ("j", "job j", "alice", 5.5, 3)
    assert job.counts == {"queued": 3, "running": 0, "succeeded": 0, "failed": 0, "killed": 0}
    assert job.status == "queued"
    with pytest.raises(NotFound):
        store.get_job("nope")


def test_job_status_follows_its_tasks(store: Store) -> None:
    submit(store, "j", 2)
    a = lease_one(store)
    assert store.get_job("j").status == "running"
    assert store.finish(a.task_id, a.lease_id, ok(), 11.0)
    assert store.get_job("j").status == "running"  # one done, one queued
    b = lease_one(store)
    assert store.finish(b.task_id, b.lease_id, ok(), 12.0)
    job = store.get_job("j")
    assert job.status == "succeeded"
    assert job.counts["succeeded"] == 2 and job.counts["queued"] == 0

    submit(store, "k", 2)
    c = lease_one(store)
    store.finish(c.task_id, c.lease_id, ok(status="failed", exit_code=1), 13.0)
    store.kill(store.job_task_ids("k", only_live=True), 14.0)
    job = store.get_job("k")
    assert job.counts == {"queued": 0, "running": 0, "succeeded": 0, "failed": 1, "killed": 1}
    assert job.status == "failed"


def test_list_jobs_newest_first_with_limit_and_owner(store: Store) -> None:
    submit(store, "a", 1, now=1.0, owner="alice")
    submit(store, "b", 2, now=2.0, owner="bob")
    submit(store, "c", 1, now=3.0, owner="alice")
    assert [j.id for j in store.list_jobs(10)] == ["c", "b", "a"]
    assert [j.id for j in store.list_jobs(2)] == ["c", "b"]
    assert [j.id for j in store.list_jobs(10, owner="alice")] == ["c", "a"]
    assert store.list_jobs(10, owner="nobody") == []
    listed = store.list_jobs(10)
    assert listed[1] == store.get_job("b")
    assert listed[1].counts["queued"] == 2


def test_list_jobs_counts_each_job(store: Store) -> None:
    submit(store, "a", 3, now=1.0)  # all queued
    submit(store, "b", 2, now=2.0, owner="bob")  # one running, one succeeded
    submit(store, "c", 2, now=3.0)  # one failed, one killed
    submit(store, "d", 2, now=4.0, owner="bob")  # both killed
    store.create_job("e", "empty", "alice", 5.0, [])
    for job_id, outcome in (("b", ok()), ("c", ok(status="failed", exit_code=1))):
        first, second = store.lease("w1", 2, 10.0, 20.0, 100, job_id=job_id)
        store.finish(first.task_id, first.lease_id, outcome, 11.0)
    store.kill(["c-t1", "d-t0", "d-t1"], 12.0)
    zero = dict.fromkeys(("queued", "running", "succeeded", "failed", "killed"), 0)
    want = {
        "e": ({**zero}, "succeeded"),
        "d": ({**zero, "killed": 2}, "killed"),
        "c": ({**zero, "failed": 1, "killed": 1}, "failed"),
        "b": ({**zero, "running": 1, "succeeded": 1}, "running"),
        "a": ({**zero, "queued": 3}, "queued"),
    }
    listed = store.list_jobs(10)
    assert [(j.id, (j.counts, j.status)) for j in listed] == list(want.items())
    assert listed == [store.get_job(job_id) for job_id in want]
    assert [(j.id, j.counts) for j in store.list_jobs(10, owner="bob")] == [
        ("d", want["d"][0]),
        ("b", want["b"][0]),
    ]
    assert [j.counts for j in store.list_jobs(2)] == [want["e"][0], want["d"][0]]


def test_both_backends_have_the_same_indexes(store: Store, backend: Backend) -> None:
    from corral.coordinator.store._schema import INDEXES

    db = store._db  # type: ignore[attr-defined]
    if backend.kind == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    else:  # primary keys and UNIQUE columns aside, as SQLite's autoindexes are
        sql = (
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
            " AND indexdef NOT LIKE 'CREATE UNIQUE %'"
        )
    created = {s.split()[5] for s in INDEXES if s.startswith("CREATE INDEX IF NOT EXISTS")}
    assert {r[0] for r in db.execute(sql).fetchall()} == created


def test_get_task_round_trips_the_spec(store: Store) -> None:
    full = TaskSpec(
        argv=["python", "-c", "print(1)"],
        env={"A": "1"},
        outputs=["out/*.txt"],
        requires={"os": "linux", "min_cpus": "2"},
        limits={"timeout": 30.0},
        shell=True,
        max_attempts=5,
        name="one",
    )
    store.create_job("j", "n", "o", 2.0, [NewTask("t", 0, full)])
    task = store.get_task("t")
    assert (task.id, task.job_id, task.seq, task.status) == ("t", "j", 0, "queued")
    assert (task.name, task.argv, task.env, task.outputs) == (
        "one",
        full.argv,
        full.env,
        full.outputs,
    )
    assert (task.requires, task.limits, task.shell) == (full.requires, full.limits, True)
    assert (task.attempts, task.max_attempts, task.created) == (0, 5, 2.0)
    assert task.worker_id is task.exit_code is task.error is task.started is task.finished is None
    assert task.manifest == {}
    with pytest.raises(NotFound):
        store.get_task("nope")


def test_list_tasks_orders_pages_and_filters(store: Store) -> None:
    ids = submit(store, "j", 5)
    submit(store, "other", 2, now=2.0)
    assert [t.id for t in store.list_tasks("j", 0, 100)] == ids
    assert [t.id for t in store.list_tasks("j", 0, 2)] == ids[:2]
    assert [t.id for t in store.list_tasks("j", 2, 2)] == ids[2:4]
    assert [t.id for t in store.list_tasks("j", 4, 2)] == ids[4:]
    assert store.list_tasks("j", 5, 2) == []
    store.lease("w", 2, 10.0, 20.0, 100)  # the first two, FIFO
    assert [t.id for t in store.list_tasks("j", 0, 100, status="running")] == ids[:2]
    assert [t.id for t in store.list_tasks("j", 0, 100, status="queued")] == ids[2:]
    assert [t.id for t in store.list_tasks("j", 1, 1, status="queued")] == [ids[3]]
    assert store.list_tasks("j", 0, 100, status="failed") == []
    assert store.list_tasks("nope", 0, 100) == []


def test_job_task_ids(store: Store) -> None:
    ids = submit(store, "j", 3)
    a = lease_one(store)
    store.finish(a.task_id, a.lease_id, ok(), 11.0)
    assert store.job_task_ids("j", only_live=False) == ids
    assert store.job_task_ids("j", only_live=True) == ids[1:]
    assert store.job_task_ids("nope", only_live=False) == []


def test_job_task_ids_are_in_submission_order(store: Store) -> None:
    # ids that sort in no order of their own, inserted in another order than their seq
    ids = ["zeta", "alpha", "10", "9", "Mid", "beta"]
    new = [NewTask(t, i, spec(t)) for i, t in enumerate(ids)]
    store.create_job("j", "n", "alice", 1.0, new[::-1])
    store.add_tasks("j", 2.0, [NewTask("0", 6, spec("0"))])
    ids.append("0")
    assert store.job_task_ids("j", only_live=False) == ids
    assert store.job_task_ids("j", only_live=True) == ids
    done = lease_one(store)
    assert done.task_id == "zeta"
    store.finish(done.task_id, done.lease_id, ok(), 11.0)
    assert lease_one(store).task_id == "alpha"  # running: still live
    store.kill(["10"], 12.0)
    assert store.job_task_ids("j", only_live=False) == ids
    assert store.job_task_ids("j", only_live=True) == ["alpha", "9", "Mid", "beta", "0"]


def test_long_id_lists_keep_their_order(store: Store) -> None:
    ids = submit(store, "j", 1200)  # more than one statement's worth on SQLite
    asked = ids[::-1]
    assert set(store.get_tasks([*asked, "nope"])) == set(ids)
    assert store.kill([*asked, "nope"], 5.0) == []
    assert [e.task_id for e in store.events("j", 0, 2000)] == asked
    assert store.get_job("j").counts["killed"] == 1200


# leasing


def test_lease_is_fifo_across_jobs(store: Store) -> None:
    first = submit(store, "a", 3, now=1.0)
    second = submit(store, "b", 2, now=2.0)
    got = [lease_one(store, now=10.0 + i).task_id for i in range(5)]
    assert got == first + second
    assert store.lease("w1", 1, 20.0, 30.0, 100) == []


def test_lease_of_one_job_only(store: Store) -> None:
    first = submit(store, "a", 2, now=1.0)
    second = submit(store, "b", 2, now=2.0)
    got = store.lease("w1", 3, 10.0, 20.0, 100, job_id="b")
    assert [x.task_id for x in got] == second
    assert store.lease("w1", 3, 10.0, 20.0, 100, job_id="b") == []
    assert [x.task_id for x in store.lease("w1", 3, 10.0, 20.0, 100)] == first


def test_a_requeued_task_goes_back_to_the_front(store: Store) -> None:
    ids = submit(store, "j", 3)
    lease_one(store, now=10.0, expires=15.0)
    store.expire(15.0)
    assert lease_one(store, now=16.0).task_id == ids[0]


def test_lease_respects_capacity_and_scan(store: Store) -> None:
    submit(store, "j", 5)
    assert store.lease("w", 0, 10.0, 20.0, 100) == []
    assert store.lease("w", -1, 10.0, 20.0, 100) == []
    assert len(store.lease("w", 2, 10.0, 20.0, 100)) == 2
    # `scan` caps how many rows one requirement class yields per call
    assert len(store.lease("w", 3, 10.0, 20.0, 1)) == 1
    assert len(store.lease("w", 10, 10.0, 20.0, 100)) == 2
    assert store.get_job("j").counts["running"] == 5


def test_lease_marks_running_counts_attempts_and_records_events(store: Store) -> None:
    ids = submit(store, "j", 2)
    store.register_worker("w1", "box", 4, {}, 1.0)
    leased = store.lease("w1", 2, 10.0, 20.0, 100)
    assert [x.task_id for x in leased] == ids
    for x in leased:
        assert (x.job_id, x.attempt, x.expires) == ("j", 1, 20.0)
        assert x.spec == spec(x.task_id)
        task = store.get_task(x.task_id)
        assert (task.status, task.attempts, task.worker_id, task.started) == (
            "running",
            1,
            "w1",
            10.0,
        )
    assert len({x.lease_id for x in leased}) == 2
    assert store.get_worker("w1").slots_used == 2
    assert store.next_expiry() == 20.0
    events = store.events("j", 0, 100)
    assert [(e.task_id, e.status, e.exit_code, e.time) for e in events] == [
        (ids[0], "running", None, 10.0),
        (ids[1], "running", None, 10.0),
    ]


def test_lease_only_hands_out_requirement_classes_that_fit(store: Store) -> None:
    tasks = [
        NewTask("gpu", 0, spec(requires={"gpus": "1"})),
        NewTask("plain", 1, spec()),
        NewTask("linux1", 2, spec(requires={"os": "linux", "arch": "x86_64"})),
        NewTask("linux2", 3, spec(requires={"arch": "x86_64", "os": "linux"})),
    ]
    store.create_job("j", "n", "o", 1.0, tasks)
    seen: list[dict[str, str]] = []

    def no_gpu(requires: dict[str, str]) -> bool:
        seen.append(requires)
        return "gpus" not in requires

    got = store.lease("cpu-box", 10, 10.0, 20.0, 100, no_gpu)
    assert sorted(x.task_id for x in got) == ["linux1", "linux2", "plain"]
    # one call per requirement class, whatever the key order in the spec
    assert sorted(sorted(r.items()) for r in seen) == [
        [],
        [("arch", "x86_64"), ("os", "linux")],
        [("gpus", "1")],
    ]
    assert store.lease("cpu-box", 10, 11.0, 20.0, 100, no_gpu) == []
    assert [x.task_id for x in store.lease("gpu-box", 10, 12.0, 20.0, 100)] == ["gpu"]


def test_sequential_leases_never_share_a_task(store: Store) -> None:
    ids = submit(store, "j", 25)
    seen: list[str] = []
    for i in range(30):
        seen += [x.task_id for x in store.lease(f"w{i % 3}", 2, 10.0 + i, 100.0, 100)]
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen))


def test_two_connections_racing_lease_each_task_once(store: Store, backend: Backend) -> None:
    ids = submit(store, "j", 150)
    stores = [backend.open(), backend.open()]
    barrier = threading.Barrier(len(stores))
    got: list[list[str]] = [[] for _ in stores]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            idle = 0
            while idle < 3:  # an empty answer may only mean the other holds the rest
                leased = stores[i].lease(f"w{i}", 2, 10.0, 100.0, 100)
                got[i] += [x.task_id for x in leased]
                idle = 0 if leased else idle + 1
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    everything = got[0] + got[1]
    assert sorted(everything) == sorted(ids)
    assert not set(got[0]) & set(got[1])
    assert all(t.attempts == 1 for t in store.list_tasks("j", 0, 1000))
    assert len(store.events("j", 0, 1000)) == len(ids)


# results, leases and expiry


def test_finish_with_the_live_lease(store: Store) -> None:
    submit(store, "j", 1)
    x = lease_one(store)
    manifest = {"out/a.txt": OutputFile("b" * 64, 12, 0o600)}
    outcome = ok(stdout="c" * 64, stderr="d" * 64, manifest=manifest)
    assert store.finish(x.task_id, x.lease_id, outcome, 15.0)
    task = store.get_task(x.task_id)
    assert (task.status, task.exit_code, task.error) == ("succeeded", 0, None)
    assert (task.stdout, task.stderr, task.manifest) == ("c" * 64, "d" * 64, manifest)
    assert (task.finished, task.worker_id, task.attempts) == (15.0, "w1", 1)
    assert store.next_expiry() is None
    assert store.events("j", 0, 100)[-1].status == "succeeded"
    assert store.events("j", 0, 100)[-1].exit_code == 0
    # the same lease a second time is stale
    assert not store.finish(x.task_id, x.lease_id, ok(), 16.0)
    assert store.get_task(x.task_id) == task


def test_finish_records_a_failure(store: Store) -> None:
    submit(store, "j", 1)
    x = lease_one(store)
    assert store.finish(x.task_id, x.lease_id, ok(status="failed", exit_code=3, error="boom"), 15)
    task = store.get_task(x.task_id)
    assert (task.status, task.exit_code, task.error) == ("failed", 3, "boom")
    last = store.events("j", 0, 100)[-1]
    assert (last.status, last.exit_code) == ("failed", 3)
    assert store.get_job("j").status == "failed"


def test_finish_records_what_the_attempt_used(store: Store) -> None:
    submit(store, "j", 3)
    one, two, three = store.lease("w1", 3, 10.0, 20.0, 100)
    big = 5 << 30  # past 32 bits: a BIGINT column on both
    used = Outcome("failed", -9, "limit_exceeded: memory", None, None, {}, None, big, 1.25)
    assert store.finish(one.task_id, one.lease_id, used, 15.0)
    task = store.get_task(one.task_id)
    assert (task.peak_memory, task.cpu_seconds) == (big, 1.25)
    # in a batch too, and None where the worker measured nothing
    measured = Outcome("succeeded", 0, None, None, None, {}, None, 4096, 0.5)
    items = [(two.task_id, two.lease_id, measured), (three.task_id, three.lease_id, ok())]
    assert store.finish_many("w1", items, 16.0) == [True, True]
    two_task, three_task = store.get_task(two.task_id), store.get_task(three.task_id)
    assert (two_task.peak_memory, two_task.cpu_seconds) == (4096, 0.5)
    assert (three_task.peak_memory, three_task.cpu_seconds) == (None, None)
    assert [t.peak_memory for t in store.list_tasks("j", 0, 10)] == [big, 4096, None]


def test_finish_with_a_stale_lease_changes_nothing(store: Store) -> None:
    submit(store, "j", 1)
    old = lease_one(store, now=10.0, expires=15.0)
    store.expire(15.0)
    new = lease_one(store, worker="w2", now=16.0, expires=30.0)
    assert new.task_id == old.task_id and new.attempt == 2
    before, events = store.get_task(old.task_id), store.events("j", 0, 100)
    assert not store.finish(old.task_id, old.lease_id, ok(), 17.0)
    assert not store.finish(old.task_id, "never-issued", ok(), 17.0)
    assert not store.finish("no-such-task", new.lease_id, ok(), 17.0)
    assert store.get_task(old.task_id) == before
    assert store.events("j", 0, 100) == events
    assert store.finish(new.task_id, new.lease_id, ok(), 18.0)


def test_extend_returns_stale_leases(store: Store) -> None:
    submit(store, "j", 3)
    a, b, c = store.lease("w1", 3, 10.0, 20.0, 100)
    assert store.extend("w1", [a.lease_id, b.lease_id, "nope"], 15.0, 40.0) == ["nope"]
    assert store.extend("w1", [], 15.0, 40.0) == []
    assert store.next_expiry() == 20.0  # c was not extended
    assert store.extend("w1", [c.lease_id], 15.0, 40.0) == []
    assert store.next_expiry() == 40.0
    assert store.extend("w2", [a.lease_id], 16.0, 50.0) == [a.lease_id]  # not w2's lease
    store.finish(a.task_id, a.lease_id, ok(), 17.0)
    store.kill([b.task_id], 17.0)
    assert store.extend("w1", [a.lease_id, b.lease_id, c.lease_id], 18.0, 60.0) == [
        a.lease_id,
        b.lease_id,
    ]
    assert store.next_expiry() == 60.0


def test_expire_requeues_then_fails_at_max_attempts(store: Store) -> None:
    (task_id,) = submit(store, "j", 1, max_attempts=2)
    first = lease_one(store, now=10.0, expires=20.0)
    assert store.expire(19.9) == []
    assert store.expire(20.0) == [Stopped(task_id, "w1", first.lease_id)]
    task = store.get_task(task_id)
    assert (task.status, task.worker_id, task.attempts) == ("queued", None, 1)
    assert task.error == "worker w1 lost; requeued"
    assert task.finished is None
    assert store.next_expiry() is None
    assert store.get_job("j").status == "queued"

    second = lease_one(store, worker="w2", now=21.0, expires=30.0)
    assert second.attempt == 2
    assert store.expire(30.0) == [Stopped(task_id, "w2", second.lease_id)]
    task = store.get_task(task_id)
    assert (task.status, task.attempts, task.finished) == ("failed", 2, 30.0)
    assert task.error == "worker lost on all 2 attempts"
    assert store.get_job("j").status == "failed"
    assert store.lease("w3", 1, 31.0, 40.0, 100) == []
    assert store.expire(100.0) == []
    statuses = [(e.status, e.time) for e in store.events("j", 0, 100)]
    assert statuses == [("running", 10.0), ("queued", 20.0), ("running", 21.0), ("failed", 30.0)]


def test_grace_running_only_lengthens_running_leases(store: Store) -> None:
    submit(store, "j", 3)
    a = lease_one(store, now=10.0, expires=20.0)
    b = lease_one(store, now=10.0, expires=50.0)
    store.grace_running(30.0)
    assert store.next_expiry() == 30.0
    assert store.expire(29.0) == []
    assert store.expire(30.0) == [Stopped(a.task_id, "w1", a.lease_id)]
    assert store.extend("w1", [b.lease_id], 31.0, 50.0) == []
    assert store.next_expiry() == 50.0  # b kept its later expiry
    assert store.get_job("j").counts == {
        "queued": 2,
        "running": 1,
        "succeeded": 0,
        "failed": 0,
        "killed": 0,
    }


def test_kill_queued_and_running(store: Store) -> None:
    ids = submit(store, "j", 4)
    running = lease_one(store)
    done = lease_one(store)
    store.finish(done.task_id, done.lease_id, ok(), 11.0)
    stopped = store.kill([ids[2], running.task_id, done.task_id, "nope", ids[2]], 12.0)
    assert stopped == [Stopped(running.task_id, "w1", running.lease_id)]
    for task_id in (running.task_id, ids[2]):
        task = store.get_task(task_id)
        assert (task.status, task.error, task.finished) == ("killed", "killed", 12.0)
    assert store.get_task(done.task_id).status == "succeeded"
    assert store.get_task(ids[3]).status == "queued"
    killed = [e.task_id for e in store.events("j", 0, 100) if e.status == "killed"]
    assert killed == [ids[2], running.task_id]
    assert store.next_expiry() is None
    assert not store.finish(running.task_id, running.lease_id, ok(), 13.0)
    assert store.kill([running.task_id, ids[2]], 14.0) == []
    assert store.kill([], 14.0) == []
    assert [x.task_id for x in store.lease("w1", 10, 15.0, 20.0, 100)] == [ids[3]]


# workers


def test_workers_register_and_touch(store: Store) -> None:
    store.register_worker("w1", "box", 4, {"cpus": 4, "os": "linux"}, 1.0)
    w = store.get_worker("w1")
    assert (w.id, w.name, w.slots, w.slots_used, w.status) == ("w1", "box", 4, 0, "online")
    assert (w.capabilities, w.registered, w.last_heartbeat) == ({"cpus": 4, "os": "linux"}, 1, 1)

    store.touch_worker("w1", 5.0, "draining", {"cpus": 8})
    w = store.get_worker("w1")
    assert (w.status, w.last_heartbeat, w.capabilities) == ("draining", 5.0, {"cpus": 8})
    store.touch_worker("w1", 6.0, "online", None)
    store.touch_worker("w1", 7.0, "online", {})
    w = store.get_worker("w1")
    assert (w.status, w.last_heartbeat, w.capabilities) == ("online", 7.0, {"cpus": 8})

    with pytest.raises(NotFound):
        store.touch_worker("nope", 8.0, "online", None)
    with pytest.raises(NotFound):
        store.get_worker("nope")

    submit(store, "j", 3)
    store.lease("w1", 2, 10.0, 20.0, 100)
    assert store.get_worker("w1").slots_used == 2


def test_workers_mark_lost_and_list(store: Store) -> None:
    store.register_worker("late", "a", 1, {}, 3.0)
    store.register_worker("early", "b", 1, {}, 1.0)
    store.register_worker("draining", "c", 1, {}, 2.0)
    store.register_worker("gone", "d", 1, {}, 0.5)
    store.touch_worker("draining", 2.0, "draining", None)
    store.set_worker_status("gone", "gone")
    store.touch_worker("late", 9.0, "online", None)
    assert sorted(store.mark_lost_workers(5.0)) == ["draining", "early"]
    assert store.get_worker("early").status == "lost"
    assert store.get_worker("gone").status == "gone"
    assert store.mark_lost_workers(5.0) == []
    # online first, then by registration time
    assert [w.id for w in store.list_workers()] == ["late", "gone", "early", "draining"]
    store.set_worker_status("early", "online")
    assert [w.id for w in store.list_workers()] == ["early", "late", "gone", "draining"]


# events and durability


def test_events_after_a_seq(store: Store) -> None:
    a = submit(store, "a", 3)
    submit(store, "b", 2)
    store.lease("w", 5, 10.0, 20.0, 100)
    store.kill(a, 11.0)
    events = store.events("a", 0, 100)
    assert [(e.task_id, e.status) for e in events] == [(t, "running") for t in a] + [
        (t, "killed") for t in a
    ]
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert store.events("a", seqs[1], 100) == events[2:]
    assert store.events("a", seqs[1], 2) == events[2:4]
    assert store.events("a", seqs[-1], 100) == []
    assert {e.job_id for e in store.events("b", 0, 100)} == {"b"}
    assert len(store.events("b", 0, 100)) == 2
    assert store.events("nope", 0, 100) == []


def test_a_reopened_store_sees_everything(store: Store, backend: Backend) -> None:
    submit(store, "j", 3)
    store.register_worker("w1", "box", 2, {"os": "linux"}, 1.0)
    done = lease_one(store)
    store.finish(done.task_id, done.lease_id, ok(manifest={"f": OutputFile("e" * 64, 1)}), 12.0)
    running = lease_one(store, now=13.0, expires=40.0)
    snapshot = (
        store.list_jobs(10),
        store.list_tasks("j", 0, 10),
        store.list_workers(),
        store.events("j", 0, 100),
        store.next_expiry(),
    )
    store.close()

    again = backend.open()
    assert (
        again.list_jobs(10),
        again.list_tasks("j", 0, 10),
        again.list_workers(),
        again.events("j", 0, 100),
        again.next_expiry(),
    ) == snapshot
    assert again.extend("w1", [running.lease_id], 14.0, 50.0) == []
    assert again.finish(running.task_id, running.lease_id, ok(), 15.0)
    assert again.events("j", 0, 100)[-1].seq > snapshot[3][-1].seq


def test_open_store_picks_the_backend(store: Store, backend: Backend) -> None:
    submit(store, "j", 1)
    opened = backend.track(open_store(backend.spec()))
    assert type(opened) is type(store)
    assert opened.get_job("j") == store.get_job("j")


def test_open_store_reads_postgres_urls_case_insensitively(monkeypatch: pytest.MonkeyPatch) -> None:
    import corral.coordinator.store as module

    made: list[str] = []
    monkeypatch.setattr(module, "PostgresStore", lambda dsn: made.append(dsn))
    monkeypatch.setattr(module, "SQLiteStore", lambda path: made.append(f"sqlite:{path}"))
    for spec_ in ("postgresql://h/db", "postgres://h/db", "PostgreSQL://h/db", "data/x.db"):
        open_store(spec_)
    assert made == ["postgresql://h/db", "postgres://h/db", "PostgreSQL://h/db", "sqlite:data/x.db"]


# PostgreSQL only


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[Backend]:
    require_postgres()
    backend = Backend("postgres", tmp_path)
    try:
        yield backend
    finally:
        backend.close()


def test_postgres_reconnects_after_losing_its_connection(pg: Backend) -> None:
    import psycopg

    store = pg.open()
    assert isinstance(store, PostgresStore)
    submit(store, "j", 1)
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (store._db.info.backend_pid,))
    with pytest.raises(psycopg.OperationalError):
        store.get_job("j")
    assert store.get_job("j").total == 1  # the next call reconnects, to the same schema


def test_postgres_stores_with_schemas_do_not_see_each_other(pg: Backend, tmp_path: Path) -> None:
    other = Backend("postgres", tmp_path)
    try:
        a, b = pg.open(), other.open()
        submit(a, "j", 1)
        with pytest.raises(NotFound):
            b.get_job("j")
    finally:
        other.close()


# identities, ownership and audit


def test_tokens_by_hash_list_and_revoke(store: Store) -> None:
    from corral.coordinator.store import TokenRecord

    a = TokenRecord("t1", "alice", "submit", "alice", "a" * 64, 1.0, expires=100.0)
    b = TokenRecord("t2", "box", "worker", "box", "b" * 64, 2.0)
    store.add_token(a)
    store.add_token(b)
    assert store.token_by_hash("a" * 64) == a
    assert store.token_by_hash("c" * 64) is None
    assert [t.id for t in store.list_tokens()] == ["t1", "t2"]
    revoked = store.revoke_token("t2", 5.0)
    assert revoked.revoked == 5.0
    assert store.revoke_token("t2", 9.0).revoked == 5.0  # the first revocation stands
    assert store.token_by_hash("b" * 64) == revoked
    with pytest.raises(NotFound):
        store.revoke_token("nope", 1.0)


def test_add_tasks_extends_a_job(store: Store) -> None:
    submit(store, "j1", 1)
    store.add_tasks("j1", 2.0, [NewTask("j1-c0", 1, spec("child"))])
    job = store.get_job("j1")
    assert job.total == 2 and job.counts["queued"] == 2
    assert [t.name for t in store.list_tasks("j1", 0, 10)] == ["j1-t0", "child"]
    with pytest.raises(NotFound):
        store.add_tasks("nope", 2.0, [NewTask("x", 0, spec())])
    with pytest.raises(NotFound):
        store.get_task("x")


def test_worker_and_blob_ownership(store: Store) -> None:
    store.register_worker("w1", "w1", 1, {}, 1.0)
    assert store.worker_owner("w1") is None
    assert store.registered_by("w1") is None
    store.set_worker_owner("w1", "box")
    assert store.worker_owner("w1") == "box"
    assert store.registered_by("w1") == "box"
    store.set_worker_owner("w2", "box")  # an owner recorded for no worker row
    with pytest.raises(NotFound):
        store.registered_by("w2")
    store.grant_blobs("alice", ["a" * 64, "b" * 64, "a" * 64])
    store.grant_blobs("alice", ["a" * 64])
    assert store.owned_blobs("alice", ["a" * 64, "c" * 64]) == {"a" * 64}
    assert store.owned_blobs("bob", ["a" * 64]) == set()


def test_audit_is_appended_in_order(store: Store) -> None:
    store.add_audit(1.0, "alice", "t1", "job.submit", "j1", "3 tasks")
    store.add_audit(2.0, "root", "t0", "token.revoke", "t1", "")
    entries = store.audit(0, 10)
    assert [(e.action, e.target) for e in entries] == [("job.submit", "j1"), ("token.revoke", "t1")]
    assert store.audit(entries[0].seq, 10) == entries[1:]


# slots, retries and requirement classes (issue 3)


def test_lease_counts_slots_by_each_tasks_cpus(store: Store) -> None:
    tasks = [
        NewTask("big", 0, spec(requires={"cpus": "3"})),
        NewTask("small1", 1, spec()),
        NewTask("small2", 2, spec()),
    ]
    store.create_job("j", "n", "o", 1.0, tasks)
    store.register_worker("w1", "box", 4, {}, 1.0)
    got = store.lease("w1", 4, 10.0, 20.0, 100)
    # oldest first across classes: the 3-slot task, then one 1-slot task fills the 4 slots
    assert sorted(x.task_id for x in got) == ["big", "small1"]
    assert store.get_worker("w1").slots_used == 4
    assert store.lease("w1", 0, 11.0, 20.0, 100) == []
    store.register_worker("w2", "box2", 3, {}, 1.0)
    got = store.lease("w2", 3, 12.0, 20.0, 100)
    assert [x.task_id for x in got] == ["small2"]
    assert store.get_worker("w2").slots_used == 1


def test_a_task_too_big_for_the_capacity_does_not_block_smaller_ones(store: Store) -> None:
    tasks = [NewTask("big", 0, spec(requires={"cpus": "3"})), NewTask("small", 1, spec())]
    store.create_job("j", "n", "o", 1.0, tasks)
    store.register_worker("w1", "box", 2, {}, 1.0)
    assert [x.task_id for x in store.lease("w1", 2, 10.0, 20.0, 100)] == ["small"]


def test_a_queued_retry_waits_for_not_before(store: Store) -> None:
    (tid,) = submit(store, "j", 1)
    store.register_worker("w1", "box", 1, {}, 1.0)
    leased = lease_one(store, now=10.0)
    retry = ok(status="queued", exit_code=3, error="exit code 3; retry", not_before=50.0)
    assert store.finish(tid, leased.lease_id, retry, 12.0)
    task = store.get_task(tid)
    assert (task.status, task.worker_id, task.not_before, task.finished) == (
        "queued",
        None,
        50.0,
        None,
    )
    assert (task.exit_code, task.error, task.attempts) == (3, "exit code 3; retry", 1)
    assert store.get_worker("w1").slots_used == 0
    assert store.next_not_before() == 50.0
    assert store.lease("w1", 1, 20.0, 30.0, 100) == []
    assert store.release_due(20.0) == 0
    assert store.release_due(50.0) == 1
    assert store.next_not_before() is None and store.get_task(tid).not_before is None
    again = lease_one(store, now=51.0)
    assert (again.task_id, again.attempt) == (tid, 2)
    assert store.finish(tid, leased.lease_id, ok(), 52.0) is False  # the old lease is fenced
    assert [e.status for e in store.events("j", 0, 10)] == ["running", "queued", "running"]


def test_queued_requirements_lists_each_class_once(store: Store) -> None:
    tasks = [
        NewTask("a", 0, spec(requires={"programs": "povray"})),
        NewTask("b", 1, spec(requires={"programs": "povray"})),
        NewTask("c", 2, spec()),
    ]
    store.create_job("j", "n", "o", 1.0, tasks)
    assert sorted(map(str, store.queued_requirements())) == ["{'programs': 'povray'}", "{}"]


def test_deep_queues_lease_in_order_and_list_every_class(store: Store) -> None:
    # one job's tasks share `created`: order within it is by seq, however deep the queue
    ids = submit(store, "deep", 300)
    submit(store, "gpu", 2, now=2.0, requires={"gpu": "1"})
    submit(store, "cpu", 2, now=3.0, requires={"cpus": "2"})
    classes = sorted(map(str, store.queued_requirements()))
    assert classes == ["{'cpus': '2'}", "{'gpu': '1'}", "{}"]
    got = [x.task_id for x in store.lease("w", 7, 10.0, 20.0, 100, lambda r: not r)]
    assert got == ids[:7]
    got = [x.task_id for x in store.lease("w", 5, 11.0, 20.0, 100, lambda r: not r)]
    assert got == ids[7:12]
    gpu = store.lease("w", 5, 12.0, 20.0, 100, lambda r: r.get("gpu") == "1")
    assert [x.task_id for x in gpu] == ["gpu-t0", "gpu-t1"]
    assert sorted(map(str, store.queued_requirements())) == ["{'cpus': '2'}", "{}"]
    assert store.next_not_before() is None and store.release_due(100.0) == 0


def test_an_older_sqlite_database_gains_the_new_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE tasks (id TEXT PRIMARY KEY, job_id TEXT NOT NULL, seq INTEGER NOT NULL,"
        " status TEXT NOT NULL, spec BLOB NOT NULL, requires TEXT NOT NULL,"
        " attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL, worker_id TEXT,"
        " lease_id TEXT, lease_expires REAL, exit_code INTEGER, error TEXT, stdout TEXT,"
        " stderr TEXT, manifest BLOB, created REAL NOT NULL, started REAL, finished REAL)"
    )
    db.commit()
    db.close()
    store = SQLiteStore(path)
    try:
        submit(store, "j", 1, requires={"cpus": "2"})
        store.register_worker("w", "box", 2, {}, 1.0)
        assert len(store.lease("w", 2, 10.0, 20.0, 100)) == 1
        assert store.get_worker("w").slots_used == 2
    finally:
        store.close()


# the executable allowlist (issue 4)


def test_allowlist_add_list_remove(store: Store, backend: Backend) -> None:
    from corral.protocol import AllowEntry

    a, b = "aa" * 32, "bb" * 32
    assert store.allow_list() == []
    assert store.allow_add(AllowEntry(b, "sh", 2.0, "root")) is True
    assert store.allow_add(AllowEntry(a, "python", 1.0, "alice")) is True
    assert store.allow_add(AllowEntry(a, "again", 3.0, "bob")) is False  # the first note stays
    assert store.allow_list() == [
        AllowEntry(a, "python", 1.0, "alice"),
        AllowEntry(b, "sh", 2.0, "root"),
    ]
    assert store.allow_remove(a) is True
    assert store.allow_remove(a) is False
    assert [e.sha256 for e in store.allow_list()] == [b]
    store.close()
    assert [e.sha256 for e in backend.open().allow_list()] == [b]  # it is durable


# job tokens (access.py): valid while their lease is the task's live lease


def test_live_lease_ends_with_the_attempt(store: Store) -> None:
    submit(store, "j", 3, owner="carol")
    a = lease_one(store, now=10.0, expires=20.0)
    assert store.live_lease(a.task_id, a.lease_id, 15.0) == ("j", "carol")
    assert store.live_lease(a.task_id, "other", 15.0) is None
    assert store.live_lease("nope", a.lease_id, 15.0) is None
    assert store.live_lease(a.task_id, a.lease_id, 20.0) is None  # past its expiry
    assert store.extend("w1", [a.lease_id], 19.0, 30.0) == []
    assert store.live_lease(a.task_id, a.lease_id, 25.0) == ("j", "carol")  # extended
    assert store.finish(a.task_id, a.lease_id, ok(), 26.0)
    assert store.live_lease(a.task_id, a.lease_id, 26.0) is None  # finished
    b = lease_one(store, now=30.0, expires=40.0)
    store.kill([b.task_id], 31.0)
    assert store.live_lease(b.task_id, b.lease_id, 32.0) is None  # killed
    c = lease_one(store, now=30.0, expires=40.0)
    assert store.release(c.task_id, c.lease_id, 31.0, GIVEN_BACK)
    assert store.live_lease(c.task_id, c.lease_id, 32.0) is None  # given back
    again = lease_one(store, now=33.0, expires=35.0)
    assert again.task_id == c.task_id
    store.expire(36.0)
    assert store.live_lease(again.task_id, again.lease_id, 34.0) is None  # expired, requeued


# what the dashboard reads (_browse.py), and retrying failed tasks


def test_jobs_page_filters_by_owner_and_status_and_pages(store: Store) -> None:
    submit(store, "a", 2, now=1.0)  # queued
    submit(store, "b", 2, now=2.0, owner="bob")  # running
    submit(store, "c", 1, now=3.0)  # failed
    submit(store, "d", 1, now=4.0)  # killed
    submit(store, "e", 1, now=5.0, owner="bob")  # succeeded
    store.lease("w1", 1, 10.0, 20.0, 100, job_id="b")
    (failed,) = store.lease("w1", 1, 10.0, 20.0, 100, job_id="c")
    store.finish(failed.task_id, failed.lease_id, ok(status="failed", exit_code=1), 11.0)
    store.kill(["d-t0"], 12.0)
    (done,) = store.lease("w1", 1, 10.0, 20.0, 100, job_id="e")
    store.finish(done.task_id, done.lease_id, ok(), 11.0)
    assert [j.id for j in store.jobs_page(None, None, 0, 10)] == ["e", "d", "c", "b", "a"]
    assert [j.id for j in store.jobs_page(None, None, 1, 2)] == ["d", "c"]
    assert [j.id for j in store.jobs_page("bob", None, 0, 10)] == ["e", "b"]
    for job in store.jobs_page(None, None, 0, 10):
        assert [j.id for j in store.jobs_page(None, job.status, 0, 10)] == [job.id]
        assert store.jobs_page(None, job.status, 0, 10) == [store.get_job(job.id)]
    assert store.jobs_page("bob", "failed", 0, 10) == []


def test_tasks_page_keyset_both_ways_with_a_status(store: Store) -> None:
    ids = submit(store, "j", 7)
    store.kill([ids[1], ids[4], ids[5]], 5.0)
    assert [t.id for t in store.tasks_page("j", None, limit=3)] == ids[:3]
    assert [t.id for t in store.tasks_page("j", None, after=2, limit=3)] == ids[3:6]
    assert [t.id for t in store.tasks_page("j", None, before=3, limit=2)] == ids[1:3]
    assert [t.id for t in store.tasks_page("j", "killed", limit=2)] == [ids[1], ids[4]]
    assert [t.id for t in store.tasks_page("j", "killed", after=4)] == [ids[5]]
    assert [t.id for t in store.tasks_page("j", "killed", before=5)] == [ids[1], ids[4]]
    assert store.tasks_page("j", "failed") == []
    assert store.tasks_page("j", None, limit=1)[0] == store.get_task(ids[0])


def test_task_spans_events_counts_and_finished_times(store: Store) -> None:
    ids = submit(store, "j", 3)
    first = lease_one(store, "w1", now=10.0)
    second = lease_one(store, "w2", now=11.0)
    store.finish(first.task_id, first.lease_id, ok(), 12.0)
    spans = store.task_spans("j", 10)
    assert [(s.task_id, s.worker_id, s.status, s.started) for s in spans] == [
        (ids[0], "w1", "succeeded", 10.0),
        (ids[1], "w2", "running", 11.0),
    ]
    assert spans[0].finished == 12.0 and spans[1].finished is None
    assert [s.task_id for s in store.task_spans("j", 1)] == [ids[1]]
    assert [e.status for e in store.task_events("j", ids[0])] == ["running", "succeeded"]
    assert store.task_events("j", ids[2]) == []
    assert store.farm_counts() == {"queued": 1, "running": 1}
    assert store.finished_times(0.0) == [12.0]
    assert store.finished_times(12.5) == []
    for i in range(3):
        store.add_audit(float(i), "alice", "tok", "job.kill", f"j{i}", "")
    assert [e.target for e in store.audit_newest(2)] == ["j2", "j1"]
    assert second.task_id == ids[1]


def test_requeue_failed_makes_new_attempts_and_holds_dependents(store: Store) -> None:
    ids = submit(store, "j", 2, max_attempts=1)
    dep = NewTask("j-t2", 2, spec("j-t2", after=[ids[0]]))
    store.add_tasks("j", 2.0, [dep])
    for _ in range(2):
        leased = lease_one(store)
        store.finish(leased.task_id, leased.lease_id, ok(status="failed", exit_code=3), 12.0)
    assert store.get_task("j-t2").status == "failed"  # its dependency failed
    assert store.requeue_failed("j", 20.0) == [ids[0], ids[1], "j-t2"]
    task = store.get_task(ids[0])
    assert (task.status, task.exit_code, task.finished, task.attempts) == ("queued", None, None, 1)
    assert store.task_events("j", ids[0])[-1].status == "queued"
    leased = store.lease("w1", 5, 21.0, 30.0, 100)
    assert sorted(x.task_id for x in leased) == ids  # the dependent waits on its dependency
    assert leased[0].attempt == 2
    store.finish(leased[0].task_id, leased[0].lease_id, ok(), 22.0)
    assert [x.task_id for x in store.lease("w1", 5, 23.0, 30.0, 100)] == ["j-t2"]
    assert store.requeue_failed("j", 24.0) == []


def test_requeue_failed_leaves_tasks_whose_dependency_was_killed(store: Store) -> None:
    (other,) = submit(store, "o", 1)
    store.kill([other], 2.0)
    store.create_job("j", "j", "alice", 3.0, [NewTask("j-t0", 0, spec("x", after=[other]))])
    assert store.get_task("j-t0").status == "failed"
    assert store.requeue_failed("j", 4.0) == []
