"""SQLite backend: one connection in WAL mode, used from the coordinator's event loop only."""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ...protocol import Event, Job, Task, Worker, slots_needed
from ._allowlist import AllowlistSQL
from ._deps import DependencySQL
from ._identity import IdentitySQL
from .base import (
    ADDED_TASK_COLUMNS,
    EVENT_INSERT,
    FINISH,
    JOB_COLUMNS,
    LEASE_TOUCH,
    LEASE_UPDATE,
    QUEUED_CLASSES,
    RELEASED,
    RETRY_INDEX,
    TASK_COLUMNS,
    WORKER_SELECT,
    Leased,
    NewTask,
    NotFound,
    Outcome,
    Stopped,
    Store,
    class_requires,
    class_slots,
    encode,
    expired_to,
    finish_args,
    fitting_classes,
    in_list,
    job_counts,
    job_from_row,
    new_lease_id,
    oldest_first,
    requires_key,
    spec_decoder,
    task_from_row,
    unique_runs,
    worker_from_row,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, owner TEXT NOT NULL,
    created REAL NOT NULL, total INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, job_id TEXT NOT NULL, seq INTEGER NOT NULL, status TEXT NOT NULL,
    spec BLOB NOT NULL, requires TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL, worker_id TEXT, lease_id TEXT, lease_expires REAL,
    exit_code INTEGER, error TEXT, stdout TEXT, stderr TEXT, manifest BLOB,
    created REAL NOT NULL, started REAL, finished REAL
);
CREATE INDEX IF NOT EXISTS tasks_job ON tasks(job_id, seq);
CREATE INDEX IF NOT EXISTS tasks_job_status ON tasks(job_id, status);
CREATE INDEX IF NOT EXISTS tasks_queue ON tasks(status, requires, created) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS tasks_running ON tasks(lease_expires) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS tasks_worker ON tasks(worker_id) WHERE status = 'running';
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, slots INTEGER NOT NULL, status TEXT NOT NULL,
    capabilities BLOB NOT NULL, registered REAL NOT NULL, last_heartbeat REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, job_id TEXT NOT NULL, task_id TEXT NOT NULL,
    status TEXT NOT NULL, exit_code INTEGER, time REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id, seq);
CREATE TABLE IF NOT EXISTS task_specs (id TEXT PRIMARY KEY, spec BLOB NOT NULL);
"""
# A spec longer than this lives in task_specs, its tasks row keeping an empty one: every state
# change rewrites the whole row, and rows of a few kB (env, inputs) left one or two to a page,
# so each change also moved cells between pages. Reads take it from wherever it is (databases
# made before this keep every spec in its row).
INLINE_SPEC = 256
_SPEC = (
    "CASE WHEN length(spec) THEN spec"
    " ELSE (SELECT s.spec FROM task_specs s WHERE s.id = tasks.id) END"
)
_TASK_COLUMNS = TASK_COLUMNS.replace(" spec,", f" {_SPEC},")
# events.seq is a plain rowid (databases made before this keep AUTOINCREMENT): events are never
# deleted, so each new seq is still the largest yet, and no commit writes sqlite_sequence.

# Created once the newer columns exist: the lease query walks it in (created, seq) order and
# stops after LIMIT rows, however deep the queue (the older tasks_queue index made it sort
# every queued task of the same `created`, i.e. a whole job, on each lease).
READY_INDEX = (
    "CREATE INDEX IF NOT EXISTS tasks_ready ON tasks(requires, created, seq)"
    " WHERE status = 'queued' AND waiting = 0"
)
_FINISH = FINISH.format(p="?")
_LEASE_UPDATE = LEASE_UPDATE.format(p="?")
_EVENT = EVENT_INSERT.format(p="?,?,?,?,?")
_TOUCH = LEASE_TOUCH.format(p="?")
# Several results in one statement (UPDATE ... FROM, SQLite 3.33); finish_args' order.
_FINISH_FROM = (
    "WITH r(id, lease_id, status, exit_code, error, stdout, stderr, manifest, finished,"
    " not_before) AS (VALUES {rows})"
    " UPDATE tasks SET status = r.status, exit_code = r.exit_code, error = r.error,"
    " stdout = r.stdout, stderr = r.stderr, manifest = r.manifest, finished = r.finished,"
    " not_before = r.not_before, lease_id = NULL, lease_expires = NULL,"
    " worker_id = CASE WHEN r.status = 'queued' THEN NULL ELSE tasks.worker_id END"
    " FROM r WHERE tasks.id = r.id AND tasks.lease_id = r.lease_id AND tasks.worker_id = ?"
    " AND tasks.status = 'running' RETURNING tasks.id, tasks.job_id"
)


def _finish_row(task_id: str, lease_id: str, o: Outcome, now: float) -> tuple[Any, ...]:
    return (task_id, lease_id, *finish_args(o, now)[:8])


SECURITY_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, owner TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE, created REAL NOT NULL, expires REAL, revoked REAL,
    job_id TEXT
);
CREATE TABLE IF NOT EXISTS worker_owners (worker_id TEXT PRIMARY KEY, owner TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blob_owners (
    owner TEXT NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (owner, sha256)
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, actor TEXT NOT NULL,
    token_id TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL
);
"""


class SQLiteStore(AllowlistSQL, DependencySQL, IdentitySQL, Store):
    """Durable state in one SQLite file."""

    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._depth = 0  # transactions open (atomic, then each method's own)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        # the hot pages (queue index, running tasks, workers) stay in memory: 64 MB at most
        self._db.execute("PRAGMA cache_size=-65536")
        self._db.execute("PRAGMA temp_store=MEMORY")
        # Checkpoints (which fsync twice under synchronous=NORMAL) run on a thread of their own
        # instead of inside whichever commit crossed the threshold, on the event loop; the
        # loop's own autocheckpoint stays as a backstop, at 16 MB of WAL.
        self._db.execute("PRAGMA wal_autocheckpoint=4096")
        self._checkpoints = _Checkpointer(self, str(path)) if str(path) != ":memory:" else None
        self._db.executescript(SCHEMA)
        self._db.executescript(SECURITY_SCHEMA)
        self._create_allowlist("REAL")
        self._add_columns()
        self._db.execute(READY_INDEX)
        self._db.execute(RETRY_INDEX)
        self._create_deps()

    def _add_columns(self) -> None:
        # a data directory from an earlier version lacks the newer task columns
        have = {row[1] for row in self._db.execute("PRAGMA table_info(tasks)")}
        for name, kind in ADDED_TASK_COLUMNS:
            if name not in have:
                self._db.execute(f"ALTER TABLE tasks ADD COLUMN {name} {kind.format(real='REAL')}")

    def close(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.stop()
        self._db.close()

    def _tx(self) -> _Transaction:
        return _Transaction(self)

    def atomic(self) -> _Transaction:
        return _Transaction(self)

    def _event(self, job_id: str, task_id: str, status: str, code: int | None, now: float) -> None:
        self._db.execute(_EVENT, (job_id, task_id, status, code, now))

    def _events(self, rows: Sequence[tuple[str, str, str, int | None, float]]) -> None:
        """Several (job, task, status, exit code, time) events in one statement."""
        self._db.executemany(_EVENT, rows)

    # jobs and tasks
    def create_job(
        self, job_id: str, name: str, owner: str, now: float, tasks: Sequence[NewTask]
    ) -> None:
        with self._tx():
            self._db.execute(
                "INSERT INTO jobs (id, name, owner, created, total) VALUES (?,?,?,?,?)",
                (job_id, name, owner, now, len(tasks)),
            )
            self._insert_tasks(job_id, now, tasks)
            self._hold_new(now, tasks)

    def _insert_tasks(self, job_id: str, now: float, tasks: Sequence[NewTask]) -> None:
        rows, apart = [], []
        for t in tasks:
            spec = encode(t.spec)
            if len(spec) > INLINE_SPEC:
                apart.append((t.id, spec))
                spec = b""
            rows.append(
                (
                    t.id,
                    job_id,
                    t.seq,
                    spec,
                    requires_key(t.spec),
                    t.spec.max_attempts,
                    now,
                    slots_needed(t.spec.requires),
                )
            )
        self._db.executemany(
            "INSERT INTO tasks (id, job_id, seq, status, spec, requires, max_attempts,"
            " created, cost) VALUES (?,?,?,'queued',?,?,?,?,?)",
            rows,
        )
        if apart:
            self._db.executemany("INSERT INTO task_specs (id, spec) VALUES (?,?)", apart)

    def _job(self, row: tuple[Any, ...]) -> Job:
        rows = self._db.execute(
            "SELECT status, COUNT(*) FROM tasks WHERE job_id = ? GROUP BY status", (row[0],)
        )
        return job_from_row(row, job_counts(rows))

    def get_job(self, job_id: str) -> Job:
        row = self._db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return self._job(row)

    def list_jobs(self, limit: int, owner: str | None = None) -> list[Job]:
        sql = f"SELECT {JOB_COLUMNS} FROM jobs"
        args: tuple[Any, ...] = ()
        if owner is not None:
            sql, args = sql + " WHERE owner = ?", (owner,)
        rows = self._db.execute(sql + " ORDER BY created DESC LIMIT ?", (*args, limit))
        return [self._job(r) for r in rows.fetchall()]

    def get_task(self, task_id: str) -> Task:
        row = self._db.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no task {task_id}")
        return task_from_row(row)

    def get_tasks(self, task_ids: Sequence[str]) -> dict[str, Task]:
        found: dict[str, Task] = {}
        unique = list(dict.fromkeys(task_ids))
        for i in range(0, len(unique), 512):
            where, args = in_list("?", unique[i : i + 512])
            rows = self._db.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id {where}", args)
            found.update((r[0], task_from_row(r)) for r in rows.fetchall())
        return found

    def job_owner(self, job_id: str) -> str:
        row = self._db.execute("SELECT owner FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return str(row[0])

    def job_finished(self, job_id: str) -> bool:
        row = self._db.execute(
            "SELECT (SELECT 1 FROM tasks WHERE job_id = ? AND status IN ('queued', 'running')"
            " LIMIT 1) FROM jobs WHERE id = ?",
            (job_id, job_id),
        ).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return row[0] is None

    def list_tasks(
        self, job_id: str, offset: int, limit: int, status: str | None = None
    ) -> list[Task]:
        where, args = "job_id = ?", [job_id]
        if status is not None:
            where, args = where + " AND status = ?", [job_id, status]
        rows = self._db.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE {where} ORDER BY seq LIMIT ? OFFSET ?",
            (*args, limit, offset),
        )
        return [task_from_row(r) for r in rows.fetchall()]

    def job_task_ids(self, job_id: str, only_live: bool) -> list[str]:
        sql = "SELECT id FROM tasks WHERE job_id = ?"
        if only_live:
            sql += " AND status IN ('queued', 'running')"
        return [r[0] for r in self._db.execute(sql, (job_id,))]

    # scheduling
    def lease(
        self,
        worker_id: str,
        capacity: int,
        now: float,
        expires: float,
        scan: int,
        fits: Callable[[dict[str, str]], bool] = lambda _r: True,
        job_id: str | None = None,
    ) -> list[Leased]:
        if capacity <= 0:
            return []
        only_job = " AND job_id = ?" if job_id is not None else ""
        decode = spec_decoder.decode
        with self._tx():
            candidates = []
            for key in fitting_classes(self._queued_classes(), fits):
                cost = class_slots(key)
                if cost > capacity:
                    continue
                rows = self._db.execute(
                    f"SELECT id, job_id, {_SPEC}, attempts, created, seq FROM tasks"
                    " WHERE status = 'queued' AND requires = ? AND waiting = 0"
                    " AND (not_before IS NULL OR not_before <= ?)"
                    + only_job
                    + " ORDER BY created, seq LIMIT ?",
                    (
                        key,
                        now,
                        *([job_id] if job_id is not None else []),
                        min(scan, capacity // cost),
                    ),
                ).fetchall()
                candidates += [(r[4], r[5], cost, r) for r in rows]
            out = [
                Leased(task_id, job_id, new_lease_id(), attempts + 1, expires, decode(spec))
                for task_id, job_id, spec, attempts, _c, _s in oldest_first(candidates, capacity)
            ]
            if out:
                db = self._db
                db.executemany(
                    _LEASE_UPDATE,
                    [(worker_id, x.lease_id, expires, now, x.task_id) for x in out],
                )
                self._events([(x.job_id, x.task_id, "running", None, now) for x in out])
                db.execute(_TOUCH, (now, worker_id))
        return out

    def queued_requirements(self) -> list[dict[str, str]]:
        return [class_requires(key) for key in self._queued_classes()]

    def release_due(self, now: float) -> int:
        cur = self._db.execute(
            "UPDATE tasks INDEXED BY tasks_retry SET not_before = NULL"
            " WHERE status = 'queued' AND not_before <= ?",
            (now,),
        )
        return cur.rowcount

    def next_not_before(self) -> float | None:
        row = self._db.execute(
            "SELECT MIN(not_before) FROM tasks INDEXED BY tasks_retry"
            " WHERE status = 'queued' AND not_before IS NOT NULL"
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def _queued_classes(self) -> list[str]:
        return [r[0] for r in self._db.execute(QUEUED_CLASSES).fetchall()]

    def finish(self, task_id: str, lease_id: str, outcome: Outcome, now: float) -> bool:
        with self._tx():
            row = self._db.execute(
                _FINISH + " RETURNING job_id", (*finish_args(outcome, now), task_id, lease_id)
            ).fetchone()
            if row is None:
                return False
            self._event(row[0], task_id, outcome.status, outcome.exit_code, now)
            self._settle_dependents(task_id, outcome.status, now)
        return True

    def finish_many(
        self, worker_id: str, items: Sequence[tuple[str, str, Outcome]], now: float
    ) -> list[bool]:
        if not items:
            return []
        out, events = [], []
        with self._tx():
            for run in unique_runs(items):  # a task twice in a batch: later runs see the first
                found = self._finish_run(worker_id, run, now)
                for task_id, _lease, o in run:
                    out.append(task_id in found)
                    if task_id in found:
                        events.append((found[task_id], task_id, o.status, o.exit_code, now))
            if events:
                self._events(events)
                self._settle_many([(e[1], e[2]) for e in events], now)
        return out

    def _finish_run(
        self, worker_id: str, run: Sequence[tuple[str, str, Outcome]], now: float
    ) -> dict[str, str]:
        """Record results for distinct tasks with one statement; task id -> job id of those
        whose lease was live and held by `worker_id`."""
        rows = ",".join("(?,?,?,?,?,?,?,?,?,?)" for _ in run)
        args = [v for task_id, lease_id, o in run for v in _finish_row(task_id, lease_id, o, now)]
        found = self._db.execute(_FINISH_FROM.format(rows=rows), (*args, worker_id))
        return dict(found.fetchall())

    def release(self, task_id: str, lease_id: str, now: float) -> bool:
        with self._tx():
            row = self._db.execute(
                "UPDATE tasks SET status = 'queued', attempts = MAX(attempts - 1, 0),"
                " lease_id = NULL, lease_expires = NULL, worker_id = NULL, started = NULL,"
                " error = ? WHERE id = ? AND lease_id = ? AND status = 'running'"
                " RETURNING job_id",
                (RELEASED, task_id, lease_id),
            ).fetchone()
            if row is None:
                return False
            self._event(row[0], task_id, "queued", None, now)
        return True

    def extend(
        self, worker_id: str, lease_ids: Sequence[str], now: float, expires: float
    ) -> list[str]:
        if not lease_ids:
            return []
        live: set[str] = set()
        for i in range(0, len(lease_ids), 512):  # one statement, one commit, per 512 leases
            where, args = in_list("?", lease_ids[i : i + 512])
            rows = self._db.execute(
                f"UPDATE tasks SET lease_expires = ? WHERE worker_id = ? AND status = 'running'"
                f" AND lease_id {where} RETURNING lease_id",
                (expires, worker_id, *args),
            )
            live.update(r[0] for r in rows.fetchall())
        return [lease_id for lease_id in lease_ids if lease_id not in live]

    def expire(self, now: float) -> list[Stopped]:
        out = []
        with self._tx():
            rows = self._db.execute(
                "SELECT id, job_id, worker_id, lease_id, attempts, max_attempts FROM tasks"
                " WHERE status = 'running' AND lease_expires <= ?",
                (now,),
            ).fetchall()
            for task_id, job_id, worker_id, lease_id, attempts, max_attempts in rows:
                status, error = expired_to(worker_id, attempts, max_attempts)
                self._db.execute(
                    "UPDATE tasks SET status = ?, error = ?, lease_id = NULL,"
                    " lease_expires = NULL, worker_id = CASE WHEN ? = 'queued' THEN NULL"
                    " ELSE worker_id END, finished = CASE WHEN ? = 'failed' THEN ? END"
                    " WHERE id = ?",
                    (status, error, status, status, now, task_id),
                )
                self._event(job_id, task_id, status, None, now)
                self._settle_dependents(task_id, status, now)
                out.append(Stopped(task_id, worker_id, lease_id))
        return out

    def next_expiry(self) -> float | None:
        row = self._db.execute(
            "SELECT MIN(lease_expires) FROM tasks WHERE status = 'running'"
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def grace_running(self, until: float) -> None:
        self._db.execute(
            "UPDATE tasks SET lease_expires = MAX(lease_expires, ?) WHERE status = 'running'",
            (until,),
        )

    def kill(self, task_ids: Sequence[str], now: float) -> list[Stopped]:
        out, killed = [], []
        with self._tx():
            for task_id in task_ids:
                row = self._db.execute(
                    "UPDATE tasks SET status = 'killed', finished = ?, error = 'killed',"
                    " lease_expires = NULL WHERE id = ? AND status IN ('queued', 'running')"
                    " RETURNING job_id, worker_id, lease_id",
                    (now, task_id),
                ).fetchone()
                if row is None:
                    continue
                killed.append(task_id)
                self._event(row[0], task_id, "killed", None, now)
                if row[2] is not None:
                    out.append(Stopped(task_id, row[1], row[2]))
            for task_id in killed:  # after all kills: a job kill leaves its tasks killed
                self._settle_dependents(task_id, "killed", now)
        return out

    # workers
    def register_worker(
        self, worker_id: str, name: str, slots: int, caps: dict[str, object], now: float
    ) -> None:
        self._db.execute(
            "INSERT INTO workers (id, name, slots, status, capabilities, registered,"
            " last_heartbeat) VALUES (?,?,?,'online',?,?,?)",
            (worker_id, name, slots, encode(caps), now, now),
        )

    def touch_worker(
        self, worker_id: str, now: float, status: str, caps: dict[str, object] | None
    ) -> None:
        if caps:
            cur = self._db.execute(
                "UPDATE workers SET last_heartbeat = ?, status = ?, capabilities = ? WHERE id = ?",
                (now, status, encode(caps), worker_id),
            )
        else:
            cur = self._db.execute(
                "UPDATE workers SET last_heartbeat = ?, status = ? WHERE id = ?",
                (now, status, worker_id),
            )
        if cur.rowcount == 0:
            raise NotFound(f"no worker {worker_id}")

    def set_worker_status(self, worker_id: str, status: str) -> None:
        self._db.execute("UPDATE workers SET status = ? WHERE id = ?", (status, worker_id))

    def mark_lost_workers(self, before: float) -> list[str]:
        rows = self._db.execute(
            "UPDATE workers SET status = 'lost' WHERE status IN ('online', 'draining',"
            " 'idle-wait', 'suspended')"
            " AND last_heartbeat < ? RETURNING id",
            (before,),
        ).fetchall()
        return [r[0] for r in rows]

    def get_worker(self, worker_id: str) -> Worker:
        row = self._db.execute(f"{WORKER_SELECT} WHERE w.id = ?", (worker_id,)).fetchone()
        if row is None:
            raise NotFound(f"no worker {worker_id}")
        return worker_from_row(row, row[-1])

    def list_workers(self) -> list[Worker]:
        rows = self._db.execute(
            f"{WORKER_SELECT} ORDER BY w.status != 'online', w.registered"
        ).fetchall()
        return [worker_from_row(r, r[-1]) for r in rows]

    # events
    def events(self, job_id: str, after: int, limit: int) -> list[Event]:
        rows = self._db.execute(
            "SELECT seq, job_id, task_id, status, exit_code, time FROM events"
            " WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (job_id, after, limit),
        )
        return [Event(*r) for r in rows.fetchall()]

    # identities, ownership and audit
    def add_tasks(self, job_id: str, now: float, tasks: Sequence[NewTask]) -> None:
        with self._tx():
            cur = self._db.execute(
                "UPDATE jobs SET total = total + ? WHERE id = ?", (len(tasks), job_id)
            )
            if cur.rowcount == 0:
                raise NotFound(f"no job {job_id}")
            self._insert_tasks(job_id, now, tasks)
            self._hold_new(now, tasks)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error; inside another one (`atomic`), a
    savepoint, so a method that fails still undoes exactly its own changes."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    def __enter__(self) -> None:
        store = self._store
        store._db.execute("SAVEPOINT corral" if store._depth else "BEGIN IMMEDIATE")
        store._depth += 1

    def __exit__(self, exc_type: object, *_: object) -> None:
        store = self._store
        store._depth -= 1
        if store._depth == 0:
            try:
                store._db.execute("ROLLBACK" if exc_type else "COMMIT")
            except sqlite3.Error:
                if store._db.in_transaction:  # a failed COMMIT leaves it open: end it
                    store._db.execute("ROLLBACK")
                raise
            return
        if exc_type:
            store._db.execute("ROLLBACK TO corral")
        store._db.execute("RELEASE corral")


class _Checkpointer:
    """Copies the WAL into the database file every `interval` seconds from its own thread and
    connection (PASSIVE: it never blocks the writer). A commit is durable once it is in the
    WAL; a checkpoint only moves it, so doing it here changes no guarantee."""

    def __init__(self, owner: SQLiteStore, path: str, interval: float = 0.2) -> None:
        self._owner = weakref.ref(owner)  # a store dropped without close() stops it too
        self._path = path
        self._interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="corral-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            return
        try:
            while not self._stopping.wait(self._interval) and self._owner() is not None:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            pass  # the file went away under us; the writer's autocheckpoint carries on
        finally:
            db.close()

    def stop(self) -> None:
        """Stop the thread (it finishes a checkpoint in progress first)."""
        self._stopping.set()
        self._thread.join()
