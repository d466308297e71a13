"""Evictions asked of running tasks, for SQLStore (_sql.py); what they mean is stops.py's.

An eviction is one row per task: the attempt it is for (`lease_id`, on `worker_id`) and
whether the task ends killed once its worker gives it back (`kill --checkpoint`) or is
requeued (`drain --evict`). Its worker learns of it in heartbeat replies, SIGTERMs the task,
waits its grace period, saves the checkpoint and gives the task back (`release`, which reads
the row). A row counts only while its lease is the task's live one: a task that finished,
expired or was requeued meanwhile leaves a dead row, which the next eviction of the task
replaces and a kill or a release removes. A kill asked once stays asked: a later drain of
the same attempt does not turn it into a requeue.

The methods starting with `_` run inside a transaction the store has already opened.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._backups import BackupSQL
from .base import Stopped

__all__ = ["EvictionSQL"]

# The running tasks chosen (by id, or by worker) get a row; its answer names their workers.
_ASK = (
    "INSERT INTO evictions (task_id, lease_id, worker_id, kill, asked)"
    " SELECT id, lease_id, worker_id, ?, ? FROM tasks WHERE status = 'running'"
)
_UPSERT = (
    " ON CONFLICT (task_id) DO UPDATE SET kill = CASE WHEN evictions.lease_id ="
    " excluded.lease_id THEN {greatest}(evictions.kill, excluded.kill) ELSE excluded.kill END,"
    " lease_id = excluded.lease_id, worker_id = excluded.worker_id, asked = excluded.asked"
    " RETURNING task_id, worker_id, lease_id"
)
_ASK_TASKS = _ASK + " AND id {ids}" + _UPSERT
_ASK_WORKER = _ASK + " AND worker_id = ?" + _UPSERT
# Live rows only: the eviction's lease is still its running task's.
_LIVE = (
    " FROM evictions e JOIN tasks t ON t.id = e.task_id AND t.lease_id = e.lease_id"
    " WHERE t.status = 'running'"
)
_OF_WORKER = "SELECT e.lease_id" + _LIVE + " AND e.worker_id = ? ORDER BY e.asked, e.task_id"
_KILLING = "SELECT e.task_id, e.lease_id" + _LIVE + " AND e.kill = 1 AND e.task_id {ids}"
_FORGET = "DELETE FROM evictions WHERE task_id {ids}"


class EvictionSQL(BackupSQL):
    """A part of SQLStore."""

    def evict(self, task_ids: Sequence[str], kill: bool, now: float) -> list[Stopped]:
        """Ask for these tasks' running attempts to be evicted (the others are left as they
        are); those asked. With `kill`, their backup attempts are dropped (listed too)."""
        if not task_ids:
            return []
        with self._tx():
            rows = self._run_listed(_ASK_TASKS, list(task_ids), int(kill), now)
            dropped = self._drop_backups([r[0] for r in rows]) if kill and rows else []
        return [Stopped(*r) for r in rows] + dropped

    def evict_worker(self, worker_id: str, now: float) -> list[Stopped]:
        """Ask for every task running on a worker to be evicted and requeued (its backup
        attempts are dropped: their primaries run on); those asked."""
        with self._tx():
            rows = self._db.execute(self._q(_ASK_WORKER), (0, now, worker_id)).fetchall()
            self._drop_workers_backups([worker_id])
        return [Stopped(*r) for r in rows]

    def evictions(self, worker_id: str) -> list[str]:
        """The leases `worker_id` is asked to evict, oldest ask first."""
        return [r[0] for r in self._db.execute(self._q(_OF_WORKER), (worker_id,)).fetchall()]

    def _killing(self, task_ids: Sequence[str]) -> dict[str, str]:
        """Those of these tasks whose running attempt was asked to end in a kill: the lease
        of that attempt, by task id."""
        return {r[0]: r[1] for r in self._run_listed(_KILLING, list(task_ids))}

    def _forget_evictions(self, task_ids: Sequence[str]) -> None:
        self._run_listed(_FORGET, list(task_ids))
