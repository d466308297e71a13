"""PostgreSQL backend: one autocommit connection, explicit transactions, same rows as SQLite.

Leasing locks the queued rows it takes with FOR UPDATE SKIP LOCKED, so several coordinators
sharing one database never hand out the same task twice. (Event sequence numbers come from a
BIGSERIAL; with more than one writer a reader can briefly see a later seq before an earlier one
commits. One coordinator, one connection, as service.py runs it, never interleaves.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    import psycopg

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, owner TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL, total INTEGER NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, job_id TEXT NOT NULL, seq INTEGER NOT NULL, status TEXT NOT NULL,
    spec BYTEA NOT NULL, requires TEXT COLLATE "C" NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL, worker_id TEXT, lease_id TEXT,
    lease_expires DOUBLE PRECISION, exit_code INTEGER, error TEXT, stdout TEXT, stderr TEXT,
    manifest BYTEA, created DOUBLE PRECISION NOT NULL, started DOUBLE PRECISION,
    finished DOUBLE PRECISION
)""",
    "CREATE INDEX IF NOT EXISTS tasks_job ON tasks(job_id, seq)",
    "CREATE INDEX IF NOT EXISTS tasks_job_status ON tasks(job_id, status)",
    "CREATE INDEX IF NOT EXISTS tasks_queue ON tasks(requires, created, seq)"
    " WHERE status = 'queued'",
    "CREATE INDEX IF NOT EXISTS tasks_running ON tasks(lease_expires) WHERE status = 'running'",
    "CREATE INDEX IF NOT EXISTS tasks_worker ON tasks(worker_id) WHERE status = 'running'",
    """CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, slots INTEGER NOT NULL, status TEXT NOT NULL,
    capabilities BYTEA NOT NULL, registered DOUBLE PRECISION NOT NULL,
    last_heartbeat DOUBLE PRECISION NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS events (
    seq BIGSERIAL PRIMARY KEY, job_id TEXT NOT NULL, task_id TEXT NOT NULL,
    status TEXT NOT NULL, exit_code INTEGER, time DOUBLE PRECISION NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS events_job ON events(job_id, seq)",
)

SECURITY_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, owner TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE, created DOUBLE PRECISION NOT NULL,
    expires DOUBLE PRECISION, revoked DOUBLE PRECISION, job_id TEXT
)""",
    "CREATE TABLE IF NOT EXISTS worker_owners (worker_id TEXT PRIMARY KEY, owner TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS blob_owners (
    owner TEXT NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (owner, sha256)
)""",
    """CREATE TABLE IF NOT EXISTS audit (
    seq BIGSERIAL PRIMARY KEY, time DOUBLE PRECISION NOT NULL, actor TEXT NOT NULL,
    token_id TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL
)""",
)

_FINISH = FINISH.format(p="%s")
_EVENT = EVENT_INSERT.format(p="%s,%s,%s,%s,%s")
_TOUCH = LEASE_TOUCH.format(p="%s")
# Several leases, or several results, in one statement: the rows come as parallel arrays.
_LEASE_MANY = (
    "UPDATE tasks AS t SET status = 'running', worker_id = %s, lease_id = r.lease_id,"
    " lease_expires = %s, attempts = t.attempts + 1, started = %s, blocked = 0"
    " FROM unnest(%s::text[], %s::text[]) AS r(id, lease_id) WHERE t.id = r.id"
)
_FINISH_MANY = (
    "UPDATE tasks AS t SET status = r.status, exit_code = r.exit_code, error = r.error,"
    " stdout = r.stdout, stderr = r.stderr, manifest = r.manifest, finished = r.finished,"
    " not_before = r.not_before, lease_id = NULL, lease_expires = NULL,"
    " worker_id = CASE WHEN r.status = 'queued' THEN NULL ELSE t.worker_id END"
    " FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[], %s::text[], %s::text[],"
    " %s::text[], %s::bytea[], %s::float8[], %s::float8[])"
    " AS r(id, lease_id, status, exit_code, error, stdout, stderr, manifest, finished,"
    " not_before)"
    " WHERE t.id = r.id AND t.lease_id = r.lease_id AND t.worker_id = %s"
    " AND t.status = 'running' RETURNING t.id, t.job_id"
)
# Serialises schema creation when several coordinators start at once on an empty database.
_SCHEMA_LOCK = 0x636F7272616C  # "corral"


class PostgresStore(AllowlistSQL, DependencySQL, IdentitySQL, Store):
    """Durable state in a PostgreSQL database, optionally in its own schema."""

    placeholder = "%s"

    def __init__(self, dsn: str, schema: str | None = None) -> None:
        try:
            import psycopg  # noqa: F401  (fail here, with the hint, not at first use)
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                "the PostgreSQL store needs psycopg 3: pip install 'corral[postgres]'"
            ) from e
        self._dsn = dsn
        self._schema = schema
        self._conn = self._connect()
        with self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in SCHEMA + SECURITY_SCHEMA:
                self._conn.execute(statement)
            self._create_allowlist("DOUBLE PRECISION")
            for name, kind in ADDED_TASK_COLUMNS:  # a database from an earlier version
                kind = kind.format(real="DOUBLE PRECISION")
                self._conn.execute(f"ALTER TABLE tasks ADD COLUMN IF NOT EXISTS {name} {kind}")
            self._conn.execute(RETRY_INDEX)
            self._create_deps()

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        import psycopg
        from psycopg import sql

        conn = psycopg.connect(self._dsn, autocommit=True)
        if self._schema is not None:
            name = sql.Identifier(self._schema)
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                found = conn.execute(
                    "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self._schema,)
                ).fetchone()
                if found is None:
                    conn.execute(sql.SQL("CREATE SCHEMA {}").format(name))
            conn.execute(sql.SQL("SET search_path TO {}").format(name))
        return conn

    @property
    def _db(self) -> psycopg.Connection[tuple[Any, ...]]:
        # A dropped connection (database restart, network cut) fails the call it broke; the
        # next call reconnects rather than failing forever.
        if self._conn.broken:
            self._conn.close()
            self._conn = self._connect()
        return self._conn

    def close(self) -> None:
        self._conn.close()

    def atomic(self) -> AbstractContextManager[Any]:
        # each method's own db.transaction() nests inside as a savepoint
        return self._db.transaction()

    def _event(self, job_id: str, task_id: str, status: str, code: int | None, now: float) -> None:
        self._db.execute(_EVENT, (job_id, task_id, status, code, now))

    def _events(self, rows: Sequence[tuple[str, str, str, int | None, float]]) -> None:
        """Several (job, task, status, exit code, time) events, in order, in one round trip."""
        with self._db.cursor() as cur:
            cur.executemany(_EVENT, rows)

    # jobs and tasks
    def create_job(
        self, job_id: str, name: str, owner: str, now: float, tasks: Sequence[NewTask]
    ) -> None:
        db = self._db
        with db.transaction(), db.cursor() as cur:
            cur.execute(
                "INSERT INTO jobs (id, name, owner, created, total) VALUES (%s,%s,%s,%s,%s)",
                (job_id, name, owner, now, len(tasks)),
            )
            _insert_tasks(cur, job_id, now, tasks)
            self._hold_new(now, tasks)

    def _jobs(self, rows: list[tuple[Any, ...]]) -> list[Job]:
        # All the jobs' counts in one round trip.
        if not rows:
            return []
        per_job: dict[str, list[tuple[str, int]]] = {r[0]: [] for r in rows}
        counted = self._db.execute(
            "SELECT job_id, status, COUNT(*) FROM tasks WHERE job_id = ANY(%s)"
            " GROUP BY job_id, status",
            (list(per_job),),
        )
        for job_id, status, n in counted:
            per_job[job_id].append((status, n))
        return [job_from_row(r, job_counts(per_job[r[0]])) for r in rows]

    def get_job(self, job_id: str) -> Job:
        row = self._db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = %s", (job_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return self._jobs([row])[0]

    def list_jobs(self, limit: int, owner: str | None = None) -> list[Job]:
        sql = f"SELECT {JOB_COLUMNS} FROM jobs"
        args: tuple[Any, ...] = ()
        if owner is not None:
            sql, args = sql + " WHERE owner = %s", (owner,)
        rows = self._db.execute(sql + " ORDER BY created DESC LIMIT %s", (*args, limit))
        return self._jobs(rows.fetchall())

    def get_task(self, task_id: str) -> Task:
        row = self._db.execute(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = %s", (task_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no task {task_id}")
        return task_from_row(row)

    def get_tasks(self, task_ids: Sequence[str]) -> dict[str, Task]:
        if not task_ids:
            return {}
        rows = self._db.execute(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ANY(%s)", (list(set(task_ids)),)
        )
        return {r[0]: task_from_row(r) for r in rows.fetchall()}

    def job_owner(self, job_id: str) -> str:
        row = self._db.execute("SELECT owner FROM jobs WHERE id = %s", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return str(row[0])

    def job_finished(self, job_id: str) -> bool:
        row = self._db.execute(
            "SELECT (SELECT 1 FROM tasks WHERE job_id = %s AND status IN ('queued', 'running')"
            " LIMIT 1) FROM jobs WHERE id = %s",
            (job_id, job_id),
        ).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return row[0] is None

    def list_tasks(
        self, job_id: str, offset: int, limit: int, status: str | None = None
    ) -> list[Task]:
        where, args = "job_id = %s", [job_id]
        if status is not None:
            where, args = where + " AND status = %s", [job_id, status]
        rows = self._db.execute(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE {where} ORDER BY seq LIMIT %s OFFSET %s",
            (*args, limit, offset),
        )
        return [task_from_row(r) for r in rows.fetchall()]

    def job_task_ids(self, job_id: str, only_live: bool) -> list[str]:
        sql = "SELECT id FROM tasks WHERE job_id = %s"
        if only_live:
            sql += " AND status IN ('queued', 'running')"
        return [r[0] for r in self._db.execute(sql + " ORDER BY seq", (job_id,))]

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
        only_job = " AND job_id = %s" if job_id is not None else ""
        decode = spec_decoder.decode
        db = self._db
        with db.transaction():
            candidates = []
            for key in fitting_classes(self._queued_classes(), fits):
                cost = class_slots(key)
                if cost > capacity:
                    continue
                # SKIP LOCKED: rows another coordinator is leasing right now are passed over,
                # and rows it has already leased no longer match status = 'queued'.
                rows = db.execute(
                    "SELECT id, job_id, spec, attempts, created, seq FROM tasks"
                    " WHERE status = 'queued' AND requires = %s AND waiting = 0"
                    " AND (not_before IS NULL OR not_before <= %s)"
                    + only_job
                    + " ORDER BY created, seq LIMIT %s"
                    " FOR UPDATE SKIP LOCKED",
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
                ids, leases = [x.task_id for x in out], [x.lease_id for x in out]
                db.execute(_LEASE_MANY, (worker_id, expires, now, ids, leases))
                self._events([(x.job_id, x.task_id, "running", None, now) for x in out])
                db.execute(_TOUCH, (now, worker_id))
        return out

    def queued_requirements(self) -> list[dict[str, str]]:
        return [class_requires(key) for key in self._queued_classes()]

    def release_due(self, now: float) -> int:
        cur = self._db.execute(
            "UPDATE tasks SET not_before = NULL WHERE status = 'queued' AND not_before <= %s",
            (now,),
        )
        return cur.rowcount

    def next_not_before(self) -> float | None:
        row = self._db.execute(
            "SELECT MIN(not_before) FROM tasks WHERE status = 'queued' AND not_before IS NOT NULL"
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def _queued_classes(self) -> list[str]:
        # PostgreSQL's DISTINCT would read every queued row; QUEUED_CLASSES seeks once per
        # class. (requires is COLLATE "C": byte order, as SQLite's.)
        return [r[0] for r in self._db.execute(QUEUED_CLASSES).fetchall()]

    def finish(self, task_id: str, lease_id: str, outcome: Outcome, now: float) -> bool:
        db = self._db
        with db.transaction():
            row = db.execute(
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
        db = self._db
        with db.transaction():
            for run in unique_runs(items):  # a task twice in a batch: later runs see the first
                found = dict(db.execute(_FINISH_MANY, _finish_columns(run, now, worker_id)))
                for task_id, _lease, o in run:
                    out.append(task_id in found)
                    if task_id in found:
                        events.append((found[task_id], task_id, o.status, o.exit_code, now))
            if events:
                self._events(events)
                self._settle_many([(e[1], e[2]) for e in events], now)
        return out

    def release(self, task_id: str, lease_id: str, now: float) -> bool:
        db = self._db
        with db.transaction():
            row = db.execute(
                "UPDATE tasks SET status = 'queued', attempts = GREATEST(attempts - 1, 0),"
                " lease_id = NULL, lease_expires = NULL, worker_id = NULL, started = NULL,"
                " error = %s WHERE id = %s AND lease_id = %s AND status = 'running'"
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
        rows = self._db.execute(
            "UPDATE tasks SET lease_expires = %s WHERE lease_id = ANY(%s) AND worker_id = %s"
            " AND status = 'running' RETURNING lease_id",
            (expires, list(lease_ids), worker_id),
        ).fetchall()
        live = {r[0] for r in rows}
        return [lease_id for lease_id in lease_ids if lease_id not in live]

    def expire(self, now: float) -> list[Stopped]:
        out = []
        db = self._db
        with db.transaction():
            rows = db.execute(
                "SELECT id, job_id, worker_id, lease_id, attempts, max_attempts FROM tasks"
                " WHERE status = 'running' AND lease_expires <= %s FOR UPDATE SKIP LOCKED",
                (now,),
            ).fetchall()
            for task_id, job_id, worker_id, lease_id, attempts, max_attempts in rows:
                status, error = expired_to(worker_id, attempts, max_attempts)
                if status == "queued":
                    db.execute(
                        "UPDATE tasks SET status = 'queued', error = %s, lease_id = NULL,"
                        " lease_expires = NULL, worker_id = NULL, finished = NULL WHERE id = %s",
                        (error, task_id),
                    )
                else:
                    db.execute(
                        "UPDATE tasks SET status = %s, error = %s, lease_id = NULL,"
                        " lease_expires = NULL, finished = %s WHERE id = %s",
                        (status, error, now, task_id),
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
        # GREATEST skips NULLs where SQLite's MAX returns NULL: the IS NOT NULL keeps them equal.
        self._db.execute(
            "UPDATE tasks SET lease_expires = GREATEST(lease_expires, %s)"
            " WHERE status = 'running' AND lease_expires IS NOT NULL",
            (until,),
        )

    def kill(self, task_ids: Sequence[str], now: float) -> list[Stopped]:
        if not task_ids:
            return []
        out = []
        db = self._db
        with db.transaction():
            rows = db.execute(
                "UPDATE tasks SET status = 'killed', finished = %s, error = 'killed',"
                " lease_expires = NULL WHERE id = ANY(%s) AND status IN ('queued', 'running')"
                " RETURNING id, job_id, worker_id, lease_id",
                (now, list(task_ids)),
            ).fetchall()
            # One statement for all, then events and answers in the order asked, as if one
            # by one.
            order = {task_id: i for i, task_id in reversed(list(enumerate(task_ids)))}
            rows.sort(key=lambda r: order[r[0]])
            if not rows:
                return []
            with db.cursor() as cur:
                cur.executemany(
                    "INSERT INTO events (job_id, task_id, status, exit_code, time)"
                    " VALUES (%s,%s,'killed',NULL,%s)",
                    [(job_id, task_id, now) for task_id, job_id, _w, _l in rows],
                )
            for task_id, _job, worker_id, lease_id in rows:
                if lease_id is not None:
                    out.append(Stopped(task_id, worker_id, lease_id))
            for task_id, *_ in rows:  # after all kills: a job kill leaves its tasks killed
                self._settle_dependents(task_id, "killed", now)
        return out

    # workers
    def register_worker(
        self, worker_id: str, name: str, slots: int, caps: dict[str, object], now: float
    ) -> None:
        self._db.execute(
            "INSERT INTO workers (id, name, slots, status, capabilities, registered,"
            " last_heartbeat) VALUES (%s,%s,%s,'online',%s,%s,%s)",
            (worker_id, name, slots, encode(caps), now, now),
        )

    def touch_worker(
        self, worker_id: str, now: float, status: str, caps: dict[str, object] | None
    ) -> None:
        if caps:
            cur = self._db.execute(
                "UPDATE workers SET last_heartbeat = %s, status = %s, capabilities = %s"
                " WHERE id = %s",
                (now, status, encode(caps), worker_id),
            )
        else:
            cur = self._db.execute(
                "UPDATE workers SET last_heartbeat = %s, status = %s WHERE id = %s",
                (now, status, worker_id),
            )
        if cur.rowcount == 0:
            raise NotFound(f"no worker {worker_id}")

    def set_worker_status(self, worker_id: str, status: str) -> None:
        self._db.execute("UPDATE workers SET status = %s WHERE id = %s", (status, worker_id))

    def mark_lost_workers(self, before: float) -> list[str]:
        rows = self._db.execute(
            "UPDATE workers SET status = 'lost' WHERE status IN ('online', 'draining',"
            " 'idle-wait', 'suspended')"
            " AND last_heartbeat < %s RETURNING id",
            (before,),
        ).fetchall()
        return [r[0] for r in rows]

    def get_worker(self, worker_id: str) -> Worker:
        row = self._db.execute(f"{WORKER_SELECT} WHERE w.id = %s", (worker_id,)).fetchone()
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
            " WHERE job_id = %s AND seq > %s ORDER BY seq LIMIT %s",
            (job_id, after, limit),
        )
        return [Event(*r) for r in rows.fetchall()]

    # identities, ownership and audit
    def add_tasks(self, job_id: str, now: float, tasks: Sequence[NewTask]) -> None:
        db = self._db
        with db.transaction(), db.cursor() as cur:
            cur.execute("UPDATE jobs SET total = total + %s WHERE id = %s", (len(tasks), job_id))
            if cur.rowcount == 0:
                raise NotFound(f"no job {job_id}")
            _insert_tasks(cur, job_id, now, tasks)
            self._hold_new(now, tasks)


def _finish_columns(
    run: Sequence[tuple[str, str, Outcome]], now: float, worker_id: str
) -> tuple[Any, ...]:
    """_FINISH_MANY's arrays (one per column) for a run of results, then the worker."""
    rows = [(task_id, lease_id, *finish_args(o, now)[:8]) for task_id, lease_id, o in run]
    return (*(list(column) for column in zip(*rows, strict=True)), worker_id)


def _insert_tasks(
    cur: psycopg.Cursor[tuple[Any, ...]], job_id: str, now: float, tasks: Sequence[NewTask]
) -> None:
    cur.executemany(
        "INSERT INTO tasks (id, job_id, seq, status, spec, requires, max_attempts,"
        " created, cost) VALUES (%s,%s,%s,'queued',%s,%s,%s,%s,%s)",
        [
            (
                t.id,
                job_id,
                t.seq,
                encode(t.spec),
                requires_key(t.spec),
                t.spec.max_attempts,
                now,
                slots_needed(t.spec.requires),
            )
            for t in tasks
        ],
    )
