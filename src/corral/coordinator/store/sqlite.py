"""SQLite backend: one connection in WAL mode, used from the coordinator's event loop only."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from ...protocol import TASK_STATUSES, Event, Job, OutputFile, Task, TaskSpec, Worker
from .base import Leased, NewTask, NotFound, Outcome, Stopped, Store, job_status

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
    seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, task_id TEXT NOT NULL,
    status TEXT NOT NULL, exit_code INTEGER, time REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id, seq);
"""

_TASK_COLUMNS = (
    "id, job_id, seq, status, spec, attempts, max_attempts, worker_id, exit_code, error,"
    " stdout, stderr, manifest, created, started, finished"
)
_spec_decoder = msgspec.json.Decoder(TaskSpec)
_manifest_decoder = msgspec.json.Decoder(dict[str, OutputFile])
_caps_decoder = msgspec.json.Decoder(dict[str, object])
_encode = msgspec.json.encode


def requires_key(spec: TaskSpec) -> str:
    """A canonical text for a task's requirements, so equal requirements share a queue."""
    return _encode(dict(sorted(spec.requires.items()))).decode() if spec.requires else ""


class SQLiteStore(Store):
    """Durable state in one SQLite file."""

    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    def _event(self, job_id: str, task_id: str, status: str, code: int | None, now: float) -> None:
        self._db.execute(
            "INSERT INTO events (job_id, task_id, status, exit_code, time) VALUES (?,?,?,?,?)",
            (job_id, task_id, status, code, now),
        )

    # jobs and tasks
    def create_job(
        self, job_id: str, name: str, owner: str, now: float, tasks: Sequence[NewTask]
    ) -> None:
        with self._tx():
            self._db.execute(
                "INSERT INTO jobs (id, name, owner, created, total) VALUES (?,?,?,?,?)",
                (job_id, name, owner, now, len(tasks)),
            )
            self._db.executemany(
                "INSERT INTO tasks (id, job_id, seq, status, spec, requires, max_attempts,"
                " created) VALUES (?,?,?,'queued',?,?,?,?)",
                [
                    (
                        t.id,
                        job_id,
                        t.seq,
                        _encode(t.spec),
                        requires_key(t.spec),
                        t.spec.max_attempts,
                        now,
                    )
                    for t in tasks
                ],
            )

    def _counts(self, job_id: str) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(TASK_STATUSES, 0)
        rows = self._db.execute(
            "SELECT status, COUNT(*) FROM tasks WHERE job_id = ? GROUP BY status", (job_id,)
        )
        for status, n in rows:
            counts[status] = n
        return counts

    def _job(self, row: tuple[Any, ...]) -> Job:
        counts = self._counts(row[0])
        return Job(
            id=row[0],
            name=row[1],
            owner=row[2],
            created=row[3],
            total=row[4],
            counts=counts,
            status=job_status(counts),  # type: ignore[arg-type]
        )

    def get_job(self, job_id: str) -> Job:
        row = self._db.execute(
            "SELECT id, name, owner, created, total FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return self._job(row)

    def list_jobs(self, limit: int, owner: str | None = None) -> list[Job]:
        sql = "SELECT id, name, owner, created, total FROM jobs"
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
        return _task(row)

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
        return [_task(r) for r in rows.fetchall()]

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
    ) -> list[Leased]:
        if capacity <= 0:
            return []
        out: list[Leased] = []
        with self._tx():
            for key in self._fitting_classes(fits):
                rows = self._db.execute(
                    "SELECT id, job_id, spec, attempts FROM tasks"
                    " WHERE status = 'queued' AND requires = ? ORDER BY created, seq LIMIT ?",
                    (key, min(scan, capacity - len(out))),
                ).fetchall()
                for task_id, job_id, spec, attempts in rows:
                    lease_id = uuid.uuid4().hex
                    self._db.execute(
                        "UPDATE tasks SET status = 'running', worker_id = ?, lease_id = ?,"
                        " lease_expires = ?, attempts = attempts + 1, started = ? WHERE id = ?",
                        (worker_id, lease_id, expires, now, task_id),
                    )
                    self._event(job_id, task_id, "running", None, now)
                    out.append(
                        Leased(
                            task_id,
                            job_id,
                            lease_id,
                            attempts + 1,
                            expires,
                            _spec_decoder.decode(spec),
                        )
                    )
                if len(out) >= capacity:
                    break
        return out

    def _fitting_classes(self, fits: Callable[[dict[str, str]], bool]) -> list[str]:
        # One row per distinct requirement class with queued work: matching cost grows with
        # the number of classes, not with queue depth.
        keys = self._db.execute(
            "SELECT DISTINCT requires FROM tasks WHERE status = 'queued'"
        ).fetchall()
        out = []
        for (key,) in keys:
            requires: dict[str, str] = msgspec.json.decode(key) if key else {}
            if fits(requires):
                out.append(key)
        return out

    def finish(self, task_id: str, lease_id: str, outcome: Outcome, now: float) -> bool:
        with self._tx():
            cur = self._db.execute(
                "UPDATE tasks SET status = ?, exit_code = ?, error = ?, stdout = ?, stderr = ?,"
                " manifest = ?, finished = ?, lease_id = NULL, lease_expires = NULL"
                " WHERE id = ? AND lease_id = ? AND status = 'running' RETURNING job_id",
                (
                    outcome.status,
                    outcome.exit_code,
                    outcome.error,
                    outcome.stdout,
                    outcome.stderr,
                    _encode(outcome.manifest),
                    now,
                    task_id,
                    lease_id,
                ),
            )
            row = cur.fetchone()
            if row is None:
                return False
            self._event(row[0], task_id, outcome.status, outcome.exit_code, now)
        return True

    def extend(
        self, worker_id: str, lease_ids: Sequence[str], now: float, expires: float
    ) -> list[str]:
        stale = []
        with self._tx():
            for lease_id in lease_ids:
                cur = self._db.execute(
                    "UPDATE tasks SET lease_expires = ? WHERE lease_id = ? AND worker_id = ?"
                    " AND status = 'running'",
                    (expires, lease_id, worker_id),
                )
                if cur.rowcount == 0:
                    stale.append(lease_id)
        return stale

    def expire(self, now: float) -> list[Stopped]:
        out = []
        with self._tx():
            rows = self._db.execute(
                "SELECT id, job_id, worker_id, lease_id, attempts, max_attempts FROM tasks"
                " WHERE status = 'running' AND lease_expires <= ?",
                (now,),
            ).fetchall()
            for task_id, job_id, worker_id, lease_id, attempts, max_attempts in rows:
                if attempts >= max_attempts:
                    status, error = "failed", f"worker lost on all {attempts} attempts"
                else:
                    status, error = "queued", f"worker {worker_id} lost; requeued"
                self._db.execute(
                    "UPDATE tasks SET status = ?, error = ?, lease_id = NULL,"
                    " lease_expires = NULL, worker_id = CASE WHEN ? = 'queued' THEN NULL"
                    " ELSE worker_id END, finished = CASE WHEN ? = 'failed' THEN ? END"
                    " WHERE id = ?",
                    (status, error, status, status, now, task_id),
                )
                self._event(job_id, task_id, status, None, now)
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
        out = []
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
                self._event(row[0], task_id, "killed", None, now)
                if row[2] is not None:
                    out.append(Stopped(task_id, row[1], row[2]))
        return out

    # workers
    def register_worker(
        self, worker_id: str, name: str, slots: int, caps: dict[str, object], now: float
    ) -> None:
        self._db.execute(
            "INSERT INTO workers (id, name, slots, status, capabilities, registered,"
            " last_heartbeat) VALUES (?,?,?,'online',?,?,?)",
            (worker_id, name, slots, _encode(caps), now, now),
        )

    def touch_worker(
        self, worker_id: str, now: float, status: str, caps: dict[str, object] | None
    ) -> None:
        if caps:
            cur = self._db.execute(
                "UPDATE workers SET last_heartbeat = ?, status = ?, capabilities = ? WHERE id = ?",
                (now, status, _encode(caps), worker_id),
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
            "UPDATE workers SET status = 'lost' WHERE status IN ('online', 'draining')"
            " AND last_heartbeat < ? RETURNING id",
            (before,),
        ).fetchall()
        return [r[0] for r in rows]

    def _worker(self, row: tuple[Any, ...]) -> Worker:
        used = self._db.execute(
            "SELECT COUNT(*) FROM tasks WHERE worker_id = ? AND status = 'running'", (row[0],)
        ).fetchone()[0]
        return Worker(
            id=row[0],
            name=row[1],
            slots=row[2],
            slots_used=used,
            status=row[3],
            capabilities=_caps_decoder.decode(row[4]),
            registered=row[5],
            last_heartbeat=row[6],
        )

    def get_worker(self, worker_id: str) -> Worker:
        row = self._db.execute(
            "SELECT id, name, slots, status, capabilities, registered, last_heartbeat"
            " FROM workers WHERE id = ?",
            (worker_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"no worker {worker_id}")
        return self._worker(row)

    def list_workers(self) -> list[Worker]:
        rows = self._db.execute(
            "SELECT id, name, slots, status, capabilities, registered, last_heartbeat"
            " FROM workers ORDER BY status != 'online', registered"
        ).fetchall()
        return [self._worker(r) for r in rows]

    # events
    def events(self, job_id: str, after: int, limit: int) -> list[Event]:
        rows = self._db.execute(
            "SELECT seq, job_id, task_id, status, exit_code, time FROM events"
            " WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (job_id, after, limit),
        )
        return [Event(*r) for r in rows.fetchall()]


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


def _task(row: tuple[Any, ...]) -> Task:
    spec = _spec_decoder.decode(row[4])
    return Task(
        id=row[0],
        job_id=row[1],
        seq=row[2],
        status=row[3],
        name=spec.name,
        argv=spec.argv,
        env=spec.env,
        inputs=spec.inputs,
        outputs=spec.outputs,
        requires=spec.requires,
        limits=spec.limits,
        shell=spec.shell,
        attempts=row[5],
        max_attempts=row[6],
        worker_id=row[7],
        exit_code=row[8],
        error=row[9],
        stdout=row[10],
        stderr=row[11],
        manifest=_manifest_decoder.decode(row[12]) if row[12] else {},
        created=row[13],
        started=row[14],
        finished=row[15],
    )
