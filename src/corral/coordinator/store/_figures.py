"""What `GET /metrics` reads from the store at scrape time (metrics.py), and the autoscaler
each second (autoscaler.py), for SQLStore.

One statement per figure, the same text for both backends. The counts of live tasks use the
partial indexes on status, so a scrape costs what is queued and running, not the history.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._sqlbase import SQLBase

__all__ = ["FiguresSQL"]

_LIVE_TASKS = (
    "SELECT t.requires, j.owner, COUNT(*) FROM tasks t JOIN jobs j ON j.id = t.job_id"
    " WHERE t.status = ? GROUP BY t.requires, j.owner"
)
# a running task takes its cost unless it gave its slots back while blocked; a backup
# attempt takes its cost again on its own worker (as _sqlbase's worker select counts them)
_SLOTS_BUSY = (
    "SELECT (SELECT COALESCE(SUM(cost * (1 - blocked)), 0) FROM tasks WHERE status = 'running')"
    " + (SELECT COALESCE(SUM(t.cost), 0) FROM backups b JOIN tasks t ON t.id = b.task_id)"
)
# the autoscaler's queue (autoscaler.py): ready tasks by class and job, and what a job's
# finished tasks took; `waiting` > 0 is a task held on its dependencies, no worker can run it
_READY_BY_JOB = (
    "SELECT requires, job_id, COUNT(*) FROM tasks WHERE status = 'queued' AND waiting = 0"
    " GROUP BY requires, job_id"
)
_MEAN_RUN = (
    "SELECT job_id, AVG(finished - started) FROM tasks WHERE job_id {ids}"
    " AND status = 'succeeded' AND started IS NOT NULL GROUP BY job_id"
)
_SLOTS_TOTAL = "SELECT COALESCE(SUM(slots), 0) FROM workers WHERE status IN ('online', 'draining')"


class FiguresSQL(SQLBase):
    """A part of SQLStore."""

    def live_task_counts(self, status: str) -> list[tuple[str, str, int]]:
        """(requirement class, owner, count) of the tasks in `status` (queued or running)."""
        rows = self._db.execute(self._q(_LIVE_TASKS), (status,)).fetchall()
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]

    def worker_counts(self) -> dict[str, int]:
        """Workers by status (online, draining, lost, gone)."""
        rows = self._db.execute(self._q("SELECT status, COUNT(*) FROM workers GROUP BY status"))
        return {str(r[0]): int(r[1]) for r in rows.fetchall()}

    def slot_counts(self) -> tuple[int, int]:
        """(busy, total) slots of the workers that take work."""
        busy = self._db.execute(self._q(_SLOTS_BUSY)).fetchone()[0]
        total = self._db.execute(self._q(_SLOTS_TOTAL)).fetchone()[0]
        return int(busy), int(total)

    def ready_by_job(self) -> list[tuple[str, str, int]]:
        """(requirement class, job, count) of the queued tasks not waiting on dependencies."""
        rows = self._db.execute(self._q(_READY_BY_JOB)).fetchall()
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]

    def mean_run_seconds(self, job_ids: Sequence[str]) -> dict[str, float]:
        """Each job's mean run time of its succeeded tasks (jobs with none left out)."""
        rows = self._run_listed(_MEAN_RUN, list(job_ids))
        return {str(r[0]): float(r[1]) for r in rows if r[1] is not None}

    def blob_bytes(self) -> int:
        """The bytes of the blobs kept in the database (blobs/database.py)."""
        row = self._db.execute(self._q("SELECT COALESCE(SUM(size), 0) FROM blobs")).fetchone()
        return int(row[0])
