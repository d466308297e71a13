"""What the dashboard reads (and `retry_failed`, which it shares with the API), for SQLStore.

Every read here costs what one page shows, not what the queue holds: jobs by offset (a farm
has few), a job's tasks by keyset on `seq` (the `tasks_job` index, so page 1,000 of a job of
100,000 tasks is as quick as page 1), the timeline's latest spans, and the sparkline's events
from a bounded tail of the events table.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

from ...protocol import AuditEntry, Event, Job, Task
from ._rows import audit_from_row, task_from_row
from ._sqlbase import SQLBase
from .base import TaskSpan

__all__ = ["BrowseSQL", "EVENTS_TAIL", "JOB_STATUS_WHERE"]

_HAS = "EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = jobs.id AND {})"
_LIVE = _HAS.format("t.status IN ('queued', 'running')")
_FAILED = _HAS.format("t.status = 'failed'")
_KILLED = _HAS.format("t.status = 'killed'")
_NOT_QUEUED = _HAS.format("t.status <> 'queued'")
#: a job's status (base.job_status) as a condition on its row, one per status
JOB_STATUS_WHERE = {
    "queued": f"{_LIVE} AND NOT {_NOT_QUEUED}",
    "running": f"{_LIVE} AND {_NOT_QUEUED}",
    "failed": f"NOT {_LIVE} AND {_FAILED}",
    "killed": f"NOT {_LIVE} AND NOT {_FAILED} AND {_KILLED}",
    "succeeded": f"NOT {_LIVE} AND NOT {_FAILED} AND NOT {_KILLED}",
}
#: the sparkline reads at most this many of the newest events (a primary-key range)
EVENTS_TAIL = 100_000

_DEPS_OF = "FROM deps d JOIN tasks x ON x.id = d.dep_id WHERE d.task_id = tasks.id"
# A failed task (and, when asked, a killed one: the third parameter) goes back to the queue,
# held again on its dependencies that have yet to succeed; one whose dependency can no longer
# succeed (killed or failed, and not requeued by this same call) stays as it is.
_REQUEUE_FAILED = (
    "UPDATE tasks SET status = 'queued', exit_code = NULL, error = NULL, finished = NULL,"
    " not_before = NULL, worker_id = NULL,"
    f" waiting = (SELECT COUNT(*) {_DEPS_OF} AND x.status <> 'succeeded')"
    " WHERE job_id = ? AND (status = 'failed' OR (status = 'killed' AND ? = 1))"
    f" AND NOT EXISTS (SELECT 1 {_DEPS_OF} AND x.status IN ('killed', 'failed')"
    " AND NOT (x.job_id = ? AND (x.status = 'failed' OR ? = 1)))"
    " RETURNING id, seq"
)


class BrowseSQL(SQLBase):
    """A part of SQLStore."""

    def jobs_page(
        self, owner: str | None, status: str | None, offset: int, limit: int
    ) -> list[Job]:
        """Newest jobs first, optionally one owner's and of one status, a page at a time."""
        where, args = [], []
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if status is not None:
            where.append(JOB_STATUS_WHERE[status])
        sql = "SELECT {job_columns} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created DESC, id LIMIT ? OFFSET ?"
        rows = self._db.execute(self._q(sql), (*args, limit, offset)).fetchall()
        return self._jobs(rows)

    @abc.abstractmethod
    def _jobs(self, rows: Sequence[Sequence[Any]]) -> list[Job]:
        """Jobs from their rows, with their counts (SQLStore's, one query for all)."""

    def tasks_page(
        self,
        job_id: str,
        status: str | None,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[Task]:
        """A job's tasks in submission order, optionally of one status: the first `limit`
        with `seq` above `after`, or the last `limit` below `before`."""
        sql = "SELECT {task_columns} FROM tasks WHERE job_id = ?"
        args: list[Any] = [job_id]
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        backwards = before is not None
        if backwards:
            sql += " AND seq < ? ORDER BY seq DESC LIMIT ?"
            args += [before, limit]
        else:
            sql += " AND seq > ? ORDER BY seq LIMIT ?"
            args += [-1 if after is None else after, limit]
        rows = self._db.execute(self._q(sql), args).fetchall()
        tasks = [task_from_row(r) for r in rows]
        return tasks[::-1] if backwards else tasks

    def task_spans(self, job_id: str, limit: int) -> list[TaskSpan]:
        """The `limit` tasks of a job that started last, as spans, earliest start first."""
        rows = self._db.execute(
            self._q(
                "SELECT id, seq, status, worker_id, started, finished FROM tasks"
                " WHERE job_id = ? AND started IS NOT NULL ORDER BY started DESC LIMIT ?"
            ),
            (job_id, limit),
        ).fetchall()
        return [TaskSpan(*r) for r in reversed(rows)]

    def task_events(self, job_id: str, task_id: str) -> list[Event]:
        """One task's state changes, oldest first (its attempts: each `running` starts one)."""
        rows = self._db.execute(
            self._q(
                "SELECT seq, job_id, task_id, status, exit_code, time FROM events"
                " WHERE job_id = ? AND task_id = ? ORDER BY seq"
            ),
            (job_id, task_id),
        )
        return [Event(*r) for r in rows.fetchall()]

    def farm_counts(self) -> dict[str, int]:
        """Tasks queued and running on the whole farm (each count from its partial index)."""
        out = {}
        for status in ("queued", "running"):
            row = self._db.execute(
                self._q(f"SELECT COUNT(*) FROM tasks WHERE status = '{status}'")
            ).fetchone()
            out[status] = int(row[0])
        return out

    def finished_times(self, since: float) -> list[float]:
        """When tasks reached a final status since `since`, among the newest EVENTS_TAIL
        events."""
        rows = self._db.execute(
            self._q(
                "SELECT time FROM events WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM events)"
                " - ? AND time >= ? AND status IN ('succeeded', 'failed', 'killed')"
            ),
            (EVENTS_TAIL, since),
        )
        return [float(r[0]) for r in rows.fetchall()]

    def audit_newest(self, limit: int) -> list[AuditEntry]:
        """The newest `limit` audit entries, newest first."""
        rows = self._db.execute(
            self._q("SELECT {audit_columns} FROM audit ORDER BY seq DESC LIMIT ?"), (limit,)
        )
        return [audit_from_row(r) for r in rows.fetchall()]

    def requeue_failed(self, job_id: str, now: float, killed: bool = False) -> list[str]:
        """Put a job's failed (and killed) tasks back in the queue as new attempts; their ids."""
        with self._tx():
            args = (job_id, int(killed), job_id, int(killed))
            rows = self._db.execute(self._q(_REQUEUE_FAILED), args).fetchall()
            ids = [r[0] for r in sorted(rows, key=lambda r: r[1])]
            for task_id in ids:
                self._event(job_id, task_id, "queued", None, now)
        return ids
