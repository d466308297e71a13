"""What `GET /metrics` reads from the store at scrape time (metrics.py), for SQLStore.

One statement per figure, the same text for both backends. The counts of live tasks use the
partial indexes on status, so a scrape costs what is queued and running, not the history.
"""

from __future__ import annotations

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

    def blob_bytes(self) -> int:
        """The bytes of the blobs kept in the database (blobs/database.py)."""
        row = self._db.execute(self._q("SELECT COALESCE(SUM(size), 0) FROM blobs")).fetchone()
        return int(row[0])
