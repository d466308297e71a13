"""SQLStore: every query of the store written once, for SQLite and PostgreSQL alike.

A backend (sqlite.py, postgres.py) brings a connection (`_db`), transactions (`_tx`) and its
dialect (dialect.py); SQLStore, with the parts it is made of (_allowlist.py, _backups.py,
_browse.py, _checkpoints.py, _deps.py, _evictions.py, _fairshare.py, _identity.py, _lookup.py,
_usage.py), holds the queries, as templates rendered once per dialect (_sqlbase.py says how),
and the schema is one description (_schema.py). The few things the backends really do
differently stay hooks there: where SQLite keeps long specs (`_specs`), how a connection is
opened, kept and checkpointed.

Rejected: an ORM or SQLAlchemy Core. The store is a few dozen statements tuned by hand
(partial indexes, a loose index scan, an index hint, batched writes on the lease path); a
query builder would hide the text being tuned, add a dependency, and compile per call.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from typing import Any

from ...protocol import Event, Job, Task, Worker, slots_needed
from ..fairshare import Candidate, choose, prefetch
from ..leases import expired_to
from ._allowlist import AllowlistSQL
from ._browse import BrowseSQL
from ._checkpoints import CheckpointSQL
from ._evictions import EvictionSQL
from ._fairshare import FairShareSQL
from ._figures import FiguresSQL
from ._identity import IdentitySQL
from ._lookup import LookupSQL
from ._rows import (
    class_requires,
    class_slots,
    encode,
    finish_args,
    fitting_classes,
    job_counts,
    job_from_row,
    new_lease_id,
    requires_key,
    spec_decoder,
    task_from_row,
    unique_runs,
    worker_from_row,
)
from ._shared import SharedSQL
from ._sqlbase import EVENT, FINISH
from ._usage import UsageSQL
from .base import Leased, NewTask, NotFound, Outcome, Stopped, Store

__all__ = ["SQLStore"]

# The distinct requirement classes with queued work, one index seek each (a loose index scan
# in one statement): the cost grows with the number of classes, not with queue depth.
# (PostgreSQL's DISTINCT would read every queued row.)
_QUEUED_CLASSES = (
    "WITH RECURSIVE c(r) AS ("
    " SELECT (SELECT requires FROM tasks WHERE status = 'queued' ORDER BY requires LIMIT 1)"
    " UNION ALL SELECT (SELECT requires FROM tasks WHERE status = 'queued' AND requires > c.r"
    " ORDER BY requires LIMIT 1) FROM c WHERE c.r IS NOT NULL"
    ") SELECT r FROM c WHERE r IS NOT NULL"
)
# Several leases in one statement; {rows}: (id, lease_id).
_LEASE_MANY = (
    "WITH r(id, lease_id) AS ({rows})"
    " UPDATE tasks SET status = 'running', worker_id = ?, lease_id = r.lease_id,"
    " lease_expires = ?, attempts = attempts + 1, started = ?, blocked = 0"
    " FROM r WHERE tasks.id = r.id"
)
_LEASE_TYPES = ("text", "text")
# A worker that takes tasks is seen: the lease stands for a heartbeat, in its transaction.
_LEASE_TOUCH = "UPDATE workers SET last_heartbeat = ?, status = 'online' WHERE id = ?"
# Several results in one statement: {rows} in finish_args' order, then the worker.
_FINISH_MANY = (
    "WITH r(id, lease_id, status, exit_code, error, stdout, stderr, manifest, finished,"
    " not_before, peak_memory, cpu_seconds) AS ({rows})"
    " UPDATE tasks SET status = r.status, exit_code = r.exit_code, error = r.error,"
    " stdout = r.stdout, stderr = r.stderr, manifest = r.manifest, finished = r.finished,"
    " not_before = r.not_before, peak_memory = r.peak_memory, cpu_seconds = r.cpu_seconds,"
    " lease_id = NULL, lease_expires = NULL,"
    " worker_id = CASE WHEN r.status = 'queued' THEN NULL ELSE tasks.worker_id END"
    " FROM r WHERE tasks.id = r.id AND tasks.lease_id = r.lease_id AND tasks.worker_id = ?"
    " AND tasks.status = 'running'"
    " RETURNING tasks.id, tasks.job_id, tasks.owner, tasks.cost, tasks.started"
)
_FINISH_TYPES = (
    *("text", "text", "text", "int", "text", "text", "text"),
    *("bytea", "float8", "float8", "int8", "float8"),
)


class SQLStore(
    AllowlistSQL,
    BrowseSQL,
    CheckpointSQL,
    EvictionSQL,
    FairShareSQL,
    FiguresSQL,
    IdentitySQL,
    LookupSQL,
    SharedSQL,
    UsageSQL,
    Store,
):
    """The Store over one SQL connection; a backend brings the connection and its dialect."""

    def atomic(self) -> AbstractContextManager[Any]:
        return self._tx()

    def _specs(self, tasks: Sequence[NewTask]) -> list[bytes]:
        """Each new task's spec as its row keeps it (SQLite keeps long ones apart)."""
        return [encode(t.spec) for t in tasks]

    def _events(self, rows: Sequence[tuple[str, str, str, int | None, float]]) -> None:
        """Several (job, task, status, exit code, time) events, in order, in one call."""
        self._many(EVENT, rows)

    # jobs and tasks
    def create_job(
        self,
        job_id: str,
        name: str,
        owner: str,
        now: float,
        tasks: Sequence[NewTask],
        speculative: bool = False,
        priority: int = 0,
    ) -> None:
        with self._tx():
            self._db.execute(
                self._q("INSERT INTO jobs ({job_columns}) VALUES (?,?,?,?,?,?,?)"),
                (job_id, name, owner, now, len(tasks), int(speculative), priority),
            )
            self._insert_tasks(job_id, owner, priority, now, tasks)
            self._hold_new(now, tasks)

    def add_tasks(self, job_id: str, now: float, tasks: Sequence[NewTask]) -> None:
        with self._tx():
            row = self._db.execute(
                self._q("UPDATE jobs SET total = total + ? WHERE id = ? RETURNING owner, priority"),
                (len(tasks), job_id),
            ).fetchone()
            if row is None:
                raise NotFound(f"no job {job_id}")
            self._insert_tasks(job_id, row[0], row[1], now, tasks)
            self._hold_new(now, tasks)

    def _insert_tasks(
        self, job_id: str, owner: str, priority: int, now: float, tasks: Sequence[NewTask]
    ) -> None:
        self._many(
            "INSERT INTO tasks (id, job_id, seq, status, spec, requires, max_attempts,"
            " created, cost, name, owner, priority) VALUES (?,?,?,'queued',?,?,?,?,?,?,?,?)",
            [
                (
                    t.id,
                    job_id,
                    t.seq,
                    spec,
                    requires_key(t.spec),
                    t.spec.max_attempts,
                    now,
                    slots_needed(t.spec.requires),
                    t.spec.name,
                    owner,
                    priority if t.spec.priority is None else t.spec.priority,
                )
                for t, spec in zip(tasks, self._specs(tasks), strict=True)
            ],
        )

    def _jobs(self, rows: Sequence[Sequence[Any]]) -> list[Job]:
        """Jobs from JOB_COLUMNS rows, all their counts from one query."""
        per_job: dict[str, list[tuple[str, int]]] = {r[0]: [] for r in rows}
        counted = self._run_listed(
            "SELECT job_id, status, COUNT(*) FROM tasks WHERE job_id {ids} GROUP BY job_id, status",
            list(per_job),
        )
        for job_id, status, n in counted:
            per_job[job_id].append((status, n))
        return [job_from_row(r, job_counts(per_job[r[0]])) for r in rows]

    def get_job(self, job_id: str) -> Job:
        row = self._db.execute(
            self._q("SELECT {job_columns} FROM jobs WHERE id = ?"), (job_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return self._jobs([row])[0]

    def list_jobs(self, limit: int, owner: str | None = None) -> list[Job]:
        args: tuple[Any, ...] = (limit,)
        sql = "SELECT {job_columns} FROM jobs ORDER BY created DESC LIMIT ?"
        if owner is not None:
            sql = "SELECT {job_columns} FROM jobs WHERE owner = ? ORDER BY created DESC LIMIT ?"
            args = (owner, limit)
        return self._jobs(self._db.execute(self._q(sql), args).fetchall())

    def job_owner(self, job_id: str) -> str:
        row = self._db.execute(self._q("SELECT owner FROM jobs WHERE id = ?"), (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return str(row[0])

    def live_lease(self, task_id: str, lease_id: str, now: float) -> tuple[str, str] | None:
        row = self._db.execute(
            self._q(
                "SELECT t.job_id, j.owner FROM tasks t JOIN jobs j ON j.id = t.job_id"
                " WHERE t.id = ? AND t.status = 'running' AND ((t.lease_id = ?"
                " AND t.lease_expires > ?) OR EXISTS (SELECT 1 FROM backups b"
                " WHERE b.task_id = t.id AND b.lease_id = ? AND b.lease_expires > ?))"
            ),
            (task_id, lease_id, now, lease_id, now),
        ).fetchone()
        return (str(row[0]), str(row[1])) if row else None

    def job_finished(self, job_id: str) -> bool:
        row = self._db.execute(
            self._q(
                "SELECT (SELECT 1 FROM tasks WHERE job_id = ? AND status IN ('queued', 'running')"
                " LIMIT 1) FROM jobs WHERE id = ?"
            ),
            (job_id, job_id),
        ).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return row[0] is None

    def get_task(self, task_id: str) -> Task:
        row = self._db.execute(
            self._q("SELECT {task_columns} FROM tasks WHERE id = ?"), (task_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no task {task_id}")
        return task_from_row(row)

    def get_tasks(self, task_ids: Sequence[str]) -> dict[str, Task]:
        rows = self._run_listed(
            "SELECT {task_columns} FROM tasks WHERE id {ids}", list(dict.fromkeys(task_ids))
        )
        return {r[0]: task_from_row(r) for r in rows}

    def list_tasks(
        self, job_id: str, offset: int, limit: int, status: str | None = None
    ) -> list[Task]:
        if status is None:
            sql = "SELECT {task_columns} FROM tasks WHERE job_id = ?"
            args: tuple[Any, ...] = (job_id, limit, offset)
        else:
            sql = "SELECT {task_columns} FROM tasks WHERE job_id = ? AND status = ?"
            args = (job_id, status, limit, offset)
        rows = self._db.execute(self._q(sql + " ORDER BY seq LIMIT ? OFFSET ?"), args)
        return [task_from_row(r) for r in rows.fetchall()]

    def job_task_ids(self, job_id: str, only_live: bool) -> list[str]:
        sql = "SELECT id FROM tasks WHERE job_id = ? ORDER BY seq"
        if only_live:
            sql = (
                "SELECT id FROM tasks WHERE job_id = ? AND status IN ('queued', 'running')"
                " ORDER BY seq"
            )
        return [r[0] for r in self._db.execute(self._q(sql), (job_id,)).fetchall()]

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
        peak_fits: Callable[[int | None], bool] = lambda _p: True,
    ) -> list[Leased]:
        if capacity <= 0:
            return []
        decode = spec_decoder.decode
        with self._tx():
            db = self._db
            candidates: list[Candidate[Any]] = []
            rivals: list[Candidate[Any]] = []  # prefetch: each owner's next, who may come first
            known: dict[str, Any] = {}  # owners' rows, as read with the queue
            for key in fitting_classes(self._queued_classes(), fits):
                cost = class_slots(key)
                if cost <= capacity:
                    limit = min(scan, capacity // cost)
                    for job in self.class_jobs(key, job_id, peak_fits):  # _usage.py
                        candidates += self._candidates(key, cost, job, limit, now, known)
                        if job_id is not None and candidates:
                            rivals += self._candidates(key, cost, None, 1, now, known)
            if job_id is None:
                chosen = choose(self._lease_facts(candidates, now, known), candidates, capacity)
            else:
                facts = self._lease_facts(candidates + rivals, now, known)
                chosen = prefetch(facts, candidates, rivals, capacity)
            out = [
                Leased(task_id, job, new_lease_id(), attempts + 1, expires, decode(spec), c, owner)
                for task_id, job, spec, attempts, c, _seq, _priority, owner in chosen
            ]
            if out:
                rows = [(x.task_id, x.lease_id) for x in out]
                update, args = self._batch(_LEASE_MANY, _LEASE_TYPES, rows)
                db.execute(update, (*args, worker_id, expires, now))
                self._events([(x.job_id, x.task_id, "running", None, now) for x in out])
                db.execute(self._q(_LEASE_TOUCH), (now, worker_id))
        return out

    def _queued_classes(self) -> list[str]:
        return [r[0] for r in self._db.execute(self._q(_QUEUED_CLASSES)).fetchall()]

    def queued_requirements(self) -> list[dict[str, str]]:
        return [class_requires(key) for key in self._queued_classes()]

    def release_due(self, now: float) -> int:
        sql = self._q(
            "UPDATE tasks{by_retry} SET not_before = NULL"
            " WHERE status = 'queued' AND not_before <= ?"
        )
        return int(self._db.execute(sql, (now,)).rowcount)

    def next_not_before(self) -> float | None:
        row = self._db.execute(
            self._q(
                "SELECT MIN(not_before) FROM tasks{by_retry}"
                " WHERE status = 'queued' AND not_before IS NOT NULL"
            )
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def finish(self, task_id: str, lease_id: str, outcome: Outcome, now: float) -> bool:
        with self._tx():
            if self._backups_of([task_id]):
                return self._finish_backed(task_id, lease_id, None, outcome, now)
            row = self._db.execute(
                self._q(FINISH), (*finish_args(outcome, now), task_id, lease_id)
            ).fetchone()
            if row is None:
                return False
            self._charge([row[1:]], now)
            self._event(row[0], task_id, outcome.status, outcome.exit_code, now)
            self._settle_dependents(task_id, outcome.status, now)
        return True

    def finish_many(
        self,
        worker_id: str,
        items: Sequence[tuple[str, str, Outcome]],
        now: float,
        backed: Collection[str] | None = None,
    ) -> list[bool]:
        if not items:
            return []
        flags: list[bool] = []
        events = []
        ended: list[tuple[str, int, float | None]] = []
        with self._tx():
            # tasks with a backup attempt are settled one by one (_backups.py), after the rest
            if backed is None:
                backed = self._backups_of([t for t, _, _ in items])
            plain = [(i, item) for i, item in enumerate(items) if item[0] not in backed]
            # a task twice in a batch: later runs see the first
            for run in unique_runs([item for _, item in plain]):
                rows = [(t, lease, *finish_args(o, now)[:10]) for t, lease, o in run]
                sql, args = self._batch(_FINISH_MANY, _FINISH_TYPES, rows)
                returned = self._db.execute(sql, (*args, worker_id)).fetchall()
                found = {r[0]: r[1] for r in returned}
                ended += [r[2:] for r in returned]
                for task_id, _lease, o in run:
                    flags.append(task_id in found)
                    if task_id in found:
                        events.append((found[task_id], task_id, o.status, o.exit_code, now))
            if events:
                self._events(events)
                self._charge(ended, now)
                self._settle_many([(e[1], e[2]) for e in events], now)
            out = {i: flags[n] for n, (i, _) in enumerate(plain)}
            for i, (task_id, lease_id, o) in enumerate(items):
                if task_id in backed:
                    out[i] = self._finish_backed(task_id, lease_id, worker_id, o, now)
        return [out[i] for i in range(len(items))]

    def release(self, task_id: str, lease_id: str, now: float, error: str) -> bool:
        with self._tx():
            if self._killing([task_id]).get(task_id) == lease_id:  # kill --checkpoint
                return bool(self.kill([task_id], now))
            backed = self._release_backed(task_id, lease_id)
            if backed is not None:
                return backed
            row = self._db.execute(
                self._q(
                    "UPDATE tasks SET status = 'queued', attempts = {greatest}(attempts - 1, 0),"
                    " lease_id = NULL, lease_expires = NULL, worker_id = NULL, started = NULL,"
                    " error = ? WHERE id = ? AND lease_id = ? AND status = 'running'"
                    " RETURNING job_id"
                ),
                (error, task_id, lease_id),
            ).fetchone()
            if row is None:
                return False
            self._forget_evictions([task_id])
            self._event(row[0], task_id, "queued", None, now)
        return True

    def extend(
        self, worker_id: str, lease_ids: Sequence[str], now: float, expires: float
    ) -> list[str]:
        rows = self._run_listed(
            "UPDATE tasks SET lease_expires = ? WHERE worker_id = ? AND status = 'running'"
            " AND lease_id {ids} RETURNING lease_id",
            lease_ids,
            expires,
            worker_id,
        )
        live = {r[0] for r in rows}
        stale = [lease_id for lease_id in lease_ids if lease_id not in live]
        if stale:  # perhaps backup attempts'
            live = self._extend_backups(worker_id, stale, expires)
            stale = [lease_id for lease_id in stale if lease_id not in live]
        return stale

    def expire(self, now: float) -> list[Stopped]:
        with self._tx():
            out = self._expire_backups(now)
            db = self._db
            rows = db.execute(
                self._q(
                    "SELECT id, job_id, worker_id, lease_id, attempts, max_attempts, owner, cost,"
                    " started FROM tasks WHERE status = 'running' AND lease_expires <= ?{lock}"
                ),
                (now,),
            ).fetchall()
            backed = self._backups_of([r[0] for r in rows]) if rows else {}
            killing = self._killing([r[0] for r in rows]) if rows else {}
            self._charge([r[6:] for r in rows if r[0] not in backed], now)
            for task_id, job_id, worker_id, lease_id, attempts, max_attempts, *_ in rows:
                out.append(Stopped(task_id, worker_id, lease_id))
                if task_id in backed:  # its backup attempt carries on, as the only one
                    self._promote(task_id, backed[task_id])
                    continue
                kill = killing.get(task_id) == lease_id
                status, error = expired_to(worker_id, attempts, max_attempts, kill)
                db.execute(
                    self._q(
                        "UPDATE tasks SET status = ?, error = ?, lease_id = NULL,"
                        " lease_expires = NULL, worker_id = CASE WHEN ? = 'queued' THEN NULL"
                        " ELSE worker_id END, finished = CASE WHEN ? <> 'queued' THEN ? END"
                        " WHERE id = ?"
                    ),
                    (status, error, status, status, now, task_id),
                )
                self._event(job_id, task_id, status, None, now)
                self._settle_dependents(task_id, status, now)
        return out

    def next_expiry(self) -> float | None:
        row = self._db.execute(
            self._q(
                "SELECT MIN(e) FROM (SELECT MIN(lease_expires) AS e FROM tasks"
                " WHERE status = 'running' UNION ALL SELECT MIN(lease_expires) FROM backups) m"
            )
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def grace_running(self, until: float) -> None:
        self._db.execute(
            self._q(
                "UPDATE tasks SET lease_expires = {greatest}(lease_expires, ?)"
                " WHERE status = 'running' AND lease_expires IS NOT NULL"
            ),
            (until,),
        )
        self._grace_backups(until)

    def kill(self, task_ids: Sequence[str], now: float) -> list[Stopped]:
        if not task_ids:
            return []
        with self._tx():
            rows = self._run_listed(
                "UPDATE tasks SET status = 'killed', finished = ?, error = 'killed',"
                " lease_expires = NULL WHERE id {ids} AND status IN ('queued', 'running')"
                " RETURNING id, job_id, worker_id, lease_id, owner, cost, started",
                task_ids,
                now,
            )
            # events and answers in the order asked, as if killed one by one
            order = {task_id: i for i, task_id in reversed(list(enumerate(task_ids)))}
            rows.sort(key=lambda r: order[r[0]])
            if not rows:
                return []
            self._events([(job_id, task_id, "killed", None, now) for task_id, job_id, *_ in rows])
            self._charge([r[4:] for r in rows if r[3] is not None], now)  # those running
            for task_id, *_ in rows:  # after all kills: a job kill leaves its tasks killed
                self._settle_dependents(task_id, "killed", now)
            backups = self._drop_backups([r[0] for r in rows])
            self._forget_evictions([r[0] for r in rows])
        running = [Stopped(t, w, lease) for t, _j, w, lease, *_ in rows if lease is not None]
        return running + backups

    # workers
    def register_worker(
        self, worker_id: str, name: str, slots: int, caps: dict[str, object], now: float
    ) -> None:
        with self._tx():
            # a restarted worker replaces its old row; one still online may be another
            # process that shares the name, and stays
            self._db.execute(
                self._q("DELETE FROM workers WHERE name = ? AND status IN ('lost', 'gone')"),
                (name,),
            )
            self._db.execute(
                self._q(
                    "INSERT INTO workers (id, name, slots, status, capabilities, registered,"
                    " last_heartbeat) VALUES (?,?,?,'online',?,?,?)"
                ),
                (worker_id, name, slots, encode(caps), now, now),
            )

    def touch_worker(
        self, worker_id: str, now: float, status: str, caps: dict[str, object] | None
    ) -> None:
        if caps:
            sql = "UPDATE workers SET last_heartbeat = ?, status = ?, capabilities = ? WHERE id = ?"
            args: tuple[Any, ...] = (now, status, encode(caps), worker_id)
        else:
            sql = "UPDATE workers SET last_heartbeat = ?, status = ? WHERE id = ?"
            args = (now, status, worker_id)
        if self._db.execute(self._q(sql), args).rowcount == 0:
            raise NotFound(f"no worker {worker_id}")

    def set_worker_status(self, worker_id: str, status: str) -> None:
        self._db.execute(self._q("UPDATE workers SET status = ? WHERE id = ?"), (status, worker_id))

    def mark_lost_workers(self, before: float) -> list[str]:
        with self._tx():
            rows = self._db.execute(
                self._q(
                    "UPDATE workers SET status = 'lost' WHERE status IN ('online', 'draining',"
                    " 'idle-wait', 'suspended') AND last_heartbeat < ? RETURNING id"
                ),
                (before,),
            ).fetchall()
            lost = [r[0] for r in rows]
            if lost:  # their backup attempts end here; their primaries run out through expiry
                self._drop_workers_backups(lost)
        return lost

    def get_worker(self, worker_id: str) -> Worker:
        row = self._db.execute(self._q("{worker_select} WHERE w.id = ?"), (worker_id,)).fetchone()
        if row is None:
            raise NotFound(f"no worker {worker_id}")
        return worker_from_row(row, row[-1])

    def list_workers(self) -> list[Worker]:
        rows = self._db.execute(
            self._q("{worker_select} ORDER BY w.status != 'online', w.registered")
        ).fetchall()
        return [worker_from_row(r, r[-1]) for r in rows]

    # events
    def events(self, job_id: str, after: int, limit: int) -> list[Event]:
        rows = self._db.execute(
            self._q(
                "SELECT seq, job_id, task_id, status, exit_code, time FROM events"
                " WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?"
            ),
            (job_id, after, limit),
        )
        return [Event(*r) for r in rows.fetchall()]
